//! Decoding of MQTT telemetry into validated readings.
//!
//! The schema is documented in `docs/telemetry.md`. Decoding never panics: every payload either
//! becomes a [`Reading`] or a [`Rejection`] that names the reason, the value and what was expected.

mod devices;
pub mod formats;
mod script;
pub mod tool;
mod topic;

use serde_json::{Map, Value};

use crate::config::DecodeConfig;

pub use devices::{Decoded, Decoders};
pub use script::DecoderScripts;
pub use topic::{TopicLayout, TopicLayoutError};

/// Largest integer that a JSON number carries exactly in an IEEE 754 double (2^53).
const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// Longest accepted region or meter id, in bytes.
const MAX_ID_BYTES: usize = 128;

/// Most distinct event codes one reading may carry.
const MAX_EVENTS: usize = 64;

/// Field names the decoder reads; every other field is kept in [`Reading::extra`].
const KNOWN_FIELDS: &[&str] = &[
    "meter_id",
    "ts",
    "energy_import_kwh",
    "energy_export_kwh",
    "power_w",
    "voltage_v",
    "current_a",
    "power_factor",
    "events",
    "seq",
];

/// One validated meter reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Region taken from the topic.
    pub region: String,
    /// Meter id taken from the topic (or the payload when the topic has none).
    pub meter_id: String,
    /// Reading time in Unix milliseconds.
    pub ts_ms: i64,
    /// Cumulative import register in kWh.
    pub energy_import_kwh: f64,
    /// Cumulative export register in kWh.
    pub energy_export_kwh: Option<f64>,
    /// Instantaneous active power in watts.
    pub power_w: Option<f64>,
    /// Per-phase voltage in volts (one to three values).
    pub voltage_v: Vec<f64>,
    /// Per-phase current in amperes (one to three values).
    pub current_a: Vec<f64>,
    /// Power factor, -1 to 1.
    pub power_factor: Option<f64>,
    /// Meter event codes such as `cover_open` or `magnetic_field`.
    pub events: Vec<String>,
    /// Sequence number set by the device.
    pub seq: Option<u64>,
    /// Fields outside the schema, passed to rules unchanged.
    pub extra: Map<String, Value>,
}

impl Reading {
    /// Builds a reading with only the required fields set, for tests, benchmarks and tools.
    pub fn new(region: &str, meter_id: &str, ts_ms: i64, energy_import_kwh: f64) -> Reading {
        Reading {
            region: region.to_owned(),
            meter_id: meter_id.to_owned(),
            ts_ms,
            energy_import_kwh,
            energy_export_kwh: None,
            power_w: None,
            voltage_v: Vec::new(),
            current_a: Vec::new(),
            power_factor: None,
            events: Vec::new(),
            seq: None,
            extra: Map::new(),
        }
    }
}

/// Reason a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload exceeds `mqtt.max_payload_bytes`.
    Oversized,
    /// The topic does not match the configured layout.
    TopicMismatch,
    /// The payload is not valid JSON.
    MalformedJson,
    /// The payload contains NaN or Infinity, as a literal or a string.
    NonFinite,
    /// The payload is valid JSON but not an object.
    NotAnObject,
    /// A required field is absent.
    MissingField,
    /// A required field is `null`.
    NullField,
    /// A numeric field was sent as a string.
    NumberAsString,
    /// A field has the wrong JSON type.
    WrongType,
    /// An integer lies beyond 2^53 and cannot be represented exactly.
    IntegerTooLarge,
    /// A value that must not be negative is negative.
    NegativeValue,
    /// A value lies outside its physically plausible range.
    OutOfRange,
    /// The timestamp cannot be parsed.
    InvalidTimestamp,
    /// The timestamp lies before `decode.min_timestamp` or too far in the future.
    TimestampOutOfRange,
    /// The payload's meter id differs from the topic's.
    MeterMismatch,
    /// The payload does not have the structure of its device format.
    Malformed,
    /// The payload's checksum does not match its content.
    BadChecksum,
    /// The payload ends before its format's end marker.
    Truncated,
    /// A value carries a unit that its register cannot have.
    BadUnit,
    /// A value of a device format is not a number or not a valid value of its field.
    BadValue,
    /// A Rhai decoder script failed, threw an error or hit a sandbox limit.
    ScriptFailed,
    /// A device's partial messages cannot be held: `decode.max_pending_devices` is reached.
    TooManyDevices,
}

