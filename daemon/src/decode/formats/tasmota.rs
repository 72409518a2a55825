//! Tasmota telemetry: the `tele/<device>/SENSOR` JSON of energy monitoring devices, with its
//! `ENERGY` object, and the JSON that Tasmota's Smart Meter Interface (SML) scripts publish.
//!
//! Both carry `Time` at the top level as the device's local time, `2024-07-12T08:30:15`, with
//! no zone unless `SetOption52` is on. The caller passes the device's UTC offset; pass
//! [`FixedOffset::east_opt(0)`](FixedOffset::east_opt) for devices set to UTC. A time with its
//! own offset keeps that offset. `STATUS 8` and `STATUS 10` responses, which wrap the same
//! content in `StatusSNS`, are accepted too.
//!
//! `ENERGY` fields (Tasmota 9 to 14):
//!
//! | key | field | source unit | stored as |
//! |---|---|---|---|
//! | `Total` | `energy_import_kwh` (per-phase arrays are summed) | kWh | kWh |
//! | `ExportActive` | `energy_export_kwh` (summed) | kWh | kWh |
//! | `Power` | `power_w` (summed); per phase also `extra.power_l1_w` .. | W | W |
//! | `Voltage` | `voltage_v` | V | V |
//! | `Current` | `current_a` | A | A |
//! | `Factor` | `power_factor`; per phase `extra.power_factor_l1` .. | ratio | ratio |
//! | `ApparentPower` | `extra.apparent_power_va`, per phase `apparent_power_l1_va` .. | VA | VA |
//! | `ReactivePower` | `extra.reactive_power_var`, per phase `reactive_power_l1_var` .. | var | var |
//! | `Frequency` | `extra.frequency_hz`, per phase `frequency_l1_hz` .. | Hz | Hz |
//! | `Today`, `Yesterday` | `extra.energy_today_kwh`, `extra.energy_yesterday_kwh` (summed) | kWh | kWh |
//! | `TotalStartTime` | `extra.total_start_ms` | local time | Unix ms |
//! | other keys, other top-level objects | `extra[key]` | as sent | as sent |
//!
//! SML script output is `{"Time": ..., "<meter>": {"<name>": value, ...}}`, where the script's
//! descriptor lines name both the meter object and its keys. [`SmlMapping`] names the key of
//! each register, and every other key of the meter object goes to `extra` as sent.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use serde_json::{Map, Value, json};

use super::{DeviceReading, FormatError, FormatErrorKind};

/// Key names of a Tasmota SML script's JSON output.
///
/// When a configured key is absent, the OBIS-style name that many scripts use is tried:
/// `1_8_0` for import, `2_8_0` for export and `16_7_0` for power. The OBIS-style names
/// `32_7_0`, `52_7_0` and `72_7_0` (voltage), `31_7_0`, `51_7_0` and `71_7_0` (current) and
/// `13_7_0` (power factor) are always read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmlMapping {
    /// Name of the meter object at the top level: the last field of the script's `+1,...`
    /// meter line.
    pub meter_key: String,
    /// Key of the import register, in kWh.
    pub import_kwh: String,
    /// Key of the export register, in kWh.
    pub export_kwh: Option<String>,
    /// Key of the active power, in W.
    pub power_w: Option<String>,
}

impl Default for SmlMapping {
    /// Returns the names used in the Tasmota Smart Meter Interface examples: meter `SML`, keys
    /// `Total_in`, `Total_out` and `Power_curr`.
    fn default() -> Self {
        SmlMapping {
            meter_key: "SML".to_owned(),
            import_kwh: "Total_in".to_owned(),
            export_kwh: Some("Total_out".to_owned()),
            power_w: Some("Power_curr".to_owned()),
        }
    }
}

/// OBIS-style SML keys for per-phase voltage and current.
const SML_VOLTAGE_KEYS: [&str; 3] = ["32_7_0", "52_7_0", "72_7_0"];
const SML_CURRENT_KEYS: [&str; 3] = ["31_7_0", "51_7_0", "71_7_0"];

