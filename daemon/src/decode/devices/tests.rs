use std::io::Write;
use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::decode::DecoderScripts;
use crate::metrics::Metrics;

/// 2026-12-04T00:00:00Z, after every fixture's time.
const NOW_MS: i64 = 1_796_342_400_000;
/// When the test's messages arrived, for formats whose payload carries no time.
const RECEIVED_MS: i64 = NOW_MS - 60_000;

const DSMR_V5: &str = include_str!("../formats/fixtures/dsmr_v5.txt");
const TASMOTA_POW: &str = include_str!("../formats/fixtures/tasmota_pow_sensor.json");
const TASMOTA_SML_OBIS: &str = include_str!("../formats/fixtures/tasmota_sml_obis.json");
const IEC_ISKRA: &str = include_str!("../formats/fixtures/iec62056_21_iskra.txt");
const SHELLY_EM: &str = include_str!("../formats/fixtures/shelly_em_status.json");
const SHELLY_EMDATA: &str = include_str!("../formats/fixtures/shelly_emdata_status.json");
const SHELLY_NOTIFY_EMDATA: &str = include_str!("../formats/fixtures/shelly_notify_emdata.json");

const DECODERS: &str = r#"
[[decoders]]
name = "tasmota"
format = "tasmota"
topic = "tele/{meter}/SENSOR"
region = "north"
utc_offset = "+01:00"

[[decoders]]
name = "sml"
format = "tasmota_sml"
topic = "sml/{region}/{meter}/SENSOR"
sml = { meter = "SML", import_kwh = "1_8_0", export_kwh = "2_8_0", power_w = "16_7_0" }

[[decoders]]
name = "p1"
format = "dsmr"
topic = "p1/{region}/{meter}"

[[decoders]]
name = "iec"
format = "iec62056_21"
topic = "iec/{meter}/readout"

[[decoders]]
name = "shelly"
format = "shelly_gen2"
topic = "shelly/{meter}/#"
region = "south"

[[decoders]]
name = "shelly-gen1"
format = "shelly_gen1"
topic = "legacy/{site}/shellies/{meter}/#"

[[decoders]]
name = "headend-json"
format = "gridwatch"
topic = "headend/{meter}/data"
region = "west"
"#;

fn decoders_from(text: &str) -> Decoders {
    let config = Config::parse(text).unwrap_or_else(|p| panic!("config: {p:?}"));
    Decoders::from_config(&config, None).unwrap()
}

fn decoders() -> Decoders {
    decoders_from(DECODERS)
}

fn decode(decoders: &Decoders, topic: &str, payload: &[u8]) -> Decoded {
    decoders.decode(topic, payload, RECEIVED_MS, NOW_MS).1
}

#[track_caller]
fn one_reading(decoded: Decoded) -> Reading {
    match decoded {
        Decoded::Readings(mut readings) if readings.len() == 1 => readings.remove(0),
        other => panic!("expected one reading, got {other:?}"),
    }
}

#[track_caller]
fn rejection(decoded: Decoded) -> Rejection {
    match decoded {
        Decoded::Rejected(rejection) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual}, expected {expected}"
    );
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn tasmota_sensor_becomes_a_reading() {
    let d = decoders();
    let reading = one_reading(decode(&d, "tele/plug-4/SENSOR", TASMOTA_POW.as_bytes()));
    assert_eq!(
        (reading.region.as_str(), reading.meter_id.as_str()),
        ("north", "plug-4")
    );
    assert_eq!(reading.ts_ms, ms("2024-03-05T14:22:10+01:00"));
    assert_close(reading.energy_import_kwh, 512.873, "energy");
    assert_close(reading.power_w.unwrap(), 1843.0, "power");
    assert_eq!(reading.voltage_v, vec![231.0]);
    assert_eq!(reading.current_a, vec![8.181]);
}

#[test]
fn tasmota_sml_keys_come_from_the_config() {
    let d = decoders();
    let topic = "sml/east/m-9/SENSOR";
    let reading = one_reading(decode(&d, topic, TASMOTA_SML_OBIS.as_bytes()));
    assert_eq!(
        (reading.region.as_str(), reading.meter_id.as_str()),
        ("east", "m-9")
    );
    assert_close(reading.energy_import_kwh, 7205.1187, "import");
    assert_close(reading.energy_export_kwh.unwrap(), 12.5, "export");
    assert_close(reading.power_w.unwrap(), 532.0, "power");
    assert_eq!(reading.voltage_v, vec![229.8, 230.6, 231.2]);
}