impl RejectReason {
    /// All reasons, in declaration order, for metrics.
    pub const ALL: [RejectReason; 22] = [
        RejectReason::Oversized,
        RejectReason::TopicMismatch,
        RejectReason::MalformedJson,
        RejectReason::NonFinite,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::NullField,
        RejectReason::NumberAsString,
        RejectReason::WrongType,
        RejectReason::IntegerTooLarge,
        RejectReason::NegativeValue,
        RejectReason::OutOfRange,
        RejectReason::InvalidTimestamp,
        RejectReason::TimestampOutOfRange,
        RejectReason::MeterMismatch,
        RejectReason::Malformed,
        RejectReason::BadChecksum,
        RejectReason::Truncated,
        RejectReason::BadUnit,
        RejectReason::BadValue,
        RejectReason::ScriptFailed,
        RejectReason::TooManyDevices,
    ];

    /// Returns the snake_case name used in metrics, logs and the rejected table.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::TopicMismatch => "topic_mismatch",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NonFinite => "non_finite",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::NullField => "null_field",
            RejectReason::NumberAsString => "number_as_string",
            RejectReason::WrongType => "wrong_type",
            RejectReason::IntegerTooLarge => "integer_too_large",
            RejectReason::NegativeValue => "negative_value",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
            RejectReason::MeterMismatch => "meter_mismatch",
            RejectReason::Malformed => "malformed",
            RejectReason::BadChecksum => "bad_checksum",
            RejectReason::Truncated => "truncated",
            RejectReason::BadUnit => "bad_unit",
            RejectReason::BadValue => "bad_value",
            RejectReason::ScriptFailed => "script_failed",
            RejectReason::TooManyDevices => "too_many_devices",
        }
    }
}

/// A rejected message: the reason and a sentence naming the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
}

impl Rejection {
    pub(crate) fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decodes telemetry payloads against a topic layout and validation bounds.
#[derive(Debug, Clone)]
pub struct Decoder {
    layout: TopicLayout,
    bounds: DecodeConfig,
    min_ts_ms: i64,
    max_payload_bytes: usize,
}

impl Decoder {
    /// Builds a decoder.
    ///
    /// # Errors
    /// Returns an error when the layout or `min_timestamp` is invalid.
    pub fn new(
        layout: &str,
        bounds: DecodeConfig,
        max_payload_bytes: usize,
    ) -> Result<Self, String> {
        let layout = TopicLayout::parse(layout).map_err(|e| e.to_string())?;
        let min_ts_ms = chrono::DateTime::parse_from_rfc3339(&bounds.min_timestamp)
            .map_err(|e| format!("invalid min_timestamp '{}': {e}", bounds.min_timestamp))?
            .timestamp_millis();
        Ok(Decoder {
            layout,
            bounds,
            min_ts_ms,
            max_payload_bytes,
        })
    }

    /// Decodes one message. `now_ms` is the current time in Unix milliseconds, used to reject
    /// timestamps too far in the future.
    ///
    /// # Errors
    /// Returns a [`Rejection`] for any payload or topic that does not satisfy the schema.
    pub fn decode(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<Reading, Rejection> {
        self.check_size(payload)?;
        let ids = self.layout.match_topic(topic).ok_or_else(|| {
            Rejection::new(
                RejectReason::TopicMismatch,
                format!(
                    "topic '{topic}' does not match the layout '{}'",
                    self.layout
                ),
            )
        })?;
        let map = parse_object(payload)?;
        let region = ids.region.unwrap_or(DEFAULT_REGION);
        self.reading_from_map(region, ids.meter_id, map, now_ms)
    }

    /// Checks the size of a payload against `mqtt.max_payload_bytes`.
    ///
    /// # Errors
    /// Returns an `oversized` rejection naming both sizes.
    pub fn check_size(&self, payload: &[u8]) -> Result<(), Rejection> {
        if payload.len() <= self.max_payload_bytes {
            return Ok(());
        }
        Err(Rejection::new(
            RejectReason::Oversized,
            format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                self.max_payload_bytes
            ),
        ))
    }

