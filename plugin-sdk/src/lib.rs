//! Write gridwatch detector plugins in Rust.
//!
//! A detector is a WebAssembly component built for `wasm32-wasip2`. It implements
//! [`Detector`] and exports itself with [`export_detector!`]; everything else it needs comes
//! from [`prelude`].
//!
//! ```no_run
//! use gridwatch_plugin_sdk::prelude::*;
//!
//! struct HighLoad;
//!
//! impl Detector for HighLoad {
//!     fn describe() -> Info {
//!         Info {
//!             name: "high-load".into(),
//!             version: "1.0.0".into(),
//!             description: "Flags intervals above a power limit".into(),
//!             kinds: vec!["high-load".into()],
//!             settings: vec![setting_spec(
//!                 "limit_kw",
//!                 Value::Number(20.0),
//!                 "Mean interval power that raises an alert, kW",
//!             )],
//!         }
//!     }
//!
//!     fn detect(batch: Batch) -> Vec<Finding> {
//!         let mut findings = Vec::new();
//!         for reading in batch.readings() {
//!             let limit_kw = setting_f64(reading.meter().region(), "limit_kw");
//!             let kw = interval_mean_kw(&reading.interval());
//!             if kw > limit_kw {
//!                 findings.push(Finding {
//!                     reading: reading.index(),
//!                     kind: "high-load".into(),
//!                     severity: Severity::High,
//!                     score: 1.0,
//!                     message: format!("{kw:.1} kW over the limit of {limit_kw:.1} kW"),
//!                     evidence: vec![entry("mean_kw", Value::Number(kw))],
//!                 });
//!             }
//!         }
//!         findings
//!     }
//! }
//!
//! export_detector!(HighLoad);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` from a `cdylib` crate and drop
//! the `.wasm` file into the daemon's plugins folder.

#![warn(missing_docs)]

mod batch;

#[doc(hidden)]
#[allow(
    missing_docs,
    reason = "generated from the WIT package, which documents each item"
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "gridwatch_plugin_sdk::bindings",
    });
}

/// Version of the WIT package this SDK builds against.
pub const INTERFACE_VERSION: &str = "2.0.0";

/// Everything a detector needs, in one import.
pub mod prelude {
    pub use crate::Detector;
    pub use crate::batch::{BatchBuilder, Interval, Meter, NewReading, Reading, Window};
    pub use crate::bindings::gridwatch::detector::host::{self, Level};
    pub use crate::bindings::gridwatch::detector::types::{
        Batch, Entry, Finding, Hourly, Info, IntervalKind, SettingSpec, Severity, Value, ValueKind,
        WindowColumns,
    };
    pub use crate::export_detector;
    pub use crate::{Host, Hour, MemoryHost, WasmHost};
    pub use crate::{
        entry, interval_mean_kw, log, setting, setting_bool, setting_f64, setting_spec,
        setting_text, state,
    };
}

pub use batch::{BatchBuilder, Interval, Meter, NewReading, Reading, Window};
use bindings::gridwatch::detector::host;
use bindings::gridwatch::detector::types::{
    Entry, Hourly, IntervalKind, Level, SettingSpec, Value, ValueKind,
};

/// The trait a detector implements: `describe` once at load, `detect` for every batch.
pub use bindings::exports::gridwatch::detector::detector::Guest as Detector;

/// Exports a type that implements [`Detector`] as the plugin's detector.
///
/// The export exists only in WebAssembly builds. A native build of the same crate, for its
/// unit tests or lints, compiles the detector without exporting it.
#[macro_export]
macro_rules! export_detector {
    ($detector:ident) => {
        #[cfg(target_family = "wasm")]
        $crate::bindings::__export_plugin!($detector with_types_in $crate::bindings);
        // Native builds refer to the functions so they count as used.
        #[cfg(not(target_family = "wasm"))]
        const _: () = {
            let _ = <$detector as $crate::Detector>::describe;
            let _ = <$detector as $crate::Detector>::detect;
        };
    };
}

/// Builds a setting description; its kind follows the default value.
pub fn setting_spec(name: &str, default_value: Value, description: &str) -> SettingSpec {
    let kind = match default_value {
        Value::Flag(_) => ValueKind::Flag,
        Value::Integer(_) => ValueKind::Integer,
        Value::Number(_) => ValueKind::Number,
        Value::Text(_) => ValueKind::Text,
    };
    SettingSpec {
        name: name.to_owned(),
        kind,
        default_value,
        description: description.to_owned(),
    }
}

