//! The embedded redb database: meter state, alerts, the webhook outbox, dead letters and
//! rejected messages.

mod alerts;
pub mod outbox;
mod rejected;

pub use alerts::{ActionOutcome, AlertPage, AlertQuery, AlertWrite, open_alert_key};
pub use rejected::RejectedMessage;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{RwLock, RwLockReadGuard};
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::alerts::{Alert, AlertAction, AlertChange};
use crate::config::WebhookConfig;
use crate::state::MeterState;

/// Meter state by `region/meter_id`, postcard-encoded [`crate::state::MeterState`].
pub const METERS: TableDefinition<&str, &[u8]> = TableDefinition::new("meters");
/// Alerts by id (ULID as u128), JSON-encoded [`crate::alerts::Alert`].
pub const ALERTS: TableDefinition<u128, &[u8]> = TableDefinition::new("alerts");
/// Open alert id by `region/meter_id/kind`.
pub const OPEN_ALERTS: TableDefinition<&str, u128> = TableDefinition::new("open_alerts");
/// Rejected messages by sequence number, JSON-encoded [`RejectedMessage`].
pub const REJECTED: TableDefinition<u64, &[u8]> = TableDefinition::new("rejected");
/// Plugin state, by [`push_plugin_state_key`].
pub const PLUGIN_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_state");

/// Appends the key of a plugin's value for one meter to `out`: the plugin name,
/// `region/meter_id` and the plugin's own key, separated by NUL bytes, which none of them may
/// contain.
pub fn push_plugin_state_key(out: &mut String, plugin: &str, meter: &str, key: &str) {
    out.extend([plugin, "\0", meter, "\0", key]);
}

