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
pub const INTERFACE_VERSION: &str = "3.0.0";

/// Everything a detector needs, in one import.
pub mod prelude {
    pub use crate::Detector;
    pub use crate::batch::{BatchBuilder, Interval, Meter, NewReading, Reading, Window};
    pub use crate::bindings::gridwatch::detector::host::{self, Level};
    pub use crate::bindings::gridwatch::detector::types::{
        Batch, Hourly, Info, IntervalKind, SettingSpec, Severity, Value, ValueKind, WindowColumns,
    };
    pub use crate::export_detector;
    pub use crate::{Entry, Finding, Host, Hour, MemoryHost, WasmHost};
    pub use crate::{
        entry, interval_mean_kw, log, setting, setting_bool, setting_f64, setting_spec,
        setting_text, state,
    };
}

use std::borrow::Cow;

pub use batch::{BatchBuilder, Interval, Meter, NewReading, Reading, Window};
use bindings::gridwatch::detector::host;
use bindings::gridwatch::detector::types::{
    self as wire, Batch, Hourly, Info, IntervalKind, Level, SettingSpec, Severity, Value, ValueKind,
};

/// The trait a detector implements: `describe` once at load, `detect` for every batch.
pub trait Detector {
    /// Describes the detector: its name, version, kinds and settings.
    fn describe() -> Info;
    /// Examines a batch of readings and returns what it found.
    fn detect(batch: Batch) -> Vec<Finding>;
}

/// Something a detector found about the meter of one reading.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Index of the reading in the batch, from [`Reading::index`]. The finding is about its
    /// meter, and an alert it raises carries its time.
    pub reading: u32,
    /// One of the kinds listed in [`Info`].
    pub kind: Cow<'static, str>,
    /// Urgency of the finding. [`Severity::Info`] records the score without an alert.
    pub severity: Severity,
    /// Confidence from 0 to 1; stored as the meter's latest score for this plugin.
    pub score: f64,
    /// One line for the alert.
    pub message: String,
    /// Named values that back the finding.
    pub evidence: Vec<Entry>,
}

/// One named value of a finding's evidence.
///
/// Names written as literals cost no allocation: [`export_detector!`] lists each distinct
/// name once per call and the findings refer to it by index.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Name of the value, such as `mean_kw`.
    pub name: Cow<'static, str>,
    /// The value.
    pub value: Value,
}

/// Converts findings to the interface's columns, each kind and evidence name listed once.
#[doc(hidden)]
pub fn to_wire(findings: Vec<Finding>) -> wire::Findings {
    let count = findings.len();
    let entries = findings.iter().map(|f| f.evidence.len()).sum();
    let message_bytes = findings.iter().map(|f| f.message.len()).sum();
    let mut names = Names::default();
    let mut wire = wire::Findings {
        names: Vec::new(),
        reading: Vec::with_capacity(count),
        kind: Vec::with_capacity(count),
        severity: Vec::with_capacity(count),
        score: Vec::with_capacity(count),
        messages: String::with_capacity(message_bytes),
        message_ends: Vec::with_capacity(count),
        entry_ends: Vec::with_capacity(count),
        entry_name: Vec::with_capacity(entries),
        entry_value: Vec::with_capacity(entries),
    };
    for finding in findings {
        wire.reading.push(finding.reading);
        wire.kind.push(names.index(0, finding.kind));
        wire.severity.push(finding.severity);
        wire.score.push(finding.score);
        wire.messages.push_str(&finding.message);
        wire.message_ends.push(end(wire.messages.len()));
        for (slot, entry) in (1..).zip(finding.evidence) {
            wire.entry_name.push(names.index(slot, entry.name));
            wire.entry_value.push(entry.value);
        }
        wire.entry_ends.push(end(wire.entry_name.len()));
    }
    wire.names = names.names;
    wire
}

/// Returns a column length as an end offset. Past `u32::MAX` the host rejects the columns
/// anyway, since no WebAssembly memory is that large.
fn end(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The names of one call's findings, each listed once.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    /// By position in a finding (0 for the kind, then the evidence entries): the address and
    /// length of the last literal name seen there and its index. Findings built by the same
    /// code repeat their names in the same positions, so most names are found without a
    /// string comparison.
    seen: Vec<(usize, usize, u32)>,
}