/// Builds a named evidence value.
pub fn entry(name: &str, value: Value) -> Entry {
    Entry {
        name: name.to_owned(),
        value,
    }
}

/// Returns the region's setting, or its declared default, or `None` for an undeclared name.
pub fn setting(region: &str, name: &str) -> Option<Value> {
    host::setting(region, name)
}

/// Returns a numeric setting; integers are widened and anything else reads as NaN.
pub fn setting_f64(region: &str, name: &str) -> f64 {
    match setting(region, name) {
        Some(Value::Number(n)) => n,
        Some(Value::Integer(i)) => i as f64,
        _ => f64::NAN,
    }
}

/// Returns a flag setting; anything but a flag reads as false.
pub fn setting_bool(region: &str, name: &str) -> bool {
    matches!(setting(region, name), Some(Value::Flag(true)))
}

/// Returns a text setting; anything but text reads as an empty string.
pub fn setting_text(region: &str, name: &str) -> String {
    match setting(region, name) {
        Some(Value::Text(text)) => text,
        _ => String::new(),
    }
}

/// Returns the mean power of an interval in kW, or 0 when it carries no energy.
pub fn interval_mean_kw(interval: &Interval) -> f64 {
    let hours = (interval.end_ms - interval.start_ms) as f64 / 3_600_000.0;
    let counts = matches!(
        interval.kind,
        IntervalKind::Normal | IntervalKind::Rollover | IntervalKind::Exchange
    );
    if counts && hours > 0.0 {
        interval.energy_kwh / hours
    } else {
        0.0
    }
}

/// Writes a message to the daemon's log under the plugin's name.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Durable state kept by the daemon for this plugin and one meter.
///
/// Values survive a plugin version swap and a daemon restart. Writes are committed together
/// with the batch that made them.
pub mod state {
    use super::{Meter, host};

    /// Returns the bytes stored under `key`.
    pub fn get(meter: Meter<'_>, key: &str) -> Option<Vec<u8>> {
        host::get_state(meter.index(), key)
    }

    /// Stores bytes under `key`.
    pub fn set(meter: Meter<'_>, key: &str, value: &[u8]) {
        host::set_state(meter.index(), key, value);
    }

    /// Removes the value under `key`.
    pub fn delete(meter: Meter<'_>, key: &str) {
        host::delete_state(meter.index(), key);
    }

    /// Returns the number stored under `key` with [`set_f64`].
    pub fn get_f64(meter: Meter<'_>, key: &str) -> Option<f64> {
        let bytes: [u8; 8] = get(meter, key)?.try_into().ok()?;
        Some(f64::from_le_bytes(bytes))
    }

    /// Stores a number under `key`.
    pub fn set_f64(meter: Meter<'_>, key: &str, value: f64) {
        set(meter, key, &value.to_le_bytes());
    }
}

/// One hour of a meter's interval-energy history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hour {
    /// Start of the hour, Unix milliseconds.
    pub start_ms: i64,
    /// Energy of the hour, kWh.
    pub energy_kwh: f64,
    /// Seconds of the hour covered by readings, 0 to 3600.
    pub covered_secs: u32,
}

impl Hour {
    /// Splits the host's history columns into hours, oldest first.
    pub fn from_columns(hourly: &Hourly) -> Vec<Hour> {
        (0_i64..)
            .zip(hourly.energy_kwh.iter().zip(&hourly.covered_secs))
            .map(|(h, (&energy_kwh, &covered_secs))| Hour {
                start_ms: hourly.start_ms + h * 3_600_000,
                energy_kwh,
                covered_secs,
            })
            .collect()
    }
}