#[test]
fn dsmr_telegram_sums_tariffs_and_keeps_its_time() {
    let d = decoders();
    let reading = one_reading(decode(&d, "p1/nl/home-1", DSMR_V5.as_bytes()));
    assert_eq!(
        (reading.region.as_str(), reading.meter_id.as_str()),
        ("nl", "home-1")
    );
    assert_close(reading.energy_import_kwh, 4512.307 + 3877.046, "import");
    // `S` marks summer time, UTC+2.
    assert_eq!(reading.ts_ms, ms("2024-07-12T08:30:15+02:00"));
    assert_eq!(reading.voltage_v.len(), 3);
    assert_close(
        reading.extra["energy_import_tariff1_kwh"].as_f64().unwrap(),
        4512.307,
        "t1",
    );
    assert!(
        reading.extra.contains_key("device_id"),
        "{:?}",
        reading.extra
    );
}

#[test]
fn dsmr_bad_crc_and_truncation_rejected() {
    let d = decoders();
    let bad_crc = DSMR_V5.replace("!9BDA", "!0000");
    let r = rejection(decode(&d, "p1/nl/home-1", bad_crc.as_bytes()));
    assert_eq!(r.reason, RejectReason::BadChecksum);
    assert!(r.detail.starts_with("decoder 'p1': "), "{}", r.detail);

    let cut = &DSMR_V5[..DSMR_V5.len() / 2];
    let r = rejection(decode(&d, "p1/nl/home-1", cut.as_bytes()));
    assert_eq!(r.reason, RejectReason::Truncated, "{}", r.detail);
}

#[test]
fn dsmr_with_wrong_unit_is_rejected() {
    let d = decoders();
    let text = "/ISK5\\2M550T-1013\r\n\r\n1-0:1.8.1(004512.307*MJ)\r\n!\r\n";
    let r = rejection(decode(&d, "p1/nl/home-1", text.as_bytes()));
    assert_eq!(r.reason, RejectReason::BadUnit, "{}", r.detail);
    assert!(r.detail.contains("MJ"), "{}", r.detail);
}

#[test]
fn iec_readout_uses_receive_time() {
    let d = decoders();
    let readout = format!("/ISK5MT174-0001\r\n{IEC_ISKRA}");
    let reading = one_reading(decode(&d, "iec/m-71234567/readout", readout.as_bytes()));
    assert_eq!(reading.ts_ms, RECEIVED_MS);
    assert_eq!(reading.region, "default");
    assert_close(reading.energy_import_kwh, 12345.67, "import");
    assert_close(reading.energy_export_kwh.unwrap(), 321.5, "export");
}

#[test]
fn shelly_gen2_joins_held_power() {
    let d = decoders();
    let held = decode(&d, "shelly/pro3em-1/status/em:0", SHELLY_EM.as_bytes());
    assert_eq!(held, Decoded::Held);
    let reading = one_reading(decode(
        &d,
        "shelly/pro3em-1/status/emdata:0",
        SHELLY_EMDATA.as_bytes(),
    ));
    assert_eq!(
        (reading.region.as_str(), reading.meter_id.as_str()),
        ("south", "pro3em-1")
    );
    assert_close(reading.energy_import_kwh, 2020.55492, "import, Wh to kWh");
    assert_eq!(reading.voltage_v, vec![231.6, 230.2, 229.8]);
    assert!(reading.power_w.is_some(), "power from the held em status");

    // The held values were used once; the next energy reading has none.
    let next = one_reading(decode(
        &d,
        "shelly/pro3em-1/status/emdata:0",
        SHELLY_EMDATA.as_bytes(),
    ));
    assert!(next.voltage_v.is_empty());
}

#[test]
fn shelly_gen2_notification_and_other_topics() {
    let d = decoders();
    let topic = "shelly/pro3em-1/events/rpc";
    let reading = one_reading(decode(&d, topic, SHELLY_NOTIFY_EMDATA.as_bytes()));
    assert_eq!(reading.ts_ms, 1_717_243_260_000);
    let switch = br#"{"id":0,"output":true}"#;
    assert_eq!(
        decode(&d, "shelly/pro3em-1/status/switch:0", switch),
        Decoded::Ignored
    );
}