/// A failure of the embedded database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error(
        "failed to open alert store '{path}' (if another gridwatch process has it open, stop that \
         process or set store.path to another file)"
    )]
    Open {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// The database's folder could not be created.
    #[error("failed to create folder '{path}'")]
    CreateDir {
        /// Folder path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A transaction failed.
    #[error("alert store transaction failed: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("alert store table failed: {0}")]
    Table(#[from] redb::TableError),
    /// Reading or writing failed.
    #[error("alert store I/O failed: {0}")]
    Storage(#[from] redb::StorageError),
    /// A commit failed.
    #[error("alert store commit failed: {0}")]
    Commit(#[from] redb::CommitError),
    /// The file could not be opened again after an I/O error, for example because its file
    /// system is read-only.
    #[error("failed to reopen alert store '{path}': {source}")]
    Reopen {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file was not found when it was opened again after an I/O error.
    #[error(
        "alert store '{path}' not found while reopening it; check that its disk is mounted (a \
         new, empty store is created only at start-up)"
    )]
    Missing {
        /// File path.
        path: PathBuf,
    },
    /// The file is not open after an I/O error; see [`Store::recover`].
    #[error("alert store '{path}' is unavailable after an I/O error; retrying")]
    Degraded {
        /// File path.
        path: PathBuf,
    },
    /// The file's integrity check failed.
    #[error("alert store '{path}' failed its integrity check: {source}")]
    Integrity {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A stored record could not be decoded.
    #[error("invalid record in table '{table}': {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Decoder message.
        detail: String,
    },
}

/// Handle to the open database.
///
/// After an I/O error redb refuses every further transaction until the file is opened again,
/// so [`Store::recover`] reopens it. While the file cannot be opened, an empty in-memory
/// database stands in for readers and [`Store::commit_batch`] fails, so no reading is
/// acknowledged until its effects are on disk.
pub struct Store {
    db: RwLock<Database>,
    path: PathBuf,
    cache_bytes: usize,
    degraded: AtomicBool,
}

/// Page cache of [`Store::open`]: redb's own default is 1 GiB, which the cache grows into as
/// the file grows.
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;

impl Store {
    /// Opens or creates the database file and its tables.
    ///
    /// # Errors
    /// Returns an error when the folder cannot be created or the file cannot be opened, for
    /// example because another process has it open.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens or creates the database file with a page cache of at most `cache_bytes`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let db = open_checked(path, cache_bytes, OpenMode::Create)?;
        let store = Store {
            db: RwLock::new(db),
            path: path.to_owned(),
            cache_bytes,
            degraded: AtomicBool::new(false),
        };
        store.create_tables()?;
        Ok(store)
    }

    /// Reopens the database file after an I/O error. Until it succeeds, commits fail.
    ///
    /// The file is opened only if it exists. A missing file means that its disk is not mounted
    /// (for example while it is repaired after an error), and a new empty file in its place
    /// would take the stored alerts and outbox out of view.
    ///
    /// # Errors
    /// Returns an error when the file cannot be opened yet, for example while the disk is full or
    /// read-only, and [`StoreError::Missing`] when it does not exist.
    pub fn recover(&self) -> Result<(), StoreError> {
        let mut db = self.db.write();
        self.degraded.store(true, Ordering::Release);
        // The file lock is released only when the old handle is dropped, so a stand-in
        // replaces it before the file is opened again. Between attempts the daemon then holds no
        // handle on the file, so its file system can be unmounted and repaired.
        *db = standin()?;
        *db = open_checked(&self.path, self.cache_bytes, OpenMode::Existing)?;
        drop(db);
        self.create_tables()?;
        self.degraded.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "alert store reopened");
        Ok(())
    }

    /// Returns true while the database file is not open, after a failed [`Store::recover`].
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let db = self.db.read();
        let txn = db.begin_write()?;
        txn.open_table(METERS)?;
        txn.open_table(ALERTS)?;
        txn.open_table(OPEN_ALERTS)?;
        txn.open_table(REJECTED)?;
        txn.open_table(PLUGIN_STATE)?;
        outbox::create_tables(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Returns the underlying database. Hold the guard briefly: [`Store::recover`] waits for it.
    pub fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read()
    }

    /// Returns the database for a write outside the pipeline's batches.
    ///
    /// # Errors
    /// Returns [`StoreError::Degraded`] while the file is not open, because the in-memory
    /// stand-in would take the write and lose it.
    pub fn db_for_write(&self) -> Result<RwLockReadGuard<'_, Database>, StoreError> {
        let db = self.db.read();
        // Checked under the guard: [`Store::recover`] sets the flag while it holds the lock.
        if self.is_degraded() {
            return Err(StoreError::Degraded {
                path: self.path.clone(),
            });
        }
        Ok(db)
    }

    /// Loads a meter's stored state.
    ///
    /// # Errors
    /// Returns an error when the read fails or the record cannot be decoded.
    pub fn load_meter(&self, key: &str) -> Result<Option<MeterState>, StoreError> {
        let txn = self.db.read().begin_read()?;
        let table = txn.open_table(METERS)?;
        let Some(bytes) = table.get(key)? else {
            return Ok(None);
        };
        postcard::from_bytes(bytes.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                table: "meters",
                detail: format!("{key}: {e}"),
            })
    }

    /// Loads one plugin value, by the key that [`push_plugin_state_key`] builds.
    ///
    /// # Errors
    /// Returns an error when the read fails.
    pub fn load_plugin_state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.read().begin_read()?;
        let table = txn.open_table(PLUGIN_STATE)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Writes one batch in a single transaction: meter states, plugin state, alerts with their
    /// outbox rows, and rejected messages. Returns the alerts as stored and what changed for each.
    ///
    /// # Errors
    /// Returns an error when the transaction fails; nothing of the batch is then stored.
    pub fn commit_batch(
        &self,
        batch: BatchWrite<'_>,
    ) -> Result<Vec<(Alert, AlertChange)>, StoreError> {
        if self.is_degraded() {
            return Err(StoreError::Degraded {
                path: self.path.clone(),
            });
        }
        let db = self.db.read();
        let txn = db.begin_write()?;
        {
            let mut meters = txn.open_table(METERS)?;
            let mut buf = Vec::new();
            for (key, state) in batch.meters {
                buf.clear();
                let bytes = postcard::to_extend(state, std::mem::take(&mut buf)).map_err(|e| {
                    StoreError::Corrupt {
                        table: "meters",
                        detail: format!("{key}: {e}"),
                    }
                })?;
                meters.insert(key.as_str(), bytes.as_slice())?;
                buf = bytes;
            }
        }
        if !batch.plugin_state.is_empty() {
            let mut table = txn.open_table(PLUGIN_STATE)?;
            for (key, value) in batch.plugin_state {
                match value {
                    Some(value) => table.insert(key.as_str(), value.as_slice())?,
                    None => table.remove(key.as_str())?,
                };
            }
        }
        let changes = alerts::write_alerts(&txn, batch.alerts, batch.webhooks, batch.now_ms)?;
        rejected::write(&txn, batch.rejected, batch.max_rejected_kept)?;
        txn.commit()?;
        Ok(changes)
    }

    /// Lists stored alerts, newest first.
    ///
    /// # Errors
    /// Returns an error when the read fails.
    pub fn list_alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        alerts::list(&self.db.read(), limit)
    }

    /// Lists one page of the alerts that match `query`, newest id first.
    ///
    /// # Errors
    /// Returns an error when the read fails or a row cannot be decoded.
    pub fn list_alert_page(&self, query: &AlertQuery) -> Result<AlertPage, StoreError> {
        alerts::list_page(&self.db.read(), query)
    }

    /// Loads one alert by id.
    ///
    /// # Errors
    /// Returns an error when the read fails or the row cannot be decoded.
    pub fn get_alert(&self, id: ulid::Ulid) -> Result<Option<Alert>, StoreError> {
        alerts::get(&self.db.read(), id)
    }

    /// Records an operator action on an alert in its own transaction, with the webhook
    /// deliveries of the status change it makes for `webhooks`. redb runs one write transaction
    /// at a time, so this waits for a batch commit in progress and never interleaves with one.
    ///
    /// # Errors
    /// Returns [`StoreError::Degraded`] while the file is not open, and an error when the
    /// transaction fails; nothing is then stored.
    pub fn record_alert_action(
        &self,
        id: ulid::Ulid,
        action: AlertAction,
        webhooks: &[WebhookConfig],
        now_ms: i64,
    ) -> Result<ActionOutcome, StoreError> {
        let db = self.db_for_write()?;
        let txn = db.begin_write()?;
        let outcome = alerts::record_action(&txn, id, action, webhooks, now_ms)?;
        if matches!(outcome, ActionOutcome::Applied(_)) {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(outcome)
    }

    /// Lists rejected messages, newest first.
    ///
    /// # Errors
    /// Returns an error when the read fails.
    pub fn list_rejected(&self, limit: usize) -> Result<Vec<RejectedMessage>, StoreError> {
        rejected::list(&self.db.read(), limit)
    }
}

