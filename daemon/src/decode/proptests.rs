//! Property tests: arbitrary bytes, topics and JSON never panic the decoder, and every payload
//! is either a reading within the configured bounds or a rejection with a reason and a detail.

use proptest::prelude::*;
use serde_json::json;

use super::*;

const NOW_MS: i64 = 1_764_806_400_000; // 2025-12-04T00:00:00Z
const LAYOUT: &str = "meters/{region}/{meter_id}/telemetry";
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Field names of the schema whose values are numbers.
const NUMBER_FIELDS: &[&str] = &[
    "energy_import_kwh",
    "energy_export_kwh",
    "power_w",
    "power_factor",
    "seq",
];

fn decoder() -> Decoder {
    Decoder::new(LAYOUT, DecodeConfig::default(), MAX_PAYLOAD_BYTES).unwrap()
}

fn topic(region: &str, meter_id: &str) -> String {
    format!("meters/{region}/{meter_id}/telemetry")
}

fn min_ts_ms() -> i64 {
    chrono::DateTime::parse_from_rfc3339(&DecodeConfig::default().min_timestamp)
        .unwrap()
        .timestamp_millis()
}

fn max_ts_ms(now_ms: i64) -> i64 {
    now_ms.saturating_add(DecodeConfig::default().max_future_secs * 1000)
}

/// Generates topic levels that the layout accepts as ids: 1 to 128 bytes without `/`.
fn id_level() -> impl Strategy<Value = String> {
    "[^/]{1,32}"
}

/// Generates floats at the edges of `f64` and of the decoder's bounds.
fn edge_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(1e308),
        Just(9_007_199_254_740_992.0),
        Just(9_007_199_254_740_994.0),
        Just(1e10),
        Just(1e10 + 1.0),
        Just(1.000_000_000_000_000_2),
        Just(-1.000_000_000_000_000_2),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        -1e4..1e4f64,
    ]
}

/// Generates integers at the edges of `i64`, `u64` and 2^53.
fn edge_integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(MAX_SAFE_INTEGER)),
        Just(json!(MAX_SAFE_INTEGER + 1)),
        Just(json!(-(MAX_SAFE_INTEGER as i64) - 1)),
        Just(json!(NOW_MS)),
        Just(json!(NOW_MS / 1000)),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000..1000i64).prop_map(Value::from),
    ]
}

/// Generates strings that look like numbers, non-finite values, timestamps or nothing in
/// particular.
fn edge_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "nan",
            "NaN",
            " -Infinity ",
            "inf",
            "+inf",
            "1e400",
            "-1e400",
            "12.5",
            "",
            "0x10",
            "2025-12-03T10:00:00Z",
            "2025-12-03T10:00:00.123+05:30",
            "2025-13-03T10:00:00Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "1764756000000",
            "cover_open",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,20}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_integer(),
        edge_float().prop_map(|f| json!(f)),
        edge_string().prop_map(Value::String),
    ]
}

/// Generates any JSON value: nested arrays and objects whose keys are often schema field names.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KNOWN_FIELDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// Generates objects whose schema fields contain arbitrary values, so every field check runs.
fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((json_key(), json_value()), 0..12)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

/// Checks what every decode result must satisfy: an accepted reading lies within the bounds
/// and carries the topic's ids, and a rejection names its cause.
fn check_outcome(
    result: &Result<Reading, Rejection>,
    ids: Option<(&str, &str)>,
    now_ms: i64,
) -> Result<(), TestCaseError> {
    match result {
        Ok(reading) => check_reading(reading, ids, now_ms),
        Err(rejection) => {
            prop_assert!(
                !rejection.detail.is_empty(),
                "empty detail for {:?}",
                rejection.reason
            );
            Ok(())
        }
    }
}

