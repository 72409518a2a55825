//! Conversions between the daemon's types and the WIT records.

use serde_json::{Map, Value as Json};

use super::bindings::gridwatch::detector::types::{
    Entry, Finding, Interval, IntervalKind as WitKind, MeterId, MeterState, Reading,
    Severity as WitSeverity, Value, WindowStats,
};
use crate::alerts::Severity;
use crate::decode;
use crate::state::{IntervalKind, MeterSnapshot};

/// Builds the WIT reading for a decoded reading and its meter's state.
pub fn reading(reading: &decode::Reading, snapshot: &MeterSnapshot) -> Reading {
    Reading {
        meter: MeterId {
            region: reading.region.clone(),
            meter: reading.meter_id.clone(),
        },
        timestamp_ms: reading.ts_ms,
        energy_import_kwh: reading.energy_import_kwh,
        energy_export_kwh: reading.energy_export_kwh,
        power_w: reading.power_w,
        voltage_v: reading.voltage_v.clone(),
        current_a: reading.current_a.clone(),
        events: reading.events.clone(),
        state: meter_state(snapshot),
    }
}

fn meter_state(snapshot: &MeterSnapshot) -> MeterState {
    let interval = snapshot.interval;
    MeterState {
        register_kwh: snapshot.register_kwh,
        interval: Interval {
            kind: interval_kind(interval.kind),
            start_ms: interval.start_ms,
            end_ms: interval.end_ms,
            energy_kwh: interval.energy_kwh,
        },
        windows: snapshot
            .windows
            .iter()
            .map(|(name, w)| WindowStats {
                name: name.clone(),
                hours: w.hours,
                hours_with_data: w.hours_with_data,
                energy_kwh: w.energy_kwh,
                mean_kw: w.mean_kw,
                peak_kw: w.peak_kw,
                base_kw: w.base_kw,
                load_factor: w.load_factor,
                night_day_ratio: w.night_day_ratio,
                cv: w.cv,
            })
            .collect(),
        register_reversals: snapshot.register_reversals,
        readings: snapshot.readings,
    }
}

fn interval_kind(kind: IntervalKind) -> WitKind {
    match kind {
        IntervalKind::First => WitKind::First,
        IntervalKind::Normal => WitKind::Normal,
        IntervalKind::Duplicate => WitKind::Duplicate,
        IntervalKind::Late => WitKind::Late,
        IntervalKind::Glitch => WitKind::Glitch,
        IntervalKind::Reversal => WitKind::Reversal,
        IntervalKind::DropPending => WitKind::DropPending,
        IntervalKind::Exchange => WitKind::Exchange,
        IntervalKind::Rollover => WitKind::Rollover,
        IntervalKind::Gap => WitKind::Gap,
        IntervalKind::Jump => WitKind::Jump,
    }
}

/// Returns the alert severity of a finding; `info` raises no alert.
pub fn severity(severity: WitSeverity) -> Severity {
    match severity {
        WitSeverity::Info => Severity::Info,
        WitSeverity::Low => Severity::Low,
        WitSeverity::Medium => Severity::Medium,
        WitSeverity::High => Severity::High,
        WitSeverity::Critical => Severity::Critical,
    }
}

/// Turns a finding's evidence into a JSON object, adding its score and the plugin.
pub fn evidence(finding: &Finding, plugin: &str) -> Json {
    let mut map = Map::new();
    for Entry { name, value } in &finding.evidence {
        map.insert(name.clone(), value_json(value));
    }
    map.insert("score".into(), json_number(finding.score));
    map.insert("plugin".into(), Json::from(plugin));
    Json::Object(map)
}

/// Converts a WIT value to JSON; non-finite numbers become null.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Flag(b) => Json::from(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Number(n) => json_number(*n),
        Value::Text(t) => Json::from(t.as_str()),
    }
}

fn json_number(n: f64) -> Json {
    serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
}
