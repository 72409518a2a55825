//! The wasmtime engine shared by every plugin, its epoch ticker and the compile cache.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::PluginError;
use super::bindings::Plugin;
use super::host::HostState;
use crate::config::PluginsConfig;

/// Interval between epoch ticks; call deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// The engine, the linker with the host imports, and the compile cache.
pub struct PluginEngine {
    pub(super) engine: Engine,
    pub(super) linker: Linker<HostState>,
    pub(super) limits: PluginsConfig,
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Builds the engine with fuel, epoch interruption and the configured stack cap.
    ///
    /// # Errors
    /// Returns [`PluginError::Engine`] when wasmtime rejects the settings.
    pub fn new(limits: &PluginsConfig) -> Result<PluginEngine, PluginError> {
        let engine_error = |e: wasmtime::Error| PluginError::Engine(super::chain(&e));
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(limits.max_stack_bytes);
        let engine = Engine::new(&config).map_err(engine_error)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(PluginEngine {
            engine,
            linker,
            limits: limits.clone(),
            _ticker: ticker,
        })
    }

    /// Returns the call deadline in epoch ticks.
    pub(super) fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout_ms / EPOCH_TICK.as_millis() as u64).max(1)
    }

    /// Compiles a component, or loads its compiled code from the cache folder.
    ///
    /// # Errors
    /// Returns an error when the bytes are not a component or do not compile.
    pub(super) fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Component, PluginError> {
        check_header(path, bytes)?;
        let cached = self.cache_path(bytes);
        if let Some(component) = self.load_cached(&cached) {
            return Ok(component);
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile {
            path: path.to_owned(),
            detail: super::chain(&e),
        })?;
        self.store_cached(&cached, &component);
        Ok(component)
    }

    /// Returns the cache file for these bytes: their SHA-256 and the engine's compatibility
    /// hash, so a daemon with another wasmtime version or settings never reads it.
    fn cache_path(&self, bytes: &[u8]) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let name = format!("{}-{:016x}.cwasm", content_hash(bytes), hasher.finish());
        self.limits.cache_dir.join(name)
    }

    fn load_cached(&self, path: &Path) -> Option<Component> {
        if self.limits.cache_dir.as_os_str().is_empty() || !path.is_file() {
            return None;
        }
        // SAFETY: files in the cache folder are written only by `store_cached` from code this
        // engine compiled, and their names carry the engine's compatibility hash.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %super::chain(&error), "failed to load compiled plugin from cache; compiling again");
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, component: &Component) {
        if self.limits.cache_dir.as_os_str().is_empty() {
            return;
        }
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(super::chain(&e)))
            .and_then(|code| write_atomically(path, &code));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "failed to cache compiled plugin");
        }
    }
}

/// Returns the SHA-256 of the bytes, hex encoded.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Rejects anything but a component with a message naming what the file is instead.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let not_component = |detail: String| PluginError::NotComponent {
        path: path.to_owned(),
        detail,
    };
    if bytes.len() < 8 {
        return Err(not_component(format!(
            "the file is {} bytes long, expected at least the 8 bytes of a WebAssembly header",
            bytes.len()
        )));
    }
    if &bytes[..4] != WASM_MAGIC {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(not_component(format!(
            "the file starts with bytes [{}], expected the WebAssembly magic 00 61 73 6d",
            head.join(" ")
        )));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(not_component(
            "it is a core WebAssembly module; build it for wasm32-wasip2 or wrap it with \
             `wasm-tools component new`"
                .into(),
        ));
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        if thread.is_none() {
            // Without the ticker only fuel stops a runaway call.
            tracing::error!("failed to start the plugin epoch thread; call deadlines are off");
        }
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
