use super::*;

const NOW_MS: i64 = 1_764_806_400_000; // 2025-12-04T00:00:00Z
const TOPIC: &str = "meters/south/m-17/telemetry";

fn decoder() -> Decoder {
    Decoder::new(
        "meters/{region}/{meter_id}/telemetry",
        DecodeConfig::default(),
        4096,
    )
    .unwrap()
}

#[test]
fn good_reading_decodes_all_fields() {
    let payload = br#"{"meter_id":"m-17","ts":"2025-12-03T10:00:00Z","energy_import_kwh":1234.5,
        "energy_export_kwh":2.0,"power_w":512.0,"voltage_v":[230.1,229.8,231.0],"current_a":2.5,
        "power_factor":0.97,"events":["cover_open",17],"seq":42,"tariff":"night"}"#;
    let r = decoder().decode(TOPIC, payload, NOW_MS).unwrap();
    assert_eq!(r.region, "south");
    assert_eq!(r.meter_id, "m-17");
    assert_eq!(r.ts_ms, 1_764_756_000_000);
    assert_eq!(r.energy_import_kwh, 1234.5);
    assert_eq!(r.energy_export_kwh, Some(2.0));
    assert_eq!(r.voltage_v, vec![230.1, 229.8, 231.0]);
    assert_eq!(r.current_a, vec![2.5]);
    assert_eq!(r.events, vec!["cover_open".to_owned(), "17".to_owned()]);
    assert_eq!(r.seq, Some(42));
    assert_eq!(r.extra.get("tariff"), Some(&Value::String("night".into())));
}

#[test]
fn repeated_event_codes_kept_once_and_count_capped() {
    let repeated = format!(
        r#"{{"ts":1764756000000,"energy_import_kwh":1,"events":[{}]}}"#,
        vec!["\"cover_open\""; 300].join(",")
    );
    let r = decoder()
        .decode(TOPIC, repeated.as_bytes(), NOW_MS)
        .unwrap();
    assert_eq!(r.events, vec!["cover_open".to_owned()]);

    let codes: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let many = format!(
        r#"{{"ts":1764756000000,"energy_import_kwh":1,"events":[{}]}}"#,
        codes.join(",")
    );
    let rejection = decoder()
        .decode(TOPIC, many.as_bytes(), NOW_MS)
        .unwrap_err();
    assert_eq!(rejection.reason, RejectReason::OutOfRange);
    assert!(
        rejection.detail.contains("65 distinct codes"),
        "{}",
        rejection.detail
    );
}

#[test]
fn unix_milliseconds_and_missing_meter_id_accepted() {
    let payload = br#"{"ts":1764756000000,"energy_import_kwh":1,"power_w":null}"#;
    let r = decoder().decode(TOPIC, payload, NOW_MS).unwrap();
    assert_eq!(r.ts_ms, 1_764_756_000_000);
    assert_eq!(r.power_w, None, "null optional field reads as absent");
}