fn check_reading(
    reading: &Reading,
    ids: Option<(&str, &str)>,
    now_ms: i64,
) -> Result<(), TestCaseError> {
    let bounds = DecodeConfig::default();
    if let Some((region, meter_id)) = ids {
        prop_assert_eq!(&reading.region, region);
        prop_assert_eq!(&reading.meter_id, meter_id);
    }
    prop_assert!(reading.ts_ms >= min_ts_ms(), "ts {}", reading.ts_ms);
    prop_assert!(reading.ts_ms <= max_ts_ms(now_ms), "ts {}", reading.ts_ms);

    let import = reading.energy_import_kwh;
    prop_assert!(import.is_finite(), "import {import}");
    prop_assert!(import >= 0.0, "import {import}");
    prop_assert!(import <= bounds.max_register_kwh, "import {import}");
    if let Some(export) = reading.energy_export_kwh {
        prop_assert!(export.is_finite(), "export {export}");
        prop_assert!(export >= 0.0, "export {export}");
        prop_assert!(export <= bounds.max_register_kwh, "export {export}");
    }
    if let Some(power) = reading.power_w {
        prop_assert!(power.is_finite(), "power {power}");
        prop_assert!(power.abs() <= bounds.max_power_kw * 1000.0, "power {power}");
    }
    if let Some(pf) = reading.power_factor {
        prop_assert!((-1.0..=1.0).contains(&pf), "power factor {pf}");
    }

    check_phases("voltage_v", &reading.voltage_v, bounds.max_voltage_v)?;
    check_phases("current_a", &reading.current_a, bounds.max_current_a)?;
    for event in &reading.events {
        prop_assert!(!event.is_empty(), "empty event code");
        prop_assert!(
            event.len() <= MAX_ID_BYTES,
            "event code of {} bytes",
            event.len()
        );
    }
    if let Some(seq) = reading.seq {
        prop_assert!(seq <= MAX_SAFE_INTEGER, "seq {seq}");
    }
    for key in KNOWN_FIELDS {
        prop_assert!(!reading.extra.contains_key(*key), "'{}' left in extra", key);
    }
    Ok(())
}

fn check_phases(field: &str, values: &[f64], max: f64) -> Result<(), TestCaseError> {
    prop_assert!(values.len() <= 3, "{} phases in '{}'", values.len(), field);
    for v in values {
        prop_assert!(v.is_finite(), "'{}' holds {}", field, v);
        prop_assert!((0.0..=max).contains(v), "'{}' holds {}", field, v);
    }
    Ok(())
}

/// Returns true when `a` and `b` differ by at most a few units in the last place. serde_json
/// parses floats without the `float_roundtrip` feature, which may round the last bit.
fn nearly_equal(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

/// The fields of a valid reading, with values inside the default bounds.
#[derive(Debug, Clone)]
struct ValidFields {
    ts: TsForm,
    energy_import_kwh: f64,
    energy_export_kwh: Option<f64>,
    power_w: Option<f64>,
    voltage_v: Vec<f64>,
    current_a: Vec<f64>,
    power_factor: Option<f64>,
    events: Vec<Value>,
    seq: Option<u64>,
    extra: Vec<(String, Value)>,
    payload_meter_id: bool,
}

#[derive(Debug, Clone)]
enum TsForm {
    Millis(i64),
    Rfc3339 { ms: i64, offset_minutes: i32 },
}

impl TsForm {
    fn ms(&self) -> i64 {
        match self {
            TsForm::Millis(ms) | TsForm::Rfc3339 { ms, .. } => *ms,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            TsForm::Millis(ms) => json!(ms),
            TsForm::Rfc3339 { ms, offset_minutes } => {
                let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
                let time = chrono::DateTime::from_timestamp_millis(*ms)
                    .unwrap()
                    .with_timezone(&offset);
                json!(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
            }
        }
    }
}

fn in_range(max: f64) -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(max), 0.0..=max]
}

fn phase_values(max: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(in_range(max), 0..=3)
}