/// The host functions as a trait, so detector logic written against it runs both inside the
/// daemon ([`WasmHost`]) and in native unit tests and benchmarks ([`MemoryHost`]).
pub trait Host {
    /// Returns the bytes stored under `key` for the meter.
    fn get_state(&mut self, meter: Meter<'_>, key: &str) -> Option<Vec<u8>>;
    /// Stores bytes under `key` for the meter.
    fn set_state(&mut self, meter: Meter<'_>, key: &str, value: &[u8]);
    /// Removes the value under `key` for the meter.
    fn delete_state(&mut self, meter: Meter<'_>, key: &str);
    /// Returns the region's setting, or its declared default.
    fn setting(&mut self, region: &str, name: &str) -> Option<Value>;
    /// Returns up to `hours` hours of the meter's history, oldest first.
    fn history(&mut self, meter: Meter<'_>, hours: u32) -> Vec<Hour>;
    /// Returns up to `hours` hours of the history of another meter, by region and meter id,
    /// oldest first. The result is empty for a meter the daemon does not hold and for a region
    /// the plugin is not enabled in.
    fn meter_history(&mut self, region: &str, meter_id: &str, hours: u32) -> Vec<Hour>;

    /// Returns a numeric setting; integers are widened and anything else reads as NaN.
    fn setting_f64(&mut self, region: &str, name: &str) -> f64 {
        match self.setting(region, name) {
            Some(Value::Number(n)) => n,
            Some(Value::Integer(i)) => i as f64,
            _ => f64::NAN,
        }
    }

    /// Returns a text setting; anything but text reads as an empty string.
    fn setting_text(&mut self, region: &str, name: &str) -> String {
        match self.setting(region, name) {
            Some(Value::Text(text)) => text,
            _ => String::new(),
        }
    }
}

/// The daemon's host functions, reached through the component's imports.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

impl Host for WasmHost {
    fn get_state(&mut self, meter: Meter<'_>, key: &str) -> Option<Vec<u8>> {
        host::get_state(meter.index(), key)
    }

    fn set_state(&mut self, meter: Meter<'_>, key: &str, value: &[u8]) {
        host::set_state(meter.index(), key, value);
    }

    fn delete_state(&mut self, meter: Meter<'_>, key: &str) {
        host::delete_state(meter.index(), key);
    }

    fn setting(&mut self, region: &str, name: &str) -> Option<Value> {
        host::setting(region, name)
    }

    fn history(&mut self, meter: Meter<'_>, hours: u32) -> Vec<Hour> {
        Hour::from_columns(&host::history(meter.index(), hours))
    }

    fn meter_history(&mut self, region: &str, meter_id: &str, hours: u32) -> Vec<Hour> {
        Hour::from_columns(&host::meter_history(region, meter_id, hours))
    }
}

/// A host held in memory, for native tests and benchmarks of detector logic.
#[derive(Debug, Default, Clone)]
pub struct MemoryHost {
    /// State by `(region, meter, key)`.
    pub state: std::collections::HashMap<(String, String, String), Vec<u8>>,
    /// Settings by name, the same for every region; declared defaults are not applied.
    pub settings: std::collections::HashMap<String, Value>,
    /// History by `(region, meter)`, oldest first.
    pub history: std::collections::HashMap<(String, String), Vec<Hour>>,
}

impl MemoryHost {
    /// Creates a host whose settings are the declared defaults.
    pub fn with_defaults(specs: &[SettingSpec]) -> MemoryHost {
        let settings = specs
            .iter()
            .map(|spec| (spec.name.clone(), spec.default_value.clone()))
            .collect();
        MemoryHost {
            settings,
            ..MemoryHost::default()
        }
    }

    fn key(meter: Meter<'_>, key: &str) -> (String, String, String) {
        (
            meter.region().to_owned(),
            meter.id().to_owned(),
            key.to_owned(),
        )
    }
}

impl Host for MemoryHost {
    fn get_state(&mut self, meter: Meter<'_>, key: &str) -> Option<Vec<u8>> {
        self.state.get(&Self::key(meter, key)).cloned()
    }

    fn set_state(&mut self, meter: Meter<'_>, key: &str, value: &[u8]) {
        self.state.insert(Self::key(meter, key), value.to_vec());
    }

    fn delete_state(&mut self, meter: Meter<'_>, key: &str) {
        self.state.remove(&Self::key(meter, key));
    }

    fn setting(&mut self, _region: &str, name: &str) -> Option<Value> {
        self.settings.get(name).cloned()
    }

    fn history(&mut self, meter: Meter<'_>, hours: u32) -> Vec<Hour> {
        self.meter_history(meter.region(), meter.id(), hours)
    }

    fn meter_history(&mut self, region: &str, meter_id: &str, hours: u32) -> Vec<Hour> {
        let all = self
            .history
            .get(&(region.to_owned(), meter_id.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let skip = all.len().saturating_sub(hours as usize);
        all[skip..].to_vec()
    }
}