#[test]
fn shelly_gen1_topics_assemble_into_one_reading() {
    let d = decoders();
    let prefix = "legacy/site-2/shellies/em3-7";
    let mut last = Decoded::Ignored;
    for channel in 0..3 {
        for (quantity, value) in [("power", "100"), ("total", "1000"), ("total_returned", "0")] {
            let topic = format!("{prefix}/emeter/{channel}/{quantity}");
            last = decode(&d, &topic, value.as_bytes());
            if channel < 2 || quantity != "total_returned" {
                assert_eq!(last, Decoded::Held, "{topic}");
            }
        }
    }
    let reading = one_reading(last);
    assert_eq!(reading.meter_id, "em3-7");
    assert_eq!(reading.ts_ms, RECEIVED_MS);
    assert_close(reading.energy_import_kwh, 3.0, "three channels of 1000 Wh");
    assert_close(reading.power_w.unwrap(), 300.0, "power");
    assert_eq!(
        decode(&d, &format!("{prefix}/relay/0"), b"on"),
        Decoded::Ignored
    );
    let r = rejection(decode(&d, &format!("{prefix}/emeter/5/power"), b"1"));
    assert_eq!(r.reason, RejectReason::BadValue, "{}", r.detail);
}

#[test]
fn missing_fields_and_garbage_are_rejected_with_reasons() {
    let d = decoders();
    let cases: [(&str, &[u8], RejectReason); 5] = [
        (
            "tele/plug-4/SENSOR",
            br#"{"Time":"2024-03-05T14:22:10"}"#,
            RejectReason::MissingField,
        ),
        ("tele/plug-4/SENSOR", b"\xff\xfe", RejectReason::Malformed),
        (
            "tele/plug-4/SENSOR",
            br#"{"ENERGY":{"Total":"x"}}"#,
            RejectReason::BadValue,
        ),
        (
            "shelly/p/status/emdata:0",
            b"[1,2]",
            RejectReason::Malformed,
        ),
        (
            "headend/m-1/data",
            br#"{"ts":1,"energy_import_kwh":1}"#,
            RejectReason::TimestampOutOfRange,
        ),
    ];
    for (topic, payload, reason) in cases {
        let r = rejection(decode(&d, topic, payload));
        assert_eq!(r.reason, reason, "{topic}: {}", r.detail);
        assert!(r.detail.starts_with("decoder '"), "{}", r.detail);
    }
}

#[test]
fn device_values_checked_like_native() {
    let d = decoders();
    let huge = TASMOTA_POW.replace("\"Power\":1843", "\"Power\":99999999");
    let r = rejection(decode(&d, "tele/plug-4/SENSOR", huge.as_bytes()));
    assert_eq!(r.reason, RejectReason::OutOfRange, "{}", r.detail);
    assert!(r.detail.contains("power_w"), "{}", r.detail);
}

#[test]
fn unmatched_topics_use_native_layout() {
    let d = decoders();
    let native = br#"{"ts":1764756000000,"energy_import_kwh":1.5}"#;
    let reading = one_reading(decode(&d, "meters/north/m-1/telemetry", native));
    assert_eq!(
        (reading.region.as_str(), reading.meter_id.as_str()),
        ("north", "m-1")
    );
    let (name, decoded) = d.decode("headend/m-2/data", native, RECEIVED_MS, NOW_MS);
    assert_eq!(name, Some("headend-json"));
    assert_eq!(one_reading(decoded).region, "west");
    let r = rejection(decode(&d, "elsewhere/x", native));
    assert_eq!(r.reason, RejectReason::TopicMismatch);
}

#[test]
fn region_table_gives_each_meter_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("regions.csv");
    let mut file = std::fs::File::create(&table).unwrap();
    writeln!(file, "meter,region\n# test meters\nplug-4, east\n").unwrap();
    let text = format!(
        "[[decoders]]\nname = \"t\"\nformat = \"tasmota\"\ntopic = \"tele/{{meter}}/SENSOR\"\n\
         region = \"rest\"\nregion_table = \"{}\"\n",
        table.display()
    );
    let d = decoders_from(&text);
    let listed = one_reading(decode(&d, "tele/plug-4/SENSOR", TASMOTA_POW.as_bytes()));
    assert_eq!(listed.region, "east");
    let other = one_reading(decode(&d, "tele/plug-5/SENSOR", TASMOTA_POW.as_bytes()));
    assert_eq!(other.region, "rest");

    std::fs::write(&table, "plug-4\n").unwrap();
    let config = Config::parse(&text).unwrap();
    let error = Decoders::from_config(&config, None).err().unwrap();
    assert!(
        error.contains("line 1") && error.contains("expected meter,region"),
        "{error}"
    );
}