/// Parses a `SENSOR` message with an `ENERGY` object.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when `ENERGY` or
/// `ENERGY.Total` is absent, and `BadValue` when a known field is not a number (or an array of
/// numbers) or `Time` is not a valid time.
pub fn parse_sensor(payload: &[u8], utc_offset: FixedOffset) -> Result<DeviceReading, FormatError> {
    let mut root = parse_root(payload)?;
    let mut reading = DeviceReading {
        ts_ms: take_time(&mut root, utc_offset)?,
        ..DeviceReading::default()
    };

    let energy = match root.remove("ENERGY") {
        Some(Value::Object(energy)) => energy,
        Some(other) => return Err(bad_value("ENERGY", &other, "an object")),
        None => {
            let detail = "missing Tasmota ENERGY object, expected an energy monitoring device";
            return Err(FormatError::new(FormatErrorKind::MissingField, detail));
        }
    };
    decode_energy(energy, utc_offset, &mut reading)?;
    reading.extra.extend(root);
    Ok(reading)
}

/// Parses the output of a Tasmota SML script.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when the meter object or
/// the import key is absent, and `BadValue` when a mapped key is not a number or `Time` is not
/// a valid time.
pub fn parse_sml(
    payload: &[u8],
    mapping: &SmlMapping,
    utc_offset: FixedOffset,
) -> Result<DeviceReading, FormatError> {
    let mut root = parse_root(payload)?;
    let mut reading = DeviceReading {
        ts_ms: take_time(&mut root, utc_offset)?,
        ..DeviceReading::default()
    };

    let meter_key = mapping.meter_key.as_str();
    let mut meter = match root.remove(meter_key) {
        Some(Value::Object(meter)) => meter,
        Some(other) => return Err(bad_value(meter_key, &other, "an object")),
        None => {
            let detail = format!("missing Tasmota SML meter object '{meter_key}'");
            return Err(FormatError::new(FormatErrorKind::MissingField, detail));
        }
    };

    decode_sml_meter(&mut meter, mapping, &mut reading)?;
    reading.extra.extend(meter);
    reading.extra.extend(root);
    Ok(reading)
}

fn parse_root(payload: &[u8]) -> Result<Map<String, Value>, FormatError> {
    if payload.trim_ascii().is_empty() {
        let detail = "empty Tasmota payload, expected a JSON object";
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        FormatError::new(
            FormatErrorKind::Malformed,
            format!("invalid Tasmota JSON: {e}"),
        )
    })?;

    let Value::Object(mut root) = value else {
        let detail = format!("invalid Tasmota payload '{value}', expected a JSON object");
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    };
    match root.remove("StatusSNS") {
        Some(Value::Object(status)) => Ok(status),
        Some(other) => Err(bad_value("StatusSNS", &other, "an object")),
        None => Ok(root),
    }
}

/// Removes `Time` from the object and returns it in Unix milliseconds.
fn take_time(
    root: &mut Map<String, Value>,
    utc_offset: FixedOffset,
) -> Result<Option<i64>, FormatError> {
    match root.remove("Time") {
        None => Ok(None),
        Some(Value::String(text)) => match parse_local_time(&text, utc_offset) {
            Some(ts_ms) => Ok(Some(ts_ms)),
            None => Err(bad_value("Time", &json!(text), "YYYY-MM-DDThh:mm:ss")),
        },
        Some(other) => Err(bad_value("Time", &other, "YYYY-MM-DDThh:mm:ss")),
    }
}

/// Parses a Tasmota time: RFC 3339 with its own offset, or local time in the given offset,
/// written `2024-07-12T08:30:15` or, before Tasmota 6, `2024.07.12 08:30:15`.
fn parse_local_time(text: &str, utc_offset: FixedOffset) -> Option<i64> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_millis());
    }
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y.%m.%d %H:%M:%S"))
        .ok()?;
    Some(
        utc_offset
            .from_local_datetime(&local)
            .single()?
            .timestamp_millis(),
    )
}

fn decode_energy(
    energy: Map<String, Value>,
    utc_offset: FixedOffset,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    if !energy.contains_key("Total") {
        let detail = "missing Tasmota ENERGY.Total, expected the import register in kWh";
        return Err(FormatError::new(FormatErrorKind::MissingField, detail));
    }

    for (key, value) in energy {
        decode_energy_field(&key, value, utc_offset, reading)?;
    }
    Ok(())
}

