//! Device formats through real Mosquitto. Tasmota, Shelly Gen2, DSMR P1 and a Rhai head-end
//! decoder, each on its own topic layout, feed the same rules as native readings and raise the
//! same alert. Broken device messages are rejected by reason and kept. A decoder script
//! replaced on disk takes effect without a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    Daemon, Mosquitto, alerts, flat_load, get_json, get_text, metric, publish_all, repo_root,
    wait_until_processed,
};

/// Hours of flat load per meter; the shipped mining rule needs 120 hours of a 168-hour window.
const HOURS: i64 = 170;
/// Offset of the devices' local clocks from UTC: summer time in central Europe.
const LOCAL_OFFSET_SECS: i64 = 2 * 3600;

fn hour_ms(h: i64) -> i64 {
    1_750_000_000_000 / 3_600_000 * 3_600_000 + h * 3_600_000
}

fn register_kwh(h: i64) -> f64 {
    5_000.0 + h as f64 * 6.5
}

fn local(h: i64, format: &str) -> String {
    let utc =
        chrono::DateTime::from_timestamp_millis(hour_ms(h) + LOCAL_OFFSET_SECS * 1000).unwrap();
    utc.naive_utc().format(format).to_string()
}

fn tasmota(meter: &str, h: i64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"Time":"{}","ENERGY":{{"TotalStartTime":"2024-01-01T00:00:00","Total":{:.3},"Yesterday":156.0,"Today":6.5,"Power":6500,"Factor":0.99,"Voltage":231,"Current":28.4}}}}"#,
        local(h, "%Y-%m-%dT%H:%M:%S"),
        register_kwh(h)
    );
    (format!("tele/{meter}/SENSOR"), payload.into_bytes())
}

fn shelly(meter: &str, h: i64) -> Vec<(String, Vec<u8>)> {
    let em = r#"{"id":0,"a_current":9.4,"a_voltage":230.1,"a_act_power":2166.0,"a_aprt_power":2200.0,"b_current":9.4,"b_voltage":230.4,"b_act_power":2167.0,"b_aprt_power":2200.0,"c_current":9.4,"c_voltage":229.8,"c_act_power":2167.0,"c_aprt_power":2200.0,"n_current":null,"total_current":28.2,"total_act_power":6500.0,"total_aprt_power":6600.0}"#;
    let notify = format!(
        r#"{{"src":"shellypro3em-{meter}","dst":"shellypro3em-{meter}/events","method":"NotifyStatus","params":{{"ts":{}.0,"emdata:0":{{"id":0,"total_act":{:.2},"total_act_ret":0.0}}}}}}"#,
        hour_ms(h) / 1000,
        register_kwh(h) * 1000.0
    );
    vec![
        (
            format!("shelly/{meter}/status/em:0"),
            em.as_bytes().to_vec(),
        ),
        (format!("shelly/{meter}/events/rpc"), notify.into_bytes()),
    ]
}

fn dsmr_telegram(h: i64) -> String {
    let half = register_kwh(h) / 2.0;
    let body = format!(
        "/ISK5\\2M550T-1013\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0({}S)\r\n\
         0-0:96.1.1(4530303531303032343638313335373930)\r\n\
         1-0:1.8.1({half:010.3}*kWh)\r\n1-0:1.8.2({half:010.3}*kWh)\r\n\
         1-0:2.8.1(000000.000*kWh)\r\n1-0:2.8.2(000000.000*kWh)\r\n0-0:96.14.0(0002)\r\n\
         1-0:1.7.0(06.500*kW)\r\n1-0:2.7.0(00.000*kW)\r\n\
         1-0:32.7.0(230.1*V)\r\n1-0:52.7.0(230.4*V)\r\n1-0:72.7.0(229.8*V)\r\n!",
        local(h, "%y%m%d%H%M%S")
    );
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(body.as_bytes());
    format!("{body}{crc:04X}\r\n")
}

fn headend(meter: &str, h: i64) -> (String, Vec<u8>) {
    let ts = chrono::DateTime::from_timestamp_millis(hour_ms(h))
        .unwrap()
        .to_rfc3339();
    let payload = format!(
        "HE1|south|{ts}\nM|{meter}|E+={:.0}Wh|P=6.5kW\n",
        register_kwh(h) * 1000.0
    );
    ("headend/site-7/frames".into(), payload.into_bytes())
}