#[test]
fn held_devices_are_capped() {
    let text = format!("[decode]\nmax_pending_devices = 2\n{DECODERS}");
    let d = decoders_from(&text);
    for device in ["a", "b"] {
        let topic = format!("shelly/{device}/status/em:0");
        assert_eq!(decode(&d, &topic, SHELLY_EM.as_bytes()), Decoded::Held);
    }
    let r = rejection(decode(&d, "shelly/c/status/em:0", SHELLY_EM.as_bytes()));
    assert_eq!(r.reason, RejectReason::TooManyDevices);
    assert!(
        r.detail.contains("decode.max_pending_devices"),
        "{}",
        r.detail
    );
    // A device already held is still served.
    assert_eq!(
        decode(&d, "shelly/a/status/em:0", SHELLY_EM.as_bytes()),
        Decoded::Held
    );
}

#[test]
fn oversized_payloads_are_rejected_before_parsing() {
    let text = format!("[mqtt]\nmax_payload_bytes = 64\n{DECODERS}");
    let d = decoders_from(&text);
    let r = rejection(decode(&d, "p1/nl/home-1", DSMR_V5.as_bytes()));
    assert_eq!(r.reason, RejectReason::Oversized);
}

#[test]
fn ordered_formats_are_flagged() {
    let d = decoders();
    assert!(d.is_ordered("shelly/x/status/em:0"));
    assert!(d.is_ordered("legacy/s/shellies/x/emeter/0/power"));
    assert!(!d.is_ordered("tele/x/SENSOR"));
    assert!(!d.is_ordered("meters/a/b/telemetry"));
}

#[test]
fn config_reports_bad_decoders() {
    let text = r#"
[[decoders]]
name = "a"
format = "rhai"
topic = "x/{meter}"

[[decoders]]
name = "a"
format = "shelly_gen1"
topic = "shellies/{meter}/x"
utc_offset = "CET"
channels = 4

[[decoders]]
name = "b"
format = "morse"
topic = "y"
"#;
    let problems = Config::parse(text).unwrap_err().join("\n");
    for expected in [
        "decoders[0].script: required for format \"rhai\"",
        "decoders[1].name: 'a' is empty or used twice",
        "decoders[1].topic: 'shellies/{meter}/x' must name the device",
        "decoders[1].utc_offset: invalid value 'CET'",
        "decoders[1].channels: 4 is out of range",
        "decoders[2].format: unknown variant `morse`",
    ] {
        assert!(
            problems.contains(expected),
            "missing '{expected}' in:\n{problems}"
        );
    }
}

#[test]
fn subscriptions_add_each_decoder_filter_once() {
    let config = Config::parse(DECODERS).unwrap();
    let filters = config.subscriptions();
    assert_eq!(filters[0], "meters/+/+/telemetry");
    for filter in [
        "tele/+/SENSOR",
        "p1/+/+",
        "shelly/+/#",
        "legacy/+/shellies/+/#",
    ] {
        assert_eq!(
            filters.iter().filter(|f| *f == filter).count(),
            1,
            "{filter}"
        );
    }
}

fn script_decoders(dir: &std::path::Path, script: &str) -> (Decoders, Arc<DecoderScripts>) {
    std::fs::write(dir.join("headend.rhai"), script).unwrap();
    let text = format!(
        "[decode]\nscripts_dir = \"{}\"\nmax_operations = 10000\n\
         [[decoders]]\nname = \"he\"\nformat = \"rhai\"\nscript = \"headend\"\n\
         topic = \"he/{{region}}/#\"\n",
        dir.display()
    );
    let config = Config::parse(&text).unwrap();
    let required = ["headend".to_owned()];
    let metrics = Arc::new(Metrics::new());
    let limits = crate::decode::script_limits(&config);
    let scripts = DecoderScripts::load(dir, &required, &limits, 0, metrics).unwrap();
    let scripts = Arc::new(scripts);
    (
        Decoders::from_config(&config, Some(scripts.clone())).unwrap(),
        scripts,
    )
}