fn valid_fields() -> impl Strategy<Value = ValidFields> {
    let bounds = DecodeConfig::default();
    let ts_range = min_ts_ms()..=max_ts_ms(NOW_MS);
    let ts = prop_oneof![
        ts_range.clone().prop_map(TsForm::Millis),
        (ts_range, -23 * 60..=23 * 60i32)
            .prop_map(|(ms, offset_minutes)| TsForm::Rfc3339 { ms, offset_minutes }),
    ];
    let max_w = bounds.max_power_kw * 1000.0;
    let event = prop_oneof![
        "[a-z_]{1,32}".prop_map(Value::String),
        any::<u64>().prop_map(Value::from),
    ];
    let extra_key = "[a-z]{1,10}".prop_filter("not a schema field", |k| {
        !KNOWN_FIELDS.contains(&k.as_str())
    });
    (
        (
            ts,
            in_range(bounds.max_register_kwh),
            proptest::option::of(in_range(bounds.max_register_kwh)),
            proptest::option::of(prop_oneof![Just(-max_w), Just(max_w), -max_w..=max_w]),
            phase_values(bounds.max_voltage_v),
            phase_values(bounds.max_current_a),
        ),
        (
            proptest::option::of(-1.0..=1.0f64),
            prop::collection::vec(event, 0..4),
            proptest::option::of(0..=MAX_SAFE_INTEGER),
            prop::collection::btree_map(extra_key, json_leaf(), 0..3)
                .prop_map(|extra| extra.into_iter().collect()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (ts, energy_import_kwh, energy_export_kwh, power_w, voltage_v, current_a),
                (power_factor, events, seq, extra, payload_meter_id),
            )| ValidFields {
                ts,
                energy_import_kwh,
                energy_export_kwh,
                power_w,
                voltage_v,
                current_a,
                power_factor,
                events,
                seq,
                extra,
                payload_meter_id,
            },
        )
}

impl ValidFields {
    fn to_object(&self, meter_id: &str) -> Map<String, Value> {
        let mut map = Map::new();
        for (key, value) in &self.extra {
            map.insert(key.clone(), value.clone());
        }
        if self.payload_meter_id {
            map.insert("meter_id".into(), json!(meter_id));
        }
        map.insert("ts".into(), self.ts.to_json());
        map.insert("energy_import_kwh".into(), json!(self.energy_import_kwh));
        let optional = [
            ("energy_export_kwh", self.energy_export_kwh.map(Value::from)),
            ("power_w", self.power_w.map(Value::from)),
            ("power_factor", self.power_factor.map(Value::from)),
            ("seq", self.seq.map(Value::from)),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.into(), value);
            }
        }
        insert_phases(&mut map, "voltage_v", &self.voltage_v);
        insert_phases(&mut map, "current_a", &self.current_a);
        if !self.events.is_empty() {
            map.insert("events".into(), Value::Array(self.events.clone()));
        }
        map
    }
}

/// Writes one phase as a bare number and several as an array, both of which the schema allows.
fn insert_phases(map: &mut Map<String, Value>, field: &str, values: &[f64]) {
    match values {
        [] => {}
        [single] => {
            map.insert(field.into(), json!(single));
        }
        many => {
            map.insert(field.into(), json!(many));
        }
    }
}

fn check_round_trip(fields: &ValidFields, reading: &Reading) -> Result<(), TestCaseError> {
    prop_assert_eq!(reading.ts_ms, fields.ts.ms());
    prop_assert!(
        nearly_equal(reading.energy_import_kwh, fields.energy_import_kwh),
        "import {} became {}",
        fields.energy_import_kwh,
        reading.energy_import_kwh
    );
    check_optional(
        "energy_export_kwh",
        fields.energy_export_kwh,
        reading.energy_export_kwh,
    )?;
    check_optional("power_w", fields.power_w, reading.power_w)?;
    check_optional("power_factor", fields.power_factor, reading.power_factor)?;
    check_list("voltage_v", &fields.voltage_v, &reading.voltage_v)?;
    check_list("current_a", &fields.current_a, &reading.current_a)?;
    prop_assert_eq!(reading.seq, fields.seq);

    let events: Vec<String> = fields
        .events
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    prop_assert_eq!(&reading.events, &events);
    prop_assert_eq!(reading.extra.len(), fields.extra.len());
    for (key, sent) in &fields.extra {
        let decoded = reading.extra.get(key);
        prop_assert!(decoded.is_some(), "extra field '{}' lost", key);
        prop_assert!(
            json_nearly_equal(sent, decoded.unwrap()),
            "extra field '{}': {} became {}",
            key,
            sent,
            decoded.unwrap()
        );
    }
    Ok(())
}

fn check_optional(field: &str, sent: Option<f64>, got: Option<f64>) -> Result<(), TestCaseError> {
    match (sent, got) {
        (None, None) => Ok(()),
        (Some(s), Some(g)) => {
            prop_assert!(nearly_equal(s, g), "'{}': {} became {}", field, s, g);
            Ok(())
        }
        _ => Err(TestCaseError::fail(format!(
            "'{field}': {sent:?} became {got:?}"
        ))),
    }
}