/// Broken messages and the reason each must be rejected with.
fn broken() -> Vec<(&'static str, String, Vec<u8>)> {
    let good = dsmr_telegram(0);
    let bad_crc = good.replace(&good[good.len() - 6..], "0000\r\n");
    vec![
        (
            "bad_checksum",
            "p1/south/p1-meter".into(),
            bad_crc.into_bytes(),
        ),
        (
            "truncated",
            "p1/south/p1-meter".into(),
            good.as_bytes()[..good.len() / 2].to_vec(),
        ),
        (
            "missing_field",
            "tele/plug-1/SENSOR".into(),
            br#"{"Time":"2025-06-15T17:00:00","ANALOG":{"A0":12}}"#.to_vec(),
        ),
        (
            "bad_value",
            "shelly/pro3em-1/status/emdata:0".into(),
            br#"{"id":0,"total_act":"lots"}"#.to_vec(),
        ),
        (
            "script_failed",
            "headend/site-7/frames".into(),
            b"HE9|south|yesterday\n".to_vec(),
        ),
    ]
}

fn config(broker: &str, scripts: &std::path::Path) -> String {
    format!(
        r#"[mqtt]
url = "{broker}"
client_id = "gridwatch-devices"

[rules]
dir = "{rules}"

[decode]
scripts_dir = "{scripts}"
reload_debounce_ms = 100

[[decoders]]
name = "tasmota"
format = "tasmota"
topic = "tele/{{meter}}/SENSOR"
region = "south"
utc_offset = "+02:00"

[[decoders]]
name = "shelly"
format = "shelly_gen2"
topic = "shelly/{{meter}}/#"
region = "south"

[[decoders]]
name = "p1"
format = "dsmr"
topic = "p1/{{region}}/{{meter}}"

[[decoders]]
name = "headend"
format = "rhai"
script = "headend"
topic = "headend/{{site}}/frames"
"#,
        rules = repo_root().join("rules").display(),
        scripts = scripts.display(),
    )
}

