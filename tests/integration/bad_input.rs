//! Bad payloads through real Mosquitto: each is rejected with its reason and kept, and a good
//! reading sent after them still raises its alert.

use std::collections::HashMap;

use crate::support::{
    Daemon, Mosquitto, get_json, get_text, metric, publish_all, repo_root, wait_until_processed,
};

const TS: &str = r#""ts":"2025-06-01T12:00:00Z""#;

fn cases() -> Vec<(&'static str, String, String)> {
    let topic = "meters/south/m-bad/telemetry".to_owned();
    vec![
        ("malformed_json", topic.clone(), "{\"ts\": ".into()),
        (
            "non_finite",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":NaN}}"),
        ),
        (
            "non_finite",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":1,\"power_w\":Infinity}}"),
        ),
        (
            "non_finite",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":\"nan\"}}"),
        ),
        (
            "number_as_string",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":\"42.0\"}}"),
        ),
        (
            "null_field",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":null}}"),
        ),
        ("missing_field", topic.clone(), format!("{{{TS}}}")),
        (
            "integer_too_large",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":9007199254740993}}"),
        ),
        (
            "negative_value",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":-3.5}}"),
        ),
        (
            "out_of_range",
            topic.clone(),
            format!("{{{TS},\"energy_import_kwh\":1,\"power_w\":1e12}}"),
        ),
        (
            "timestamp_out_of_range",
            topic.clone(),
            "{\"ts\":\"1970-01-01T00:00:01Z\",\"energy_import_kwh\":1}".into(),
        ),
        (
            "timestamp_out_of_range",
            topic.clone(),
            "{\"ts\":\"2999-01-01T00:00:00Z\",\"energy_import_kwh\":1}".into(),
        ),
        (
            "invalid_timestamp",
            topic.clone(),
            "{\"ts\":\"not a time\",\"energy_import_kwh\":1}".into(),
        ),
        (
            "topic_mismatch",
            "meters/south/telemetry".into(),
            format!("{{{TS},\"energy_import_kwh\":1}}"),
        ),
        (
            "oversized",
            topic.clone(),
            format!(
                "{{{TS},\"energy_import_kwh\":1,\"pad\":\"{}\"}}",
                "x".repeat(3000)
            ),
        ),
        ("not_an_object", topic, "[1,2,3]".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_rejected_and_kept() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-bad-input\"\ntopics = [\"meters/#\"]\n\
         max_payload_bytes = 2048\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let daemon = Daemon::start(dir.path(), &config);

    let mut messages: Vec<(String, Vec<u8>)> = cases()
        .into_iter()
        .map(|(_, topic, payload)| (topic, payload.into_bytes()))
        .collect();
    // A good reading that opens the cover: the shipped tamper rule raises an alert on it.
    messages.push((
        "meters/south/m-good/telemetry".into(),
        format!("{{{TS},\"energy_import_kwh\":1234.5,\"events\":[\"cover_open\"]}}").into_bytes(),
    ));
    // A reading older than the meter's newest takes no effect, so its event reaches no rule;
    // it is counted instead.
    messages.push((
        "meters/south/m-late/telemetry".into(),
        br#"{"ts":"2025-06-01T13:00:00Z","energy_import_kwh":10.0}"#.to_vec(),
    ));
    messages.push((
        "meters/south/m-late/telemetry".into(),
        format!("{{{TS},\"energy_import_kwh\":9.5,\"events\":[\"cover_open\"]}}").into_bytes(),
    ));
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let rejected = get_json(&format!("{}/api/rejected?limit=100", daemon.http)).await;
    let rejected = rejected.as_array().expect("rejected array");
    assert_eq!(
        rejected.len(),
        cases().len(),
        "rejected rows: {rejected:#?}"
    );
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for (reason, _, _) in cases() {
        *expected.entry(reason).or_default() += 1;
    }
    let metrics = get_text(&format!("{}/metrics", daemon.http)).await;
    for (reason, count) in &expected {
        let kept = rejected.iter().filter(|r| r["reason"] == *reason).count();
        assert_eq!(kept, *count, "rows kept for reason {reason}");
        let counted = metric(
            &metrics,
            &format!("gridwatch_readings_rejected_total{{reason=\"{reason}\"}}"),
        );
        assert_eq!(counted, Some(*count as f64), "metric for reason {reason}");
    }
    for row in rejected {
        assert!(
            !row["payload"].as_str().unwrap().is_empty(),
            "payload kept: {row}"
        );
        assert!(
            !row["detail"].as_str().unwrap().is_empty(),
            "detail given: {row}"
        );
        assert!(
            row["payload"].as_str().unwrap().len() <= 1024,
            "payload truncated: {row}"
        );
    }

    let alerts = get_json(&format!("{}/api/alerts", daemon.http)).await;
    let tamper = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["meter"] == "m-good" && a["kind"] == "tamper");
    assert!(
        tamper.is_some(),
        "tamper alert for the good reading: {alerts}; log:\n{}",
        daemon.log()
    );
    let late_alerts = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["meter"] == "m-late")
        .count();
    assert_eq!(late_alerts, 0, "{alerts}");
    let not_evaluated = metric(
        &metrics,
        "gridwatch_events_not_evaluated_total{interval=\"late\"}",
    );
    assert_eq!(not_evaluated, Some(1.0), "{metrics}");
}
