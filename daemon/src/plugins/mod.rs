//! WebAssembly detector plugins: loading, sandboxing and running them on reading batches.
//!
//! A plugin is a WebAssembly component that implements the `plugin` world of
//! `plugin-sdk/wit/detector.wit`. The daemon compiles each `.wasm` file in the plugins folder
//! once and caches the compiled code on disk by content hash. It checks the interface version
//! the plugin declares and calls its `describe`. Then it calls `detect` with every batch of
//! readings from the regions the plugin is enabled for.
//!
//! Every call runs under a fuel budget, an epoch deadline, a memory cap, a stack cap and an
//! output cap. A failed call drops that call's findings and state writes, is counted and logged
//! with its cause, and the instance is rebuilt. After repeated failures the plugin is
//! quarantined with exponential backoff. WASI is linked with nothing granted: no files, no
//! network, no environment, clocks fixed at zero and a fixed random sequence.
//!
//! | file | role |
//! |---|---|
//! | `engine.rs` | wasmtime engine, epoch ticker, compile cache |
//! | `load.rs` | loading one file, the plugin set and reloads |
//! | `host.rs` | the store's data and the host imports |
//! | `runner.rs` | calls with limits, failures and quarantine |
//! | `bank.rs` | the pipeline's runners and batch execution |
//! | `convert.rs` | readings to WIT records, findings to alerts |
//! | `state.rs` | durable plugin state committed with each batch |
//! | `tool.rs` | `gridwatch plugin inspect` and `gridwatch plugin test` |

mod bank;
mod convert;
mod engine;
mod host;
mod load;
mod runner;
mod state;
pub mod tool;

use std::path::PathBuf;

pub use bank::{BatchFindings, MeterRef, PluginBank};
pub use engine::PluginEngine;
pub use host::{HistorySource, NoHistory, PluginContext, Settings};
pub use load::{LoadedPlugin, PluginHost, PluginInfo, PluginSet, SettingInfo, inspect};
pub use runner::Failure;
pub use state::PluginStates;

/// Bindings generated from the WIT package.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "plugin",
        // Host functions can trap the call, which is how state limits are enforced.
        imports: { default: trappable },
    });
}

/// Version of the WIT package this daemon implements.
pub const INTERFACE_VERSION: &str = "3.0.0";

/// Name of the exported interface, without its version.
pub const DETECTOR_INTERFACE: &str = "gridwatch:detector/detector";

/// Reasons a plugin fails to load.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("failed to read plugin '{}': {error}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error. It is part of the message, so it is not also the error's source,
        /// which would print it twice in a chain.
        error: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("plugin '{}' is not a WebAssembly component: {detail}", path.display())]
    NotComponent {
        /// The plugin file.
        path: PathBuf,
        /// Description of what the file is instead.
        detail: String,
    },
    /// wasmtime rejected the component.
    #[error("failed to compile plugin '{}': {detail}", path.display())]
    Compile {
        /// The plugin file.
        path: PathBuf,
        /// wasmtime's error with its causes.
        detail: String,
    },
    /// The component exports an incompatible interface version or none at all.
    #[error("plugin '{}' {detail}", path.display())]
    Interface {
        /// The plugin file.
        path: PathBuf,
        /// The declared interface and the expected one.
        detail: String,
    },
    /// Instantiating the component or calling `describe` failed.
    #[error("failed to start plugin '{}': {detail}", path.display())]
    Start {
        /// The plugin file.
        path: PathBuf,
        /// The cause.
        detail: String,
    },
    /// The description or the configured settings are invalid.
    #[error("plugin '{}' is invalid: {detail}", path.display())]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// Every problem, separated by `; `.
        detail: String,
    },
    /// The wasmtime engine could not be built with the configured limits.
    #[error("failed to set up the plugin engine: {0}")]
    Engine(String),
    /// The plugins folder could not be listed.
    #[error("failed to list plugins folder '{}': {error}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O error. It is part of the message, so it is not also the error's source,
        /// which would print it twice in a chain.
        error: std::io::Error,
    },
}

/// Formats an error with its chain of causes on one line.
fn chain(error: &wasmtime::Error) -> String {
    format!("{error:#}")
}

#[cfg(test)]
mod tests;