/// Treatment of a missing file by [`open_checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// Create the file when it is missing (start-up).
    Create,
    /// Fail with [`StoreError::Missing`] when it is missing (reopening after an I/O error).
    Existing,
}

/// Opens the file and verifies its checksums, repairing what redb can repair.
fn open_checked(path: &Path, cache_bytes: usize, mode: OpenMode) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    builder.set_cache_size(cache_bytes);
    let opened = match mode {
        OpenMode::Create => builder.create(path),
        OpenMode::Existing => builder.open(path),
    };
    let mut db = opened.map_err(|source| open_error(path, mode, source))?;
    // NOTE: the check reads the whole file, so start-up time grows with the store's size.
    match db.check_integrity() {
        Ok(true) => Ok(db),
        Ok(false) => {
            tracing::warn!(path = %path.display(), "alert store was repaired on open");
            Ok(db)
        }
        Err(source) => Err(StoreError::Integrity {
            path: path.to_owned(),
            source,
        }),
    }
}

fn open_error(path: &Path, mode: OpenMode, source: redb::DatabaseError) -> StoreError {
    let path = path.to_owned();
    match (mode, source) {
        (OpenMode::Create, source) => StoreError::Open { path, source },
        (OpenMode::Existing, redb::DatabaseError::Storage(redb::StorageError::Io(error)))
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            StoreError::Missing { path }
        }
        (OpenMode::Existing, source) => StoreError::Reopen { path, source },
    }
}

/// Returns an empty in-memory database that stands in while the file is closed.
fn standin() -> Result<Database, StoreError> {
    Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })
}

/// Everything one batch of readings writes.
pub struct BatchWrite<'a> {
    /// Meter states changed by the batch, by `region/meter_id`.
    pub meters: Vec<(&'a String, &'a MeterState)>,
    /// Plugin values written (`Some`) or deleted (`None`), by the key that
    /// [`push_plugin_state_key`] builds.
    pub plugin_state: Vec<(String, Option<Vec<u8>>)>,
    /// Alerts raised by rules and plugins.
    pub alerts: Vec<AlertWrite>,
    /// Messages rejected by the decoder.
    pub rejected: Vec<RejectedMessage>,
    /// Webhook endpoints to plan deliveries for.
    pub webhooks: &'a [WebhookConfig],
    /// Rejected messages kept; older ones are evicted.
    pub max_rejected_kept: u64,
    /// Commit time, Unix milliseconds.
    pub now_ms: i64,
}

#[cfg(test)]
mod tests;