#[test]
fn bad_inputs_rejected_with_reason() {
    use RejectReason::*;
    let ok_ts = r#""ts":1764756000000"#;
    let cases: Vec<(&str, String, String, RejectReason)> = vec![
        (
            "malformed json",
            TOPIC.into(),
            "{\"ts\": 1,".into(),
            MalformedJson,
        ),
        (
            "binary garbage",
            TOPIC.into(),
            "\u{1}\u{2}xyz".into(),
            MalformedJson,
        ),
        (
            "NaN literal",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":NaN}}"),
            NonFinite,
        ),
        (
            "Infinity literal",
            TOPIC.into(),
            format!("{{{ok_ts},\"power_w\":Infinity,\"energy_import_kwh\":1}}"),
            NonFinite,
        ),
        (
            "nan string",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":\"nan\"}}"),
            NonFinite,
        ),
        (
            "number as string",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":\"12.5\"}}"),
            NumberAsString,
        ),
        (
            "null required field",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":null}}"),
            NullField,
        ),
        (
            "missing required field",
            TOPIC.into(),
            format!("{{{ok_ts}}}"),
            MissingField,
        ),
        (
            "missing timestamp",
            TOPIC.into(),
            "{\"energy_import_kwh\":1}".into(),
            MissingField,
        ),
        (
            "null timestamp",
            TOPIC.into(),
            "{\"ts\":null,\"energy_import_kwh\":1}".into(),
            NullField,
        ),
        (
            "integer beyond 2^53",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":9007199254740993}}"),
            IntegerTooLarge,
        ),
        (
            "seq beyond 2^53",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1,\"seq\":18446744073709551615}}"),
            IntegerTooLarge,
        ),
        (
            "huge float integer",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1e300}}"),
            IntegerTooLarge,
        ),
        (
            "negative register",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":-5}}"),
            NegativeValue,
        ),
        (
            "absurd power",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1,\"power_w\":5e9}}"),
            OutOfRange,
        ),
        (
            "absurd voltage",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1,\"voltage_v\":[230,99999]}}"),
            OutOfRange,
        ),
        (
            "power factor above one",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1,\"power_factor\":1.5}}"),
            OutOfRange,
        ),
        (
            "timestamp in 1970",
            TOPIC.into(),
            "{\"ts\":\"1970-01-01T00:00:00Z\",\"energy_import_kwh\":1}".into(),
            TimestampOutOfRange,
        ),
        (
            "timestamp in seconds",
            TOPIC.into(),
            "{\"ts\":1764756000,\"energy_import_kwh\":1}".into(),
            TimestampOutOfRange,
        ),
        (
            "timestamp far in the future",
            TOPIC.into(),
            "{\"ts\":\"2099-01-01T00:00:00Z\",\"energy_import_kwh\":1}".into(),
            TimestampOutOfRange,
        ),
        (
            "unparseable timestamp",
            TOPIC.into(),
            "{\"ts\":\"yesterday\",\"energy_import_kwh\":1}".into(),
            InvalidTimestamp,
        ),
        ("array payload", TOPIC.into(), "[1,2,3]".into(), NotAnObject),
        (
            "wrong type",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":true}}"),
            WrongType,
        ),
        (
            "events not an array",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1,\"events\":\"x\"}}"),
            WrongType,
        ),
        (
            "topic too short",
            "meters/south/telemetry".into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1}}"),
            TopicMismatch,
        ),
        (
            "topic wrong suffix",
            "meters/south/m-17/status".into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1}}"),
            TopicMismatch,
        ),
        (
            "meter id mismatch",
            TOPIC.into(),
            format!("{{{ok_ts},\"energy_import_kwh\":1,\"meter_id\":\"other\"}}"),
            MeterMismatch,
        ),
        (
            "oversized payload",
            TOPIC.into(),
            format!(
                "{{{ok_ts},\"energy_import_kwh\":1,\"pad\":\"{}\"}}",
                "x".repeat(5000)
            ),
            Oversized,
        ),
    ];
    for (name, topic, payload, expected) in cases {
        let got = decoder().decode(&topic, payload.as_bytes(), NOW_MS);
        let rejection = got.expect_err(name);
        assert_eq!(
            rejection.reason, expected,
            "case '{name}': {}",
            rejection.detail
        );
        assert!(!rejection.detail.is_empty(), "case '{name}' has no detail");
    }
}

#[test]
fn rejection_detail_names_field_and_expectation() {
    let payload = br#"{"ts":1764756000000,"energy_import_kwh":"12.5"}"#;
    let detail = decoder().decode(TOPIC, payload, NOW_MS).unwrap_err().detail;
    assert!(detail.contains("energy_import_kwh"), "{detail}");
    assert!(detail.contains("12.5"), "{detail}");
    assert!(detail.contains("expected a JSON number"), "{detail}");
}

#[test]
fn layout_rejects_malformed_levels() {
    assert!(TopicLayout::parse("meters/a+/x").is_err());
    assert!(TopicLayout::parse("meters/{site/x").is_err());
    assert!(TopicLayout::parse("meters//x").is_err());
    assert!(TopicLayout::parse("meters/{region}/{region}").is_err());
}