fn check_list(field: &str, sent: &[f64], got: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(sent.len(), got.len(), "phases of '{}'", field);
    for (s, g) in sent.iter().zip(got) {
        prop_assert!(nearly_equal(*s, *g), "'{}': {} became {}", field, s, g);
    }
    Ok(())
}

fn json_nearly_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            nearly_equal(x.as_f64().unwrap(), y.as_f64().unwrap())
        }
        _ => a == b,
    }
}

/// A value of the wrong JSON type for a field, and the reason `docs/telemetry.md` gives for it.
#[derive(Debug, Clone)]
struct WrongValue {
    field: &'static str,
    value: Value,
}

impl WrongValue {
    fn expected_reason(&self) -> RejectReason {
        use RejectReason::*;
        match (self.field, &self.value) {
            ("ts", Value::String(_)) => InvalidTimestamp,
            ("ts" | "meter_id" | "events", _) => WrongType,
            (_, Value::String(s)) if is_non_finite_word(s) => NonFinite,
            (_, Value::String(_)) => NumberAsString,
            ("voltage_v" | "current_a", Value::Array(items)) if !(1..=3).contains(&items.len()) => {
                OutOfRange
            }
            ("voltage_v" | "current_a", Value::Array(items)) => {
                let wrong = WrongValue {
                    field: self.field,
                    value: items[0].clone(),
                };
                wrong.expected_reason()
            }
            _ => WrongType,
        }
    }
}

/// Returns true for the strings that the docs reject as `non_finite`, such as `"nan"`.
fn is_non_finite_word(s: &str) -> bool {
    let lower = s.trim().to_ascii_lowercase();
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    lower == "nan" || unsigned == "inf" || unsigned == "infinity"
}

fn non_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        Just(json!({})),
        Just(json!({"value": 1})),
        Just(json!([1, 2])),
        Just(json!([])),
    ]
}

fn number_like_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "12.5", "0", "-3", "1e400", "nan", "NaN", "Infinity", "-inf", " inf ", "", "abc",
        ])
        .prop_map(|s| json!(s)),
        any::<f64>().prop_map(|f| json!(f.to_string())),
    ]
}

/// Generates wrong-typed values for every schema field. Phase fields take a bare number or an array, so
/// their wrong values are the other types and arrays holding a wrong element or count.
fn wrong_value() -> impl Strategy<Value = WrongValue> {
    let number_field = (
        prop::sample::select(NUMBER_FIELDS),
        prop_oneof![non_number(), number_like_string()],
    );
    let seq = prop_oneof![
        (-(MAX_SAFE_INTEGER as i64)..0).prop_map(Value::from),
        (0.5..1e6f64).prop_map(|f| json!(f + 0.25)),
    ];
    let phase_element = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(json!({})),
        Just(json!([230.0])),
        number_like_string(),
    ];
    let phase_array = prop_oneof![
        phase_element.prop_map(|e| json!([e, 230.0])),
        Just(json!([])),
        Just(json!([230.0, 230.0, 230.0, 230.0])),
    ];
    let phase_field = (
        prop::sample::select(vec!["voltage_v", "current_a"]),
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            Just(json!({"l1": 230.0})),
            number_like_string(),
            phase_array,
        ],
    );
    let ts = prop_oneof![
        non_number(),
        (0.25..0.75f64).prop_map(|f| json!(NOW_MS as f64 + f)),
        "[a-z ]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "2025-12-03 10:00",
            "2025-13-03T10:00:00Z",
            "1764756000000",
            "",
        ])
        .prop_map(|s| json!(s)),
    ];
    let events = prop_oneof![
        non_number().prop_filter("not an array", |v| !v.is_array()),
        any::<u32>().prop_map(Value::from),
        Just(json!("cover_open")),
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            Just(json!("")),
            Just(json!(-1)),
            Just(json!(1.5)),
            Just(json!(["cover_open"])),
            Just(json!("x".repeat(MAX_ID_BYTES + 1))),
        ]
        .prop_map(|e| json!(["cover_open", e])),
    ];
    let meter_id = prop_oneof![
        non_number(),
        edge_integer(),
        edge_float().prop_map(|f| json!(f))
    ];
    prop_oneof![
        number_field.prop_map(|(field, value)| WrongValue { field, value }),
        seq.prop_map(|value| WrongValue {
            field: "seq",
            value
        }),
        phase_field.prop_map(|(field, value)| WrongValue { field, value }),
        ts.prop_map(|value| WrongValue { field: "ts", value }),
        events.prop_map(|value| WrongValue {
            field: "events",
            value
        }),
        meter_id.prop_map(|value| WrongValue {
            field: "meter_id",
            value
        }),
    ]
}