const HEADEND: &str = r#"
// Lines of `meter;unix seconds;kWh`, one reading each.
fn decode(topic, payload) {
    let readings = [];
    for line in payload.split("\n") {
        line.trim();
        if line == "" { continue; }
        let f = line.split(";");
        if f.len() != 3 { throw `expected meter;seconds;kWh, got '${line}'`; }
        readings.push(#{ meter_id: f[0], ts: parse_int(f[1]) * 1000, energy_import_kwh: parse_float(f[2]) });
    }
    readings
}
"#;

#[test]
fn rhai_decoder_returns_several_readings() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = script_decoders(dir.path(), HEADEND);
    let payload = b"m-1;1764756000;10.5\nm-2;1764756000;20.25\n";
    let Decoded::Readings(readings) = decode(&d, "he/west/batch", payload) else {
        panic!("expected readings");
    };
    let ids: Vec<(&str, &str)> = readings
        .iter()
        .map(|r| (r.region.as_str(), r.meter_id.as_str()))
        .collect();
    assert_eq!(ids, [("west", "m-1"), ("west", "m-2")]);
    assert_close(readings[1].energy_import_kwh, 20.25, "second reading");
}

#[test]
fn rhai_decoder_failures_are_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = script_decoders(dir.path(), HEADEND);
    let thrown = rejection(decode(&d, "he/west/batch", b"m-1;oops\n"));
    assert_eq!(thrown.reason, RejectReason::ScriptFailed);
    assert!(
        thrown
            .detail
            .contains("expected meter;seconds;kWh, got 'm-1;oops'"),
        "{}",
        thrown.detail
    );

    let not_text = rejection(decode(&d, "he/west/batch", b"\xff\x00"));
    assert_eq!(
        not_text.reason,
        RejectReason::Malformed,
        "{}",
        not_text.detail
    );

    let negative = rejection(decode(&d, "he/west/batch", b"m-1;1764756000;-4\n"));
    assert_eq!(
        negative.reason,
        RejectReason::NegativeValue,
        "{}",
        negative.detail
    );
}

#[test]
fn rhai_decoder_limits_trip() {
    let dir = tempfile::tempdir().unwrap();
    let endless = "fn decode(topic, payload) { loop { } }";
    let (d, _) = script_decoders(dir.path(), endless);
    let r = rejection(decode(&d, "he/west/x", b"1"));
    assert_eq!(r.reason, RejectReason::ScriptFailed);
    let limit = "hit the limit of 10000 operations per message (decode.max_operations)";
    assert!(r.detail.contains(limit), "{}", r.detail);

    let wrong = "fn decode(topic, payload) { 42 }";
    let (d, _) = script_decoders(dir.path(), wrong);
    let r = rejection(decode(&d, "he/west/x", b"1"));
    assert!(
        r.detail.contains("returned a number, expected a map"),
        "{}",
        r.detail
    );

    let nothing = "fn decode(topic, payload) { () }";
    let (d, _) = script_decoders(dir.path(), nothing);
    assert_eq!(decode(&d, "he/west/x", b"1"), Decoded::Ignored);
}