/// Returns the per-phase values of an energy register, which must not be negative.
fn registers(key: &str, value: &Value) -> Result<Vec<f64>, FormatError> {
    let values = numbers(key, value)?;
    if let Some(negative) = values.iter().find(|v| **v < 0.0) {
        let detail = format!("invalid Tasmota ENERGY.{key} value {negative}, expected at least 0");
        return Err(FormatError::new(FormatErrorKind::BadValue, detail));
    }
    Ok(values)
}

fn decode_energy_field(
    key: &str,
    value: Value,
    utc_offset: FixedOffset,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let extra = &mut reading.extra;
    match key {
        "Total" => reading.energy_import_kwh = Some(sum(&registers(key, &value)?)),
        "ExportActive" => reading.energy_export_kwh = Some(sum(&registers(key, &value)?)),
        "Today" => insert_sum(extra, "energy_today_kwh", &numbers(key, &value)?),
        "Yesterday" => insert_sum(extra, "energy_yesterday_kwh", &numbers(key, &value)?),
        "Voltage" => reading.voltage_v = numbers(key, &value)?,
        "Current" => reading.current_a = numbers(key, &value)?,
        "Power" => {
            let phases = numbers(key, &value)?;
            reading.power_w = Some(sum(&phases));
            if phases.len() > 1 {
                insert_phases(extra, "power", "_w", &phases);
            }
        }
        "Factor" => match numbers(key, &value)?.as_slice() {
            [factor] => reading.power_factor = Some(*factor),
            phases => insert_phases(extra, "power_factor", "", phases),
        },
        "ApparentPower" => insert_phases(extra, "apparent_power", "_va", &numbers(key, &value)?),
        "ReactivePower" => insert_phases(extra, "reactive_power", "_var", &numbers(key, &value)?),
        "Frequency" => insert_phases(extra, "frequency", "_hz", &numbers(key, &value)?),
        "TotalStartTime" => {
            let start = value.as_str().and_then(|t| parse_local_time(t, utc_offset));
            let start = start.ok_or_else(|| bad_value(key, &value, "YYYY-MM-DDThh:mm:ss"))?;
            extra.insert("total_start_ms".to_owned(), json!(start));
        }
        _ => {
            extra.insert(key.to_owned(), value);
        }
    }
    Ok(())
}

/// Reads a number, or an array of numbers with one value per phase.
fn numbers(key: &str, value: &Value) -> Result<Vec<f64>, FormatError> {
    let expected = "a number or an array of numbers";
    match value {
        Value::Number(n) => n
            .as_f64()
            .map(|v| vec![v])
            .ok_or_else(|| bad_value(key, value, expected)),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_f64().ok_or_else(|| bad_value(key, value, expected)))
            .collect(),
        _ => Err(bad_value(key, value, expected)),
    }
}

fn sum(values: &[f64]) -> f64 {
    values.iter().sum()
}

fn insert_sum(extra: &mut Map<String, Value>, key: &str, values: &[f64]) {
    extra.insert(key.to_owned(), json!(sum(values)));
}

/// Stores one value as `<base><suffix>`, or several as `<base>_l1<suffix>`, `<base>_l2<suffix>` ..
fn insert_phases(extra: &mut Map<String, Value>, base: &str, suffix: &str, values: &[f64]) {
    if let [value] = values {
        extra.insert(format!("{base}{suffix}"), json!(value));
        return;
    }
    for (phase, value) in values.iter().enumerate() {
        extra.insert(format!("{base}_l{}{suffix}", phase + 1), json!(value));
    }
}

