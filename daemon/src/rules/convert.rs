//! Conversion between JSON values (reading extras, alert evidence) and Rhai values.

use rhai::{Array, Dynamic, Map};
use serde_json::{Number, Value};

use crate::state::WindowStats;

/// Converts a JSON value to a Rhai value. Integers that fit an `i64` stay integers.
pub(crate) fn json_to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        Value::Object(fields) => {
            let map: Map = fields
                .iter()
                .map(|(k, v)| (k.into(), json_to_dynamic(v)))
                .collect();
            Dynamic::from_map(map)
        }
    }
}

/// Converts a Rhai value to JSON for alert evidence.
///
/// Non-finite floats become `null`, window statistics become objects, and values of other
/// types become their Rhai type name as a string.
pub(crate) fn dynamic_to_json(value: &Dynamic) -> Value {
    if value.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = value.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = value.as_int() {
        return Value::Number(i.into());
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    if value.is_string() || value.is_char() {
        return Value::String(value.to_string());
    }
    if value.is_array() {
        let array = value
            .read_lock::<Array>()
            .map(|a| a.iter().map(dynamic_to_json).collect());
        return Value::Array(array.unwrap_or_default());
    }
    if value.is_map() {
        return value
            .read_lock::<Map>()
            .map_or(Value::Null, |map| map_to_json(&map));
    }
    if let Some(stats) = value.read_lock::<WindowStats>() {
        return map_to_json(&stats_to_map(&stats));
    }
    Value::String(value.type_name().to_owned())
}

/// Converts a Rhai map to a JSON object.
pub(super) fn map_to_json(map: &Map) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.to_string(), dynamic_to_json(v)))
            .collect(),
    )
}

/// Returns window statistics as a Rhai map, keyed by field name.
pub(super) fn stats_to_map(stats: &WindowStats) -> Map {
    let fields = [
        ("hours_with_data", stats.hours_with_data),
        ("energy_kwh", stats.energy_kwh),
        ("mean_kw", stats.mean_kw),
        ("peak_kw", stats.peak_kw),
        ("base_kw", stats.base_kw),
        ("load_factor", stats.load_factor),
        ("night_day_ratio", stats.night_day_ratio),
        ("cv", stats.cv),
    ];
    let mut map: Map = fields
        .iter()
        .map(|(k, v)| ((*k).into(), Dynamic::from_float(*v)))
        .collect();
    map.insert("hours".into(), Dynamic::from_int(i64::from(stats.hours)));
    map
}