    /// Validates the fields of the gridwatch schema in `map`. The meter id comes from the topic
    /// when `meter_from_topic` is set, otherwise from the map's `meter_id` field.
    ///
    /// # Errors
    /// Returns a [`Rejection`] when a field is missing, of the wrong type or out of range, or
    /// when the map's meter id differs from the topic's.
    pub fn reading_from_map(
        &self,
        region: &str,
        meter_from_topic: Option<&str>,
        mut map: Map<String, Value>,
        now_ms: i64,
    ) -> Result<Reading, Rejection> {
        let meter_id = meter_id(&mut map, meter_from_topic)?;
        check_id("region", region)?;
        self.fields(region.to_owned(), meter_id, map, now_ms)
    }
}

/// Region of readings whose topic, decoder and region table name none.
pub const DEFAULT_REGION: &str = "default";

fn check_id(field: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!(
                "field '{field}': expected 1 to {MAX_ID_BYTES} bytes, got {}",
                id.len()
            ),
        ));
    }
    Ok(())
}

fn meter_id(map: &mut Map<String, Value>, from_topic: Option<&str>) -> Result<String, Rejection> {
    let from_payload = match map.remove("meter_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(wrong_type("meter_id", &other, "a string")),
    };
    let id = match (from_topic, from_payload) {
        (Some(topic), Some(payload)) if topic != payload => {
            return Err(Rejection::new(
                RejectReason::MeterMismatch,
                format!("field 'meter_id': '{payload}' differs from '{topic}' in the topic"),
            ));
        }
        (Some(topic), _) => topic.to_owned(),
        (None, Some(payload)) => payload,
        (None, None) => {
            return Err(Rejection::new(
                RejectReason::MissingField,
                "field 'meter_id' is missing and the topic carries no meter id",
            ));
        }
    };
    check_id("meter_id", &id)?;
    Ok(id)
}

impl Decoder {
    fn fields(
        &self,
        region: String,
        meter_id: String,
        mut map: Map<String, Value>,
        now_ms: i64,
    ) -> Result<Reading, Rejection> {
        let b = &self.bounds;
        let ts_ms = self.timestamp(map.get("ts"), now_ms)?;

        let energy_import_kwh = required(&map, "energy_import_kwh")?;
        check_range(
            "energy_import_kwh",
            energy_import_kwh,
            0.0,
            b.max_register_kwh,
        )?;
        let energy_export_kwh = number(&map, "energy_export_kwh")?;
        if let Some(v) = energy_export_kwh {
            check_range("energy_export_kwh", v, 0.0, b.max_register_kwh)?;
        }

        let power_w = number(&map, "power_w")?;
        if let Some(v) = power_w {
            let max_w = b.max_power_kw * 1000.0;
            check_range("power_w", v, -max_w, max_w)?;
        }
        let voltage_v = phases(&map, "voltage_v", b.max_voltage_v)?;
        let current_a = phases(&map, "current_a", b.max_current_a)?;
        let power_factor = number(&map, "power_factor")?;
        if let Some(v) = power_factor {
            check_range("power_factor", v, -1.0, 1.0)?;
        }

        let events = events(map.get("events"))?;
        let seq = match number_value(&map, "seq")? {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| wrong_type("seq", v, "a non-negative integer"))?,
            ),
        };

        // What is left of the map is the extra fields.
        for key in KNOWN_FIELDS {
            map.remove(*key);
        }
        Ok(Reading {
            region,
            meter_id,
            ts_ms,
            energy_import_kwh,
            energy_export_kwh,
            power_w,
            voltage_v,
            current_a,
            power_factor,
            events,
            seq,
            extra: map,
        })
    }

    fn timestamp(&self, value: Option<&Value>, now_ms: i64) -> Result<i64, Rejection> {
        let ts_ms = match value {
            None => {
                return Err(Rejection::new(
                    RejectReason::MissingField,
                    "field 'ts' is missing",
                ));
            }
            Some(Value::Null) => {
                return Err(Rejection::new(
                    RejectReason::NullField,
                    "field 'ts' is null",
                ));
            }
            Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    Rejection::new(
                        RejectReason::InvalidTimestamp,
                        format!("field 'ts': '{s}' is not an RFC 3339 time ({e})"),
                    )
                })?
                .timestamp_millis(),
            Some(v @ Value::Number(n)) => {
                check_integer("ts", n)?;
                n.as_i64()
                    .ok_or_else(|| wrong_type("ts", v, "Unix milliseconds as an integer"))?
            }
            Some(other) => {
                return Err(wrong_type(
                    "ts",
                    other,
                    "an RFC 3339 string or Unix milliseconds",
                ));
            }
        };
        let max_ms = now_ms.saturating_add(self.bounds.max_future_secs.saturating_mul(1000));
        if ts_ms < self.min_ts_ms || ts_ms > max_ms {
            // A time in seconds read as milliseconds lands in January 1970.
            let in_seconds = (0..self.min_ts_ms).contains(&ts_ms)
                && (self.min_ts_ms..=max_ms).contains(&ts_ms.saturating_mul(1000));
            let hint = if in_seconds {
                " (Unix seconds instead of milliseconds?)"
            } else {
                ""
            };
            return Err(Rejection::new(
                RejectReason::TimestampOutOfRange,
                format!(
                    "field 'ts': {} is outside the accepted range {} to {}{hint}",
                    format_ms(ts_ms),
                    format_ms(self.min_ts_ms),
                    format_ms(max_ms)
                ),
            ));
        }
        Ok(ts_ms)
    }
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Rejection::new(
            RejectReason::NotAnObject,
            format!(
                "payload is a JSON {}, expected an object",
                json_type(&other)
            ),
        )),
        Err(e) if contains_non_finite_literal(payload) => Err(Rejection::new(
            RejectReason::NonFinite,
            format!("payload contains NaN or Infinity, which JSON does not allow ({e})"),
        )),
        Err(e) => Err(Rejection::new(
            RejectReason::MalformedJson,
            format!("invalid JSON: {e}"),
        )),
    }
}