/// Moves the mapped registers of an SML meter object into the reading.
fn decode_sml_meter(
    meter: &mut Map<String, Value>,
    mapping: &SmlMapping,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let Some(import) = take_number(meter, Some(&mapping.import_kwh), "1_8_0")? else {
        let key = &mapping.import_kwh;
        let meter_key = &mapping.meter_key;
        let detail = format!("missing Tasmota SML import register '{meter_key}.{key}' or '1_8_0'");
        return Err(FormatError::new(FormatErrorKind::MissingField, detail));
    };
    reading.energy_import_kwh = Some(import);
    reading.energy_export_kwh = take_number(meter, mapping.export_kwh.as_deref(), "2_8_0")?;
    reading.power_w = take_number(meter, mapping.power_w.as_deref(), "16_7_0")?;
    reading.power_factor = take_number(meter, None, "13_7_0")?;

    reading.voltage_v = take_phases(meter, &SML_VOLTAGE_KEYS)?;
    reading.current_a = take_phases(meter, &SML_CURRENT_KEYS)?;
    Ok(())
}

/// Removes and returns the number under the configured key, or else under the OBIS-style key.
fn take_number(
    meter: &mut Map<String, Value>,
    key: Option<&str>,
    obis_key: &str,
) -> Result<Option<f64>, FormatError> {
    let key = key.filter(|k| meter.contains_key(*k)).unwrap_or(obis_key);
    let Some(value) = meter.remove(key) else {
        return Ok(None);
    };
    match value.as_f64() {
        Some(number) => Ok(Some(number)),
        None => Err(bad_value(key, &value, "a number")),
    }
}

/// Removes the per-phase values, stopping at the first phase that is absent.
fn take_phases(meter: &mut Map<String, Value>, keys: &[&str]) -> Result<Vec<f64>, FormatError> {
    let mut values = Vec::new();
    for key in keys {
        match take_number(meter, None, key)? {
            Some(value) => values.push(value),
            None => break,
        }
    }
    Ok(values)
}