fn messages() -> Vec<(String, Vec<u8>)> {
    let mut messages = flat_load("native-1", 0, HOURS);
    for h in 0..HOURS {
        messages.push(tasmota("plug-1", h));
        messages.extend(shelly("pro3em-1", h));
        messages.push(("p1/south/p1-meter".into(), dsmr_telegram(h).into_bytes()));
        messages.push(headend("he-1", h));
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_formats_alert_like_native() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("decoders");
    std::fs::create_dir_all(&scripts).unwrap();
    let shipped = repo_root().join("config/decoders/headend.rhai");
    std::fs::copy(&shipped, scripts.join("headend.rhai")).unwrap();
    let daemon = Daemon::start(dir.path(), &config(&broker.url(), &scripts));

    let mut all = messages();
    all.extend(
        broken()
            .into_iter()
            .map(|(_, topic, payload)| (topic, payload)),
    );
    publish_all(broker.port, all).await;
    wait_until_processed(&daemon).await;

    let found: BTreeSet<(String, String, String, String)> = alerts(&daemon)
        .await
        .iter()
        .map(|a| {
            let text = |key: &str| a[key].as_str().unwrap_or_default().to_owned();
            (
                text("meter"),
                text("region"),
                text("kind"),
                text("severity"),
            )
        })
        .collect();
    let native = ("native-1", "south", "mining", "medium");
    let expected: BTreeSet<(String, String, String, String)> =
        ["native-1", "plug-1", "pro3em-1", "p1-meter", "he-1"]
            .iter()
            .map(|meter| {
                let (_, region, kind, severity) = native;
                (
                    meter.to_string(),
                    region.into(),
                    kind.into(),
                    severity.into(),
                )
            })
            .collect();
    assert_eq!(found, expected, "log:\n{}", daemon.log());

    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let decoded = |decoder: &str, outcome: &str| {
        let name = format!(
            "gridwatch_messages_decoded_total{{decoder=\"{decoder}\",outcome=\"{outcome}\"}}"
        );
        metric(&text, &name).unwrap_or(0.0)
    };
    for decoder in ["tasmota", "shelly", "p1", "headend"] {
        assert_eq!(decoded(decoder, "reading"), HOURS as f64, "{decoder}");
    }
    assert_eq!(decoded("shelly", "held"), HOURS as f64, "em status held");

    let rejected = get_json(&format!("{}/api/rejected?limit=100", daemon.http)).await;
    let rejected = rejected.as_array().expect("rejected array");
    assert_eq!(rejected.len(), broken().len(), "{rejected:#?}");
    for (reason, topic, payload) in broken() {
        let row = rejected
            .iter()
            .find(|r| r["reason"] == reason)
            .unwrap_or_else(|| panic!("no row for {reason}: {rejected:#?}"));
        assert_eq!(row["topic"], topic.as_str(), "{reason}");
        let kept = row["payload"].as_str().unwrap();
        assert!(String::from_utf8_lossy(&payload).starts_with(&kept[..kept.len().min(20)]));
        assert!(
            row["detail"].as_str().unwrap().starts_with("decoder '"),
            "{row}"
        );
    }

    replace_script_and_decode(&daemon, &scripts, broker.port).await;
}

/// Replaces the head-end script with one that also reads `HE2` headers and checks that a
/// frame it used to reject now becomes a reading.
async fn replace_script_and_decode(daemon: &Daemon, scripts: &std::path::Path, port: u16) {
    let shipped = std::fs::read_to_string(scripts.join("headend.rhai")).unwrap();
    let accepting = shipped.replace(
        r#"header[0] != "HE1""#,
        r#"(header[0] != "HE1" && header[0] != "HE2")"#,
    );
    assert_ne!(accepting, shipped, "the header check moved");
    let partial = scripts.join(".headend.rhai.partial");
    std::fs::write(&partial, accepting).unwrap();
    std::fs::rename(&partial, scripts.join("headend.rhai")).unwrap();
    daemon.wait_for_log("decoder scripts reloaded", Duration::from_secs(20));

    let ts = chrono::DateTime::from_timestamp_millis(hour_ms(HOURS))
        .unwrap()
        .to_rfc3339();
    let frame = format!("HE2|south|{ts}\nM|he-2|E+=12kWh\n");
    publish_all(
        port,
        vec![("headend/site-7/frames".into(), frame.into_bytes())],
    )
    .await;
    wait_until_processed(daemon).await;
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let name = "gridwatch_messages_decoded_total{decoder=\"headend\",outcome=\"reading\"}";
    assert_eq!(metric(&text, name), Some(HOURS as f64 + 1.0));
    let reloads = "gridwatch_decoder_reloads_total{outcome=\"success\"}";
    assert_eq!(metric(&text, reloads), Some(1.0));
}

#[test]
fn decode_test_shows_readings_and_rejections() {
    let root = repo_root();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .current_dir(&root)
        .args([
            "decode",
            "test",
            "--decoder",
            "config/decoders/headend.rhai",
        ])
        .args(["--input", "config/decoders/headend-samples.jsonl"])
        .args(["--topic", "headend/{site}/frames"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a sample is rejected: {stdout}"
    );
    assert!(stdout.contains(r#""meter_id":"m-1002""#), "{stdout}");
    assert!(
        stdout.contains(r#""energy_import_kwh":88.2"#),
        "Wh to kWh: {stdout}"
    );
    assert!(stdout.contains("rejected (script_failed)"), "{stdout}");
    assert!(
        stdout.contains("'6.5MW'"),
        "the bad value is named: {stdout}"
    );
    assert!(
        stdout.ends_with("4 samples: 1 gave 2 readings, 2 rejected, 0 held, 1 ignored\n"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("p1.jsonl");
    let telegram = serde_json::json!({"topic": "p1/south/m-9", "payload": dsmr_telegram(0)});
    std::fs::write(&samples, format!("{telegram}\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args([
            "decode",
            "test",
            "--decoder",
            "dsmr",
            "--topic",
            "p1/{region}/{meter}",
        ])
        .arg("--input")
        .arg(&samples)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(r#""region":"south""#), "{stdout}");
    assert!(stdout.contains(r#""energy_import_kwh":5000.0"#), "{stdout}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["decode", "test", "--decoder", "morse", "--input"])
        .arg(&samples)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("'morse' is not a .rhai file"), "{stderr}");
}