/// Returns true when a bare word outside JSON strings is `NaN`, `Infinity` or `inf` in any case,
/// so that a truncated payload with a string such as `"info"` still counts as malformed.
fn contains_non_finite_literal(payload: &[u8]) -> bool {
    outside_strings(payload)
        .split(|b| !b.is_ascii_alphabetic())
        .any(|word| {
            ["nan", "inf", "infinity"]
                .iter()
                .any(|literal| word.eq_ignore_ascii_case(literal.as_bytes()))
        })
}

/// Returns the payload with every JSON string, quotes included, replaced by one space.
fn outside_strings(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in payload {
        if in_string {
            in_string = escaped || byte != b'"';
            escaped = !escaped && byte == b'\\';
            continue;
        }
        in_string = byte == b'"';
        out.push(if in_string { b' ' } else { byte });
    }
    out
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong_type(field: &str, value: &Value, expected: &str) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!(
            "field '{field}': got a JSON {}, expected {expected}",
            json_type(value)
        ),
    )
}

fn required(map: &Map<String, Value>, field: &str) -> Result<f64, Rejection> {
    if map.get(field).is_some_and(Value::is_null) {
        return Err(Rejection::new(
            RejectReason::NullField,
            format!("field '{field}' is null"),
        ));
    }
    number(map, field)?.ok_or_else(|| {
        Rejection::new(
            RejectReason::MissingField,
            format!("field '{field}' is missing"),
        )
    })
}

/// Returns the field's JSON number; `None` when it is absent or `null`.
fn number_value<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Value>, Rejection> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => {
            check_integer(field, n)?;
            Ok(Some(v))
        }
        Some(Value::String(s)) => Err(string_number(field, s)),
        Some(other) => Err(wrong_type(field, other, "a JSON number")),
    }
}

fn number(map: &Map<String, Value>, field: &str) -> Result<Option<f64>, Rejection> {
    Ok(number_value(map, field)?.and_then(Value::as_f64))
}

fn element_number(field: &str, value: &Value) -> Result<f64, Rejection> {
    match value {
        Value::Number(n) => {
            check_integer(field, n)?;
            n.as_f64()
                .ok_or_else(|| wrong_type(field, value, "a finite number"))
        }
        Value::String(s) => Err(string_number(field, s)),
        other => Err(wrong_type(field, other, "a JSON number")),
    }
}

fn string_number(field: &str, s: &str) -> Rejection {
    let lower = s.trim().to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "nan" | "inf" | "+inf" | "-inf" | "infinity" | "-infinity" | "+infinity"
    ) {
        return Rejection::new(
            RejectReason::NonFinite,
            format!("field '{field}': \"{s}\" is not a finite number"),
        );
    }
    let prefix: String = s.chars().take(32).collect();
    Rejection::new(
        RejectReason::NumberAsString,
        format!("field '{field}': got the string \"{prefix}\", expected a JSON number"),
    )
}