/// Non-finite and out-of-range number literals, which JSON text may contain but a
/// `serde_json::Value` cannot hold.
const ODD_LITERALS: &[&str] = &[
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "9007199254740993",
    "-0",
    "-0.0",
    "00",
    "1.",
    ".5",
    "+1",
    "0x10",
    "1_000",
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        payload in prop::collection::vec(any::<u8>(), 0..256),
        region in id_level(),
        meter_id in id_level(),
    ) {
        let result = decoder().decode(&topic(&region, &meter_id), &payload, NOW_MS);
        check_outcome(&result, Some((&region, &meter_id)), NOW_MS)?;
    }

    #[test]
    fn arbitrary_topics_never_panic(topic in "\\PC{0,80}", payload in json_object()) {
        let bytes = serde_json::to_vec(&payload).unwrap();
        let result = decoder().decode(&topic, &bytes, NOW_MS);
        check_outcome(&result, None, NOW_MS)?;
    }

    #[test]
    fn arbitrary_json_is_accepted_or_rejected_with_reason(
        payload in prop_oneof![1 => json_value(), 4 => json_object()],
        region in id_level(),
        meter_id in id_level(),
        now_ms in prop_oneof![Just(NOW_MS), any::<i64>()],
    ) {
        let bytes = serde_json::to_vec(&payload).unwrap();
        let result = decoder().decode(&topic(&region, &meter_id), &bytes, now_ms);
        check_outcome(&result, Some((&region, &meter_id)), now_ms)?;

        if let Err(rejection) = &result {
            let reason = rejection.reason;
            prop_assert_ne!(reason, RejectReason::MalformedJson, "{}", rejection.detail);
            prop_assert_ne!(reason, RejectReason::Oversized, "{}", rejection.detail);
            prop_assert_ne!(reason, RejectReason::TopicMismatch, "{}", rejection.detail);
            prop_assert_eq!(
                reason == RejectReason::NotAnObject,
                !payload.is_object(),
                "{}",
                rejection.detail
            );
        }
    }

    #[test]
    fn odd_number_literals_never_panic(
        literals in prop::collection::vec(
            (prop::sample::select(KNOWN_FIELDS), prop::sample::select(ODD_LITERALS)),
            1..6,
        ),
    ) {
        let members: Vec<String> =
            literals.iter().map(|(field, literal)| format!("\"{field}\":{literal}")).collect();
        let payload = format!("{{\"ts\":{NOW_MS},{}}}", members.join(","));
        let result = decoder().decode(&topic("south", "m-17"), payload.as_bytes(), NOW_MS);
        check_outcome(&result, Some(("south", "m-17")), NOW_MS)?;
    }

    #[test]
    fn non_finite_register_literal_rejected_as_non_finite(
        literal in prop::sample::select(vec!["NaN", "Infinity", "-Infinity"]),
        tariff in prop::sample::select(vec!["day", "info", "nano"]),
    ) {
        let payload = format!(
            r#"{{"ts":{NOW_MS},"tariff":"{tariff}","energy_import_kwh":{literal}}}"#
        );
        let result = decoder().decode(&topic("south", "m-17"), payload.as_bytes(), NOW_MS);
        prop_assert_eq!(result.unwrap_err().reason, RejectReason::NonFinite);
    }

    #[test]
    fn truncated_payload_rejected_as_malformed_json(
        fields in valid_fields(),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = Value::Object(fields.to_object("m-17")).to_string();
        let bytes = &text.as_bytes()[..cut.index(text.len())];
        let result = decoder().decode(&topic("south", "m-17"), bytes, NOW_MS);
        prop_assert_eq!(result.unwrap_err().reason, RejectReason::MalformedJson);
    }

    #[test]
    fn valid_reading_round_trips(
        fields in valid_fields(),
        region in id_level(),
        meter_id in id_level(),
    ) {
        let payload = serde_json::to_vec(&fields.to_object(&meter_id)).unwrap();
        let result = decoder().decode(&topic(&region, &meter_id), &payload, NOW_MS);
        let reading = match result {
            Ok(reading) => reading,
            Err(rejection) => return Err(TestCaseError::fail(rejection.detail)),
        };
        check_reading(&reading, Some((&region, &meter_id)), NOW_MS)?;
        check_round_trip(&fields, &reading)?;
    }

    #[test]
    fn wrong_typed_field_rejected_with_documented_reason(
        fields in valid_fields(),
        wrong in wrong_value(),
    ) {
        let mut map = fields.to_object("m-17");
        map.insert(wrong.field.into(), wrong.value.clone());
        let payload = serde_json::to_vec(&map).unwrap();
        let result = decoder().decode(&topic("south", "m-17"), &payload, NOW_MS);
        let rejection = match result {
            Ok(_) => return Err(TestCaseError::fail(format!("accepted {wrong:?}"))),
            Err(rejection) => rejection,
        };
        prop_assert_eq!(rejection.reason, wrong.expected_reason(), "{}", rejection.detail);
        prop_assert!(
            rejection.detail.contains(wrong.field),
            "detail '{}' does not name '{}'",
            rejection.detail,
            wrong.field
        );
    }

    #[test]
    fn missing_or_null_required_field_rejected(
        fields in valid_fields(),
        field in prop::sample::select(vec!["ts", "energy_import_kwh"]),
        null in any::<bool>(),
    ) {
        let mut map = fields.to_object("m-17");
        let expected = if null {
            map.insert(field.into(), Value::Null);
            RejectReason::NullField
        } else {
            map.remove(field);
            RejectReason::MissingField
        };
        let payload = serde_json::to_vec(&map).unwrap();
        let result = decoder().decode(&topic("south", "m-17"), &payload, NOW_MS);
        prop_assert_eq!(result.unwrap_err().reason, expected);
    }

    #[test]
    fn out_of_range_values_rejected(
        fields in valid_fields(),
        (field, value, expected) in out_of_range_value(),
    ) {
        let mut map = fields.to_object("m-17");
        map.insert(field.into(), value.clone());
        let payload = serde_json::to_vec(&map).unwrap();
        let result = decoder().decode(&topic("south", "m-17"), &payload, NOW_MS);
        let reason = result.map_err(|r| r.reason);
        prop_assert_eq!(reason, Err(expected), "'{}': {}", field, value);
    }
}