impl Names {
    fn index(&mut self, slot: usize, name: Cow<'static, str>) -> u32 {
        let key = (name.as_ptr() as usize, name.len());
        if let Some(&(address, len, index)) = self.seen.get(slot)
            && (address, len) == key
        {
            return index;
        }
        let literal = matches!(name, Cow::Borrowed(_));
        let index = match self.names.iter().position(|known| *known == *name) {
            Some(position) => position as u32,
            None => {
                self.names.push(name.into_owned());
                (self.names.len() - 1) as u32
            }
        };
        // Only a literal's address identifies its text: an owned name's memory is freed and
        // can hold another name later.
        if literal {
            if self.seen.len() <= slot {
                self.seen.resize(slot + 1, (0, 0, 0));
            }
            self.seen[slot] = (key.0, key.1, index);
        }
        index
    }
}

/// Exports a type that implements [`Detector`] as the plugin's detector.
///
/// The export exists only in WebAssembly builds. A native build of the same crate, for its
/// unit tests or lints, compiles the detector without exporting it.
#[macro_export]
macro_rules! export_detector {
    ($detector:ident) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct Export;

            impl $crate::bindings::exports::gridwatch::detector::detector::Guest for Export {
                fn describe() -> $crate::bindings::gridwatch::detector::types::Info {
                    <$detector as $crate::Detector>::describe()
                }

                fn detect(
                    batch: $crate::bindings::gridwatch::detector::types::Batch,
                ) -> $crate::bindings::gridwatch::detector::types::Findings {
                    $crate::to_wire(<$detector as $crate::Detector>::detect(batch))
                }
            }

    $crate::bindings::__export_plugin!(Export with_types_in $crate::bindings);
        };
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

/// Builds a named evidence value. A literal name is not copied.
pub fn entry(name: impl Into<Cow<'static, str>>, value: Value) -> Entry {
    Entry {
        name: name.into(),
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
    /// oldest first. The result is empty for a meter the daemon does not hold, and for a region
    /// outside the plugin's `regions` and `history_regions` in the daemon's config.
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

#[cfg(test)]
mod tests {
    use super::{Finding, Severity, Value, entry, to_wire};

    fn finding(reading: u32, names: [&'static str; 2], owned: Option<String>) -> Finding {
        let mut evidence = vec![
            entry(names[0], Value::Integer(1)),
            entry(names[1], Value::Number(2.0)),
        ];
        if let Some(name) = owned {
            evidence.push(entry(name, Value::Flag(true)));
        }
        Finding {
            reading,
            kind: "mining".into(),
            severity: Severity::Medium,
            score: 0.5,
            message: format!("m{reading}"),
            evidence,
        }
    }

    fn names_of(wire: &super::wire::Findings, item: usize) -> Vec<&str> {
        let from = if item == 0 {
            0
        } else {
            wire.entry_ends[item - 1] as usize
        };
        let to = wire.entry_ends[item] as usize;
        std::iter::once(wire.kind[item])
            .chain(wire.entry_name[from..to].iter().copied())
            .map(|index| wire.names[index as usize].as_str())
            .collect()
    }

    #[test]
    fn wire_lists_each_name_once() {
        let wire = to_wire(vec![
            finding(0, ["rigs", "kw"], None),
            finding(1, ["rigs", "kw"], Some("suspect_1".to_owned())),
            // Same texts in swapped positions, then a name that only an owned string has.
            finding(2, ["kw", "rigs"], Some("suspect_2".to_owned())),
            finding(3, ["rigs", "kw"], Some("suspect_1".to_owned())),
        ]);
        assert_eq!(
            wire.names,
            ["mining", "rigs", "kw", "suspect_1", "suspect_2"]
        );
        assert_eq!(names_of(&wire, 0), ["mining", "rigs", "kw"]);
        assert_eq!(names_of(&wire, 1), ["mining", "rigs", "kw", "suspect_1"]);
        assert_eq!(names_of(&wire, 2), ["mining", "kw", "rigs", "suspect_2"]);
        assert_eq!(names_of(&wire, 3), ["mining", "rigs", "kw", "suspect_1"]);
        assert_eq!(wire.reading, [0, 1, 2, 3]);
        assert_eq!(wire.entry_ends, [2, 5, 8, 11]);
        assert_eq!(wire.messages, "m0m1m2m3");
        assert_eq!(wire.message_ends, [2, 4, 6, 8]);
    }

    #[test]
    fn no_findings_have_no_names() {
        let wire = to_wire(Vec::new());
        assert!(wire.names.is_empty());
        assert!(wire.reading.is_empty());
        assert!(wire.messages.is_empty());
    }
}