fn check_integer(field: &str, n: &serde_json::Number) -> Result<(), Rejection> {
    let too_large = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u > MAX_SAFE_INTEGER,
        (None, Some(i)) => i.unsigned_abs() > MAX_SAFE_INTEGER,
        // A float: integers beyond 2^53 written without a fraction parse as u64 or i64 when they
        // fit, and as f64 beyond that.
        (None, None) => n
            .as_f64()
            .is_some_and(|f| f.abs() > MAX_SAFE_INTEGER as f64 && f.fract() == 0.0),
    };
    if too_large {
        return Err(Rejection::new(
            RejectReason::IntegerTooLarge,
            format!("field '{field}': {n} exceeds 2^53 and cannot be represented exactly"),
        ));
    }
    Ok(())
}

fn check_range(field: &str, value: f64, min: f64, max: f64) -> Result<(), Rejection> {
    if value < 0.0 && min >= 0.0 {
        return Err(Rejection::new(
            RejectReason::NegativeValue,
            format!("field '{field}': {value} is negative, expected at least {min}"),
        ));
    }
    if !(min..=max).contains(&value) {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("field '{field}': {value} is outside the plausible range {min} to {max}"),
        ));
    }
    Ok(())
}

fn phases(map: &Map<String, Value>, field: &str, max: f64) -> Result<Vec<f64>, Rejection> {
    let values = match map.get(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) if (1..=3).contains(&items.len()) => items
            .iter()
            .map(|v| element_number(field, v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(items)) => {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("field '{field}': {} phases, expected 1 to 3", items.len()),
            ));
        }
        Some(single) => vec![element_number(field, single)?],
    };
    for v in &values {
        check_range(field, *v, 0.0, max)?;
    }
    Ok(values)
}

fn events(value: Option<&Value>) -> Result<Vec<String>, Rejection> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("events", other, "an array of event codes")),
    };
    let mut codes: Vec<String> = Vec::new();
    for item in items {
        let code = match item {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_ID_BYTES => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            other => {
                return Err(wrong_type(
                    "events",
                    other,
                    "event codes as non-empty strings of at most 128 bytes or non-negative \
                     integers",
                ));
            }
        };
        // A repeated code adds nothing, and every copy would be repeated in the alert.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    if codes.len() > MAX_EVENTS {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!(
                "field 'events': {} distinct codes, expected at most {MAX_EVENTS}",
                codes.len()
            ),
        ));
    }
    Ok(codes)
}

/// Loads the decoder scripts folder when a decoder of `config` has format `rhai`; every script
/// those decoders name must be in it.
///
/// # Errors
/// Returns every problem of the folder and its scripts.
pub fn load_scripts(
    config: &crate::config::Config,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<Option<std::sync::Arc<DecoderScripts>>, script::ScriptError> {
    let required: Vec<String> = config
        .decoders
        .iter()
        .filter(|d| d.format == crate::config::DeviceFormat::Rhai)
        .filter_map(|d| d.script.clone())
        .collect();
    if required.is_empty() {
        return Ok(None);
    }
    let limits = script_limits(config);
    let scripts = DecoderScripts::load(
        &config.decode.scripts_dir,
        &required,
        &limits,
        config.decode.reload_debounce_ms,
        metrics,
    )?;
    Ok(Some(std::sync::Arc::new(scripts)))
}

/// Returns the sandbox limits of decoder scripts: those of `[rules]`, with the operations of
/// `decode.max_operations` and strings at least as long as `mqtt.max_payload_bytes`, so a
/// script can hold any payload it is given.
pub fn script_limits(config: &crate::config::Config) -> crate::config::RulesConfig {
    crate::config::RulesConfig {
        max_operations: config.decode.max_operations,
        max_string_bytes: config
            .rules
            .max_string_bytes
            .max(config.mqtt.max_payload_bytes),
        ..config.rules.clone()
    }
}

/// Builds every decoder of a configuration without running anything, for `gridwatch check`.
///
/// Returns one message per problem: a decoder script that does not compile or is missing, an
/// unreadable region table. An empty list means the decoders would load.
pub fn check(config: &crate::config::Config) -> Vec<String> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let scripts = match load_scripts(config, metrics) {
        Ok(scripts) => scripts,
        Err(error) => return error.problems.iter().map(ToString::to_string).collect(),
    };
    match Decoders::from_config(config, scripts) {
        Ok(_) => Vec::new(),
        Err(problem) => vec![problem],
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