/// A field, a value of the right type outside its bounds, and the reason the docs give.
fn out_of_range_value() -> impl Strategy<Value = (&'static str, Value, RejectReason)> {
    use RejectReason::*;
    let bounds = DecodeConfig::default();
    let max_w = bounds.max_power_kw * 1000.0;
    let too_far_ms = max_ts_ms(NOW_MS) + 1..MAX_SAFE_INTEGER as i64;
    prop_oneof![
        (-1e9..-1e-9f64).prop_map(|v| ("energy_import_kwh", json!(v), NegativeValue)),
        (-1e9..-1e-9f64).prop_map(|v| ("energy_export_kwh", json!(v), NegativeValue)),
        (-1e3..-1e-9f64).prop_map(|v| ("voltage_v", json!([v]), NegativeValue)),
        (1.0..1e5f64).prop_map(move |v| ("energy_import_kwh", json!(1e10 + v), OutOfRange)),
        (1.0..1e5f64).prop_map(move |v| ("power_w", json!(-max_w - v), OutOfRange)),
        (1.0..1e3f64).prop_map(|v| ("power_factor", json!(1.0 + v), OutOfRange)),
        (1.0..1e3f64).prop_map(|v| ("current_a", json!([1.0, 10_000.0 + v]), OutOfRange)),
        (MAX_SAFE_INTEGER + 1..).prop_map(|v| ("seq", json!(v), IntegerTooLarge)),
        too_far_ms.prop_map(|v| ("ts", json!(v), TimestampOutOfRange)),
        (0..min_ts_ms()).prop_map(|v| ("ts", json!(v), TimestampOutOfRange)),
    ]
}
