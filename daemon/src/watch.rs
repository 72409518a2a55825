//! Reload on change: a debounced recursive watch on a folder plus a watch on its parent.
//!
//! The rules and plugins folders are watched this way. The parent watch notices the folder
//! being deleted, re-created or replaced (a new
//! folder, or a symbolic link that now points elsewhere). After each batch of events the worker
//! compares the folder's identity with the one it watches and re-arms the recursive watch when
//! they differ, then reloads.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
use notify_debouncer_full::notify::{self, EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tracing::{debug, info, warn};

type Debounced = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Identity of the folder a path resolves to: device and inode on Unix.
type FolderId = (u64, u64);

/// Something that reloads itself from a watched folder.
pub trait Reload: Send + Sync + 'static {
    /// Reloads after a change; failures are reported by the implementation.
    fn reload_after_change(&self);
}

/// The folder could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("failed to watch {what} folder '{}': {source}", path.display())]
pub struct WatchError {
    /// Kind of folder, such as `rules`, used in messages.
    pub what: &'static str,
    /// The folder that could not be watched.
    pub path: PathBuf,
    /// The watcher's error.
    #[source]
    pub source: notify::Error,
}

/// Handle of a running folder watcher. Dropping it stops watching and waits for an ongoing
/// reload to finish.
pub struct FolderWatcher {
    watcher: Option<Arc<Mutex<Debounced>>>,
    worker: Option<JoinHandle<()>>,
}

impl FolderWatcher {
    pub fn start(
        what: &'static str,
        dir: &Path,
        debounce_ms: u64,
        target: Weak<dyn Reload>,
    ) -> Result<FolderWatcher, WatchError> {
        let watch_error = |path: &Path, source| WatchError {
            what,
            path: path.to_owned(),
            source,
        };
        let dir = std::path::absolute(dir).map_err(|e| watch_error(dir, notify::Error::io(e)))?;
        let parent = dir
            .parent()
            .ok_or_else(|| watch_error(&dir, notify::Error::generic("the folder has no parent")))?
            .to_owned();

        let (sender, receiver) = mpsc::channel();
        let debounce = Duration::from_millis(debounce_ms);
        let mut watcher =
            new_debouncer(debounce, None, sender).map_err(|e| watch_error(&dir, e))?;
        watcher
            .watch(&parent, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(&parent, e))?;
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| watch_error(&dir, e))?;
        let armed = folder_id(&dir);

        let watcher = Arc::new(Mutex::new(watcher));
        let worker = Worker {
            target,
            what,
            watcher: Arc::downgrade(&watcher),
            dir: dir.clone(),
            armed,
        };
        let worker = thread::Builder::new()
            .name(format!("{what}-watch"))
            .spawn(move || worker.run(receiver))
            .map_err(|e| watch_error(&dir, notify::Error::io(e)))?;
        info!(dir = %dir.display(), debounce_ms, "watching {what} folder");
        Ok(FolderWatcher {
            watcher: Some(watcher),
            worker: Some(worker),
        })
    }
}

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        // Dropping the watcher closes the event channel once its thread stops, which ends the
        // worker's loop.
        self.watcher.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The thread that turns event batches into reloads.
struct Worker {
    target: Weak<dyn Reload>,
    what: &'static str,
    watcher: Weak<Mutex<Debounced>>,
    dir: PathBuf,
    /// Identity of the folder under the recursive watch, `None` while nothing is watched.
    armed: Option<FolderId>,
}

impl Worker {
    fn run(mut self, receiver: Receiver<DebounceEventResult>) {
        while let Ok(batch) = receiver.recv() {
            let mut relevant = self.is_relevant(batch);
            // Batches queued during the last reload are served by one reload.
            while let Ok(batch) = receiver.try_recv() {
                relevant |= self.is_relevant(batch);
            }
            if !relevant {
                continue;
            }

            let (Some(target), Some(watcher)) = (self.target.upgrade(), self.watcher.upgrade())
            else {
                break;
            };
            self.rearm(&watcher);
            drop(watcher);
            // A failed reload is logged and counted by `reload`; the next change retries.
            target.reload_after_change();
        }
        debug!(dir = %self.dir.display(), "{} watcher stopped", self.what);
    }

    /// Returns true when the batch touches the folder or failed, which could hide a change.
    fn is_relevant(&self, batch: DebounceEventResult) -> bool {
        match batch {
            Ok(events) => events.iter().any(|event| {
                changes_content(&event.kind) && event.paths.iter().any(|p| p.starts_with(&self.dir))
            }),
            Err(errors) => {
                for error in errors {
                    warn!(dir = %self.dir.display(), error = %error, "{} watcher error", self.what);
                }
                true
            }
        }
    }

    /// Watches the folder again when it was deleted, re-created or replaced since it was armed.
    fn rearm(&mut self, watcher: &Mutex<Debounced>) {
        let current = folder_id(&self.dir);
        if current.is_some() && current == self.armed {
            return;
        }
        // The watcher list stays usable even if a holder panicked.
        let mut watcher = watcher.lock().unwrap_or_else(|e| e.into_inner());
        // The old watch is usually gone with the old folder, so failure here is expected.
        let _ = watcher.unwatch(&self.dir);
        self.armed = None;
        if current.is_none() {
            // The folder is missing; the parent watch reports its return.
            return;
        }
        match watcher.watch(&self.dir, RecursiveMode::Recursive) {
            Ok(()) => {
                self.armed = current;
                info!(dir = %self.dir.display(), "{} folder replaced, watching the new one", self.what);
            }
            Err(error) => {
                warn!(dir = %self.dir.display(), error = %error, "failed to watch {} folder", self.what);
            }
        }
    }
}

/// Returns false for events that cannot change content: opens, reads and read-only closes, which
/// the reload itself causes.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(unix)]
fn folder_id(dir: &Path) -> Option<FolderId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// NOTE: without inode numbers a folder deleted and re-created within one debounce interval
/// looks unchanged, so the recursive watch is re-armed only after the folder was seen missing.
#[cfg(not(unix))]
fn folder_id(dir: &Path) -> Option<FolderId> {
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|_| (0, 0))
}