fn bad_value(key: &str, value: &Value, expected: &str) -> FormatError {
    let detail = format!("invalid Tasmota value {key} = {value}, expected {expected}");
    FormatError::new(FormatErrorKind::BadValue, detail)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::formats::assert_close;

    const POW_SENSOR: &str = include_str!("fixtures/tasmota_pow_sensor.json");
    const THREE_PHASE_SENSOR: &str = include_str!("fixtures/tasmota_three_phase_sensor.json");
    const TELEINFO_SENSOR: &str = include_str!("fixtures/tasmota_teleinfo_sensor.json");
    const STATUS8_OLD_TIME: &str = include_str!("fixtures/tasmota_status8_old_time.json");
    const SML_NAMED: &str = include_str!("fixtures/tasmota_sml_named.json");
    const SML_OBIS: &str = include_str!("fixtures/tasmota_sml_obis.json");

    fn offset_hours(hours: i32) -> FixedOffset {
        FixedOffset::east_opt(hours * 3600).unwrap()
    }

    fn sensor(payload: &str, hours: i32) -> DeviceReading {
        parse_sensor(payload.as_bytes(), offset_hours(hours))
            .unwrap_or_else(|e| panic!("payload rejected: {e}"))
    }

    #[test]
    fn pow_sensor_all_fields() {
        let reading = sensor(POW_SENSOR, 1);

        assert_eq!(reading.meter_id, None);
        assert_eq!(reading.ts_ms, Some(1_709_644_930_000));
        assert_close(reading.energy_import_kwh, 512.873, "import");
        assert_eq!(reading.energy_export_kwh, None);
        assert_close(reading.power_w, 1843.0, "power");
        assert_eq!(reading.voltage_v, vec![231.0]);
        assert_eq!(reading.current_a, vec![8.181]);
        assert_close(reading.power_factor, 0.98, "power factor");
        assert!(reading.events.is_empty(), "events: {:?}", reading.events);

        let cases = [
            ("total_start_ms", json!(1_698_912_764_000_i64)),
            ("energy_yesterday_kwh", json!(7.412)),
            ("energy_today_kwh", json!(3.105)),
            ("apparent_power_va", json!(1890.0)),
            ("reactive_power_var", json!(418.0)),
            ("Period", json!(12)),
        ];
        for (key, expected) in &cases {
            assert_eq!(reading.extra.get(*key), Some(expected), "extra key {key}");
        }
        assert_eq!(
            reading.extra.len(),
            cases.len(),
            "extra: {:?}",
            reading.extra
        );
    }

    #[test]
    fn time_offset_applied() {
        let utc = sensor(POW_SENSOR, 0);
        let cest = sensor(POW_SENSOR, 2);

        assert_eq!(utc.ts_ms, Some(1_709_648_530_000));
        assert_eq!(cest.ts_ms, Some(1_709_641_330_000));
    }

    #[test]
    fn time_with_own_offset() {
        let payload = POW_SENSOR.replace("2024-03-05T14:22:10", "2024-03-05T14:22:10+01:00");
        let reading = sensor(&payload, 5);

        assert_eq!(reading.ts_ms, Some(1_709_644_930_000));
    }

    #[test]
    fn three_phase_arrays() {
        let reading = sensor(THREE_PHASE_SENSOR, 0);

        assert_eq!(reading.ts_ms, Some(1_717_243_205_000));
        assert_close(reading.energy_import_kwh, 353.75, "import");
        assert_close(reading.energy_export_kwh, 12.75, "export");
        assert_close(reading.power_w, 500.0, "power");
        assert_eq!(reading.voltage_v, vec![230.1, 229.5, 231.0]);
        assert_eq!(reading.current_a, vec![1.956, 1.046, 0.649]);
        assert_eq!(reading.power_factor, None);

        let cases = [
            ("power_l1_w", json!(410.0)),
            ("power_l3_w", json!(-130.0)),
            ("power_factor_l2", json!(0.92)),
            ("apparent_power_l1_va", json!(450.0)),
            ("reactive_power_l3_var", json!(74.0)),
            ("frequency_l3_hz", json!(49.99)),
            ("energy_yesterday_kwh", json!(4.5)),
            ("energy_today_kwh", json!(0.875)),
        ];
        for (key, expected) in cases {
            assert_eq!(reading.extra.get(key), Some(&expected), "extra key {key}");
        }
    }

    #[test]
    fn teleinfo_objects_kept() {
        let reading = sensor(TELEINFO_SENSOR, 2);

        assert_close(reading.energy_import_kwh, 4812.33, "import");
        assert_close(reading.power_w, 640.0, "power");
        assert_eq!(reading.voltage_v, Vec::<f64>::new());
        assert_eq!(reading.extra.get("Load"), Some(&json!(21)));
        let tic = reading.extra.get("TIC").and_then(|t| t.get("ADCO"));
        assert_eq!(tic, Some(&json!("031428571234")));
        assert_eq!(reading.extra.get("TempUnit"), Some(&json!("C")));
    }

    #[test]
    fn status_response_old_time_format() {
        let reading = sensor(STATUS8_OLD_TIME, 0);

        assert_eq!(reading.ts_ms, Some(1_707_088_621_000));
        assert_close(reading.energy_import_kwh, 3.912, "import");
        assert_close(reading.power_factor, 0.0, "power factor");
    }

    #[test]
    fn missing_time_allowed() {
        let reading = sensor(r#"{"ENERGY":{"Total":1.5}}"#, 0);

        assert_eq!(reading.ts_ms, None);
        assert_close(reading.energy_import_kwh, 1.5, "import");
    }

    #[test]
    fn sml_named_keys() {
        let mapping = SmlMapping {
            meter_key: "Haus".to_owned(),
            ..SmlMapping::default()
        };
        let reading = parse_sml(SML_NAMED.as_bytes(), &mapping, offset_hours(2)).unwrap();

        assert_eq!(reading.ts_ms, Some(1_717_236_005_000));
        assert_close(reading.energy_import_kwh, 18234.5612, "import");
        assert_close(reading.energy_export_kwh, 4021.0045, "export");
        assert_close(reading.power_w, -1250.0, "power");
        assert_eq!(reading.extra.get("Volt_p1"), Some(&json!(231.4)));
        assert_eq!(
            reading.extra.get("Meter_Number"),
            Some(&json!("1EMH0012345678"))
        );
        assert_eq!(reading.extra.len(), 2, "extra: {:?}", reading.extra);
    }

    #[test]
    fn sml_obis_keys_with_defaults() {
        let reading = parse_sml(SML_OBIS.as_bytes(), &SmlMapping::default(), offset_hours(0));
        let reading = reading.unwrap();

        assert_eq!(reading.ts_ms, Some(1_717_243_205_000));
        assert_close(reading.energy_import_kwh, 7205.1187, "import");
        assert_close(reading.energy_export_kwh, 12.5, "export");
        assert_close(reading.power_w, 532.0, "power");
        assert_eq!(reading.voltage_v, vec![229.8, 230.6, 231.2]);
        assert_eq!(reading.current_a, vec![1.21, 0.83, 0.35]);
        assert_close(reading.power_factor, 0.97, "power factor");
        assert_eq!(reading.extra.get("0_0_0"), Some(&json!("1ISK0098765432")));
        assert_eq!(reading.extra.len(), 1, "extra: {:?}", reading.extra);
    }

    #[test]
    fn sml_without_optional_keys() {
        let mapping = SmlMapping {
            meter_key: "Main".to_owned(),
            import_kwh: "E_in".to_owned(),
            export_kwh: None,
            power_w: None,
        };
        let payload = r#"{"Main":{"E_in":12.0,"Total_out":3.0}}"#;
        let reading = parse_sml(payload.as_bytes(), &mapping, offset_hours(0)).unwrap();

        assert_close(reading.energy_import_kwh, 12.0, "import");
        assert_eq!(reading.energy_export_kwh, None);
        assert_eq!(reading.power_w, None);
        assert_eq!(reading.extra.get("Total_out"), Some(&json!(3.0)));
    }

    #[test]
    fn broken_sensor_payloads_rejected() {
        let cases = [
            ("empty", "", FormatErrorKind::Malformed),
            ("whitespace", " \n", FormatErrorKind::Malformed),
            ("not json", "Total=1.5", FormatErrorKind::Malformed),
            (
                "truncated json",
                r#"{"ENERGY":{"Total":1.5"#,
                FormatErrorKind::Malformed,
            ),
            ("array root", "[1,2]", FormatErrorKind::Malformed),
            (
                "no energy",
                r#"{"Time":"2024-06-01T12:00:05"}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "no total",
                r#"{"ENERGY":{"Power":12}}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "energy not object",
                r#"{"ENERGY":5}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "total string",
                r#"{"ENERGY":{"Total":"1.5"}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "total null",
                r#"{"ENERGY":{"Total":null}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "total empty array",
                r#"{"ENERGY":{"Total":[]}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "negative phase total",
                r#"{"ENERGY":{"Total":[1.0,-2.0,3.5]}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "voltage mixed",
                r#"{"ENERGY":{"Total":1,"Voltage":[230,"x"]}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "bad time",
                r#"{"Time":"yesterday","ENERGY":{"Total":1}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "time number",
                r#"{"Time":1717243205,"ENERGY":{"Total":1}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "bad start time",
                r#"{"ENERGY":{"Total":1,"TotalStartTime":"x"}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "status not object",
                r#"{"StatusSNS":[]}"#,
                FormatErrorKind::BadValue,
            ),
        ];
        for (name, payload, kind) in cases {
            let result = parse_sensor(payload.as_bytes(), offset_hours(0));
            assert_eq!(
                result.as_ref().err().map(|e| e.reason),
                Some(kind),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn broken_sml_payloads_rejected() {
        let cases = [
            ("empty", "", FormatErrorKind::Malformed),
            (
                "no meter",
                r#"{"Time":"2024-06-01T12:00:05"}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "meter not object",
                r#"{"SML":3}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "no import",
                r#"{"SML":{"Total_out":3.0}}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "import string",
                r#"{"SML":{"Total_in":"7.5"}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "power string",
                r#"{"SML":{"1_8_0":7.5,"Power_curr":"x"}}"#,
                FormatErrorKind::BadValue,
            ),
        ];
        for (name, payload, kind) in cases {
            let result = parse_sml(payload.as_bytes(), &SmlMapping::default(), offset_hours(0));
            assert_eq!(
                result.as_ref().err().map(|e| e.reason),
                Some(kind),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn bad_value_message() {
        let payload = r#"{"ENERGY":{"Total":"abc"}}"#;
        let error = parse_sensor(payload.as_bytes(), offset_hours(0)).unwrap_err();

        let expected =
            r#"invalid Tasmota value Total = "abc", expected a number or an array of numbers"#;
        assert_eq!(error.to_string(), expected);
    }
}