#[test]
fn broken_script_reload_keeps_old() {
    let dir = tempfile::tempdir().unwrap();
    let (d, scripts) = script_decoders(dir.path(), HEADEND);
    std::fs::write(
        dir.path().join("headend.rhai"),
        "fn decode(topic, payload) { let }",
    )
    .unwrap();
    let error = scripts.reload().unwrap_err().to_string();
    assert!(error.contains("headend.rhai:1"), "{error}");
    let still = decode(&d, "he/west/x", b"m-1;1764756000;1\n");
    assert!(matches!(still, Decoded::Readings(_)), "{still:?}");

    let json = "fn decode(topic, payload) { let v = parse_json(payload); \
                #{ meter_id: v.id, ts: v.t, energy_import_kwh: v.e / 1000.0 } }";
    std::fs::write(dir.path().join("headend.rhai"), json).unwrap();
    scripts.reload().unwrap();
    let reading = one_reading(decode(
        &d,
        "he/west/x",
        br#"{"id":"m-3","t":1764756000000,"e":1500}"#,
    ));
    assert_close(reading.energy_import_kwh, 1.5, "Wh to kWh in the script");

    std::fs::write(dir.path().join("headend.rhai"), "fn other() {}").unwrap();
    let error = scripts.reload().unwrap_err().to_string();
    assert!(
        error.contains("no function decode(topic, payload)"),
        "{error}"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Topics under every template of [`DECODERS`], plus ones that match none.
    fn topics() -> impl Strategy<Value = String> {
        let device = "[a-z0-9-]{1,12}";
        prop_oneof![
            device.prop_map(|d| format!("tele/{d}/SENSOR")),
            device.prop_map(|d| format!("sml/east/{d}/SENSOR")),
            device.prop_map(|d| format!("p1/nl/{d}")),
            device.prop_map(|d| format!("iec/{d}/readout")),
            (
                device,
                "(status/em:0|status/emdata:0|events/rpc|status/switch:0)"
            )
                .prop_map(|(d, rest)| format!("shelly/{d}/{rest}")),
            (
                device,
                0..4u8,
                "(power|total|total_returned|voltage|pf|energy)"
            )
                .prop_map(|(d, n, q)| format!("legacy/s/shellies/{d}/emeter/{n}/{q}")),
            device.prop_map(|d| format!("headend/{d}/data")),
            "[a-z/+#]{0,24}",
        ]
    }

    /// Payloads: the fixtures cut and changed at random, and arbitrary bytes.
    fn payloads() -> impl Strategy<Value = Vec<u8>> {
        let fixtures = [
            DSMR_V5,
            TASMOTA_POW,
            TASMOTA_SML_OBIS,
            IEC_ISKRA,
            SHELLY_EM,
            SHELLY_EMDATA,
            SHELLY_NOTIFY_EMDATA,
        ];
        prop_oneof![
            (0..fixtures.len(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                move |(f, at, byte)| {
                    let mut bytes = fixtures[f].as_bytes().to_vec();
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                    bytes
                }
            ),
            (0..fixtures.len(), any::<prop::sample::Index>()).prop_map(move |(f, at)| {
                let bytes = fixtures[f].as_bytes();
                bytes[..at.index(bytes.len())].to_vec()
            }),
            prop::collection::vec(any::<u8>(), 0..256),
            "-?[0-9]{0,12}(\\.[0-9]{0,6})?".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn any_message_decoded_or_rejected(
            messages in prop::collection::vec((topics(), payloads()), 1..24)
        ) {
            let d = decoders();
            for (topic, payload) in messages {
                match decode(&d, &topic, &payload) {
                    Decoded::Readings(readings) => {
                        prop_assert!(!readings.is_empty());
                        for r in readings {
                            prop_assert!(r.energy_import_kwh >= 0.0);
                            prop_assert!(r.ts_ms <= NOW_MS + 86_400_000);
                            prop_assert!(!r.meter_id.is_empty() && !r.region.is_empty());
                        }
                    }
                    Decoded::Rejected(r) => prop_assert!(!r.detail.is_empty(), "{topic}"),
                    Decoded::Held | Decoded::Ignored => {}
                }
            }
        }
    }
}

#[test]
fn completed_and_stale_devices_free_their_slots() {
    let text = format!("[decode]\nmax_pending_devices = 2\n{DECODERS}");
    let d = decoders_from(&text);
    let topic = |device: &str, channel: u8, quantity: &str| {
        format!("legacy/s/shellies/{device}/emeter/{channel}/{quantity}")
    };
    // Other topics of a device take no slot.
    for device in ["a", "b", "c"] {
        let relay = format!("legacy/s/shellies/{device}/relay/0");
        assert_eq!(decode(&d, &relay, b"on"), Decoded::Ignored);
    }
    assert_eq!(decode(&d, &topic("a", 0, "energy"), b"5"), Decoded::Ignored);
    assert_eq!(decode(&d, &topic("a", 0, "power"), b"5"), Decoded::Held);
    assert_eq!(decode(&d, &topic("b", 0, "power"), b"5"), Decoded::Held);
    let full = rejection(decode(&d, &topic("c", 0, "power"), b"5"));
    assert_eq!(full.reason, RejectReason::TooManyDevices);

    // A device whose reading completes frees its slot.
    for channel in 0..3 {
        decode(&d, &topic("a", channel, "total"), b"10");
        decode(&d, &topic("a", channel, "total_returned"), b"0");
    }
    assert_eq!(decode(&d, &topic("c", 0, "power"), b"5"), Decoded::Held);

    // A device silent for longer than the hold time gives way to a new one.
    let later = RECEIVED_MS + HOLD_MAX_AGE_MS + 1;
    let (_, decoded) = d.decode(&topic("e", 0, "power"), b"5", later, NOW_MS);
    assert_eq!(decoded, Decoded::Held);
}

#[test]
fn shelly_gen1_negative_total_is_rejected_on_arrival() {
    let d = decoders();
    let r = rejection(decode(
        &d,
        "legacy/s/shellies/x/emeter/1/total_returned",
        b"-1",
    ));
    assert_eq!(r.reason, RejectReason::NegativeValue);
    assert!(r.detail.contains("total_returned: -1 Wh"), "{}", r.detail);
}

#[test]
fn non_finite_values_are_named() {
    let d = decoders();
    let tasmota = TASMOTA_POW.replace("\"Power\":1843", "\"Power\":nan");
    let r = rejection(decode(&d, "tele/plug-4/SENSOR", tasmota.as_bytes()));
    assert_eq!(r.reason, RejectReason::NonFinite, "{}", r.detail);

    let dir = tempfile::tempdir().unwrap();
    let script = "fn decode(topic, payload) { #{ meter_id: \"m\", ts: 1764756000000, \
                  energy_import_kwh: 1.0, power_w: 0.0 / 0.0 } }";
    let (d, _) = script_decoders(dir.path(), script);
    let r = rejection(decode(&d, "he/west/x", b"1"));
    assert_eq!(r.reason, RejectReason::NonFinite, "{}", r.detail);
    assert!(r.detail.contains("'power_w'"), "{}", r.detail);
}

#[test]
fn rhai_decoder_returns_hundreds_of_readings() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = script_decoders(dir.path(), HEADEND);
    let payload: String = (0..200)
        .map(|i| format!("m-{i};1764756000;{i}.5\n"))
        .collect();
    let Decoded::Readings(readings) = decode(&d, "he/west/batch", payload.as_bytes()) else {
        panic!("expected readings");
    };
    assert_eq!(readings.len(), 200);
}

#[test]
fn removing_a_named_script_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (d, scripts) = script_decoders(dir.path(), HEADEND);
    std::fs::remove_file(dir.path().join("headend.rhai")).unwrap();
    let error = scripts.reload().unwrap_err().to_string();
    assert!(
        error.contains("missing, but a decoder names this script"),
        "{error}"
    );
    let still = decode(&d, "he/west/x", b"m-1;1764756000;1\n");
    assert!(matches!(still, Decoded::Readings(_)), "{still:?}");
}

#[test]
fn seconds_hint_only_for_seconds() {
    let d = decoders();
    let seconds = br#"{"ts":1764756000,"energy_import_kwh":1}"#;
    let r = rejection(decode(&d, "headend/m-1/data", seconds));
    assert!(
        r.detail.contains("Unix seconds instead of milliseconds?"),
        "{}",
        r.detail
    );
    let year_2100 = br#"{"ts":4102444800000,"energy_import_kwh":1}"#;
    let r = rejection(decode(&d, "headend/m-1/data", year_2100));
    assert!(!r.detail.contains("Unix seconds"), "{}", r.detail);
}

#[test]
fn region_table_reports_every_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("regions.csv");
    std::fs::write(
        &table,
        "m1,north\nm2,a,b\n\"m3\",\"south\"\nm1,east\nm4,bad/region\n",
    )
    .unwrap();
    let text = format!(
        "[[decoders]]\nname = \"t\"\nformat = \"tasmota\"\ntopic = \"tele/{{meter}}/SENSOR\"\n\
         region_table = \"{}\"\n",
        table.display()
    );
    let config = Config::parse(&text).unwrap();
    let error = Decoders::from_config(&config, None).err().unwrap();
    for line in [
        "line 2:",
        "line 3:",
        "line 4: meter 'm1' is listed twice",
        "line 5:",
    ] {
        assert!(error.contains(line), "missing '{line}' in {error}");
    }
}

#[test]
fn config_rejects_empty_region_and_script_file_names() {
    let text = "[[decoders]]\nname = \"a\"\nformat = \"rhai\"\nscript = \"x.rhai\"\n\
                topic = \"x/{meter}\"\nregion = \"\"\n";
    let problems = Config::parse(text).unwrap_err().join("\n");
    assert!(
        problems.contains("decoders[0].region: invalid value ''"),
        "{problems}"
    );
    assert!(
        problems.contains("decoders[0].script: 'x.rhai' names the file"),
        "{problems}"
    );
}
