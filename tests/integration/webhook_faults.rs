//! `gridwatch webhooks`: listing dead letters, requeueing them, enabling a webhook disabled after
//! 410 Gone, and the exit status while another process has the store open. Also the daemon's
//! deliveries to a receiver that is down for minutes, with the default backoff.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridwatch::config::Config;
use gridwatch::delivery::Deliverer;
use gridwatch::delivery::receiver::{Behaviour, ReceivedDelivery, Receiver, Reply};
use gridwatch::metrics::Metrics;
use gridwatch::store::Store;
use gridwatch::store::outbox::{self, Delivery, DisabledWebhook};
use ulid::Ulid;

use crate::support::{
    Daemon, Mosquitto, copy_dir, free_port, get_text, metric, publish_all, repo_root,
};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Maximum wait for a delivery before a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// Output of one `gridwatch webhooks` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn webhooks(config: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .arg("webhooks")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("failed to run gridwatch webhooks");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes a configuration with one webhook `ops` at `url` and returns its path.
fn write_config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("gridwatch.toml");
    let text = format!(
        "[store]\npath = \"gridwatch.redb\"\n\n\
         [delivery]\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\npoll_interval_ms = 20\n\n\
         [[webhooks]]\nname = \"ops\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn delivery(webhook: &str, event_type: &str) -> Delivery {
    let body = format!(r#"{{"type":"{event_type}","timestamp":"2025-03-01T02:14:07.512Z"}}"#);
    Delivery {
        id: format!("msg_{}", Ulid::new()),
        webhook: webhook.into(),
        alert_id: Ulid::new(),
        event_type: event_type.into(),
        body: body.into_bytes(),
        created_ms: 1_740_795_247_000,
        attempts: 3,
        next_attempt_ms: 1_740_795_247_000,
        last_error: None,
    }
}

/// Stores `deliveries` in the outbox and moves each to the dead-letter table with `error`.
fn dead_letter_all(store: &Store, deliveries: &[&Delivery], error: &str) {
    let txn = store.db().begin_write().unwrap();
    for delivery in deliveries {
        outbox::enqueue(&txn, delivery).unwrap();
    }
    txn.commit().unwrap();
    for seq in 1..=deliveries.len() as u64 {
        assert!(outbox::move_to_dead_letters(&store.db(), seq, error, 1_740_795_300_000).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_and_retry_keeps_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let any_port = "127.0.0.1:0".parse().unwrap();
    let (addr, receiver) = Receiver::start(any_port, SECRET, Behaviour::accept())
        .await
        .unwrap();
    let config_path = write_config(dir.path(), &format!("http://{addr}/hook"));
    let first = delivery("ops", "alert.opened");
    let second = delivery("ops", "alert.escalated");
    let other = delivery("audit", "alert.opened");
    {
        let store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
        dead_letter_all(&store, &[&first, &second, &other], "connection refused");
    }

    let table = webhooks(&config_path, &["dead-letters"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap_or_default();
    for column in [
        "ID",
        "WEBHOOK",
        "ALERT ID",
        "EVENT TYPE",
        "ATTEMPTS",
        "CREATED",
    ] {
        assert!(
            header.contains(column),
            "column {column} in header {header:?}"
        );
    }
    assert!(header.ends_with("LAST ERROR"), "header {header:?}");
    for item in [&first, &second, &other] {
        let line = table.stdout.lines().find(|line| line.starts_with(&item.id));
        let line = line.unwrap_or_else(|| panic!("no row for {}: {}", item.id, table.stdout));
        assert!(
            line.contains(&item.alert_id.to_string()),
            "alert id in {line:?}"
        );
        assert!(line.contains(&item.event_type), "event type in {line:?}");
        assert!(
            line.contains("2025-03-01T02:14:07.000Z"),
            "created in {line:?}"
        );
        assert!(
            line.ends_with("connection refused"),
            "last error in {line:?}"
        );
    }

    let json = webhooks(
        &config_path,
        &["dead-letters", "--json", "--webhook", "ops"],
    );
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let rows = rows.as_array().expect("JSON array");
    assert_eq!(rows.len(), 2, "{}", json.stdout);
    assert_eq!(rows[0]["id"], first.id.as_str());
    assert_eq!(rows[0]["webhook"], "ops");
    assert_eq!(rows[0]["alert_id"], first.alert_id.to_string());
    assert_eq!(rows[0]["event_type"], "alert.opened");
    assert_eq!(rows[0]["attempts"], 3);
    assert_eq!(rows[0]["created"], "2025-03-01T02:14:07.000Z");
    assert_eq!(rows[0]["last_error"], "connection refused");

    let limited = webhooks(&config_path, &["dead-letters", "--json", "--limit", "1"]);
    let limited: serde_json::Value = serde_json::from_str(&limited.stdout).unwrap();
    assert_eq!(limited.as_array().map(Vec::len), Some(1), "{limited}");

    let unknown = webhooks(
        &config_path,
        &["retry", "--id", "msg_01JNF4X8ZK2W6V9Q3T7R5M1C0D"],
    );
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("not found"), "{}", unknown.stderr);

    let retried = webhooks(&config_path, &["retry", "--id", &first.id]);
    assert_eq!(retried.code, Some(0), "{}", retried.stderr);
    assert!(
        retried.stdout.contains("requeued 1 dead letters"),
        "{}",
        retried.stdout
    );

    // The daemon's delivery task sends the requeued message with its original webhook-id.
    let config = Config::load(&config_path).unwrap();
    let store = Arc::new(Store::open(&config.store.path).unwrap());
    let deliverer = Deliverer::spawn(
        store.clone(),
        config.delivery.clone(),
        config.webhooks.clone(),
        Arc::new(Metrics::new()),
    );
    deliverer.notify();
    let received = receiver.wait_for(1, WAIT).await;
    let received = received.unwrap_or_else(|_| panic!("requeued delivery did not arrive"));
    assert_eq!(received[0].id.as_deref(), Some(first.id.as_str()));
    assert!(
        received[0].signature_valid,
        "{:?}",
        received[0].verify_error
    );
    assert_eq!(received[0].body.as_ref(), first.body.as_slice());
    deliverer.shutdown().await;
    receiver.shutdown().await;

    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!(depth.outbox, 0, "outbox after delivery");
    assert_eq!(depth.dead_letters, 2, "dead letters after delivery");
}

#[test]
fn enable_reenables_disabled_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "http://127.0.0.1:9/hook");
    let pending = delivery("ops", "alert.opened");
    {
        let store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
        let txn = store.db().begin_write().unwrap();
        outbox::enqueue(&txn, &pending).unwrap();
        txn.commit().unwrap();
        let record = DisabledWebhook {
            url: "http://127.0.0.1:9/hook".into(),
            disabled_ms: 1_740_795_300_000,
            reason: "endpoint returned 410 Gone".into(),
        };
        outbox::disable_webhook(&store.db(), "ops", &record, &HashSet::new()).unwrap();
    }

    let listed = webhooks(&config_path, &["dead-letters"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(
        listed
            .stdout
            .contains("webhook 'ops' (http://127.0.0.1:9/hook) disabled since"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("endpoint returned 410 Gone"),
        "{}",
        listed.stdout
    );

    let while_disabled = webhooks(&config_path, &["retry", "--all"]);
    assert_eq!(while_disabled.code, Some(0), "{}", while_disabled.stderr);
    assert!(
        while_disabled.stdout.contains("requeued 0 dead letters"),
        "{}",
        while_disabled.stdout
    );
    assert!(
        while_disabled.stdout.contains("held back 1"),
        "{}",
        while_disabled.stdout
    );

    let enabled = webhooks(&config_path, &["enable", "ops"]);
    assert_eq!(enabled.code, Some(0), "{}", enabled.stderr);
    assert!(
        enabled.stdout.contains("enabled webhook 'ops'"),
        "{}",
        enabled.stdout
    );
    let again = webhooks(&config_path, &["enable", "ops"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.contains("is not disabled"), "{}", again.stdout);
    let unknown = webhooks(&config_path, &["enable", "nosuch"]);
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);

    let retried = webhooks(&config_path, &["retry", "--webhook", "ops"]);
    assert_eq!(retried.code, Some(0), "{}", retried.stderr);
    assert!(
        retried.stdout.contains("requeued 1 dead letters"),
        "{}",
        retried.stdout
    );
    let store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
    assert!(outbox::disabled_webhooks(&store.db()).unwrap().is_empty());
    assert_eq!(outbox::depth(&store.db()).unwrap().outbox, 1);
}

#[test]
fn commands_exit_3_while_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "http://127.0.0.1:9/hook");

    let missing = webhooks(&config_path, &["dead-letters"]);
    assert_eq!(missing.code, Some(3), "{}", missing.stderr);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    assert!(
        !dir.path().join("gridwatch.redb").exists(),
        "listing created the store file"
    );

    // This process opens and locks the file the way a running daemon does.
    let _store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
    let cases: [&[&str]; 3] = [&["dead-letters"], &["retry", "--all"], &["enable", "ops"]];
    for args in cases {
        let run = webhooks(&config_path, args);
        assert_eq!(run.code, Some(3), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("is in use, probably by the running daemon"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn retry_requires_one_target() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "http://127.0.0.1:9/hook");
    let none = webhooks(&config_path, &["retry"]);
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    let two = webhooks(&config_path, &["retry", "--all", "--webhook", "ops"]);
    assert_eq!(two.code, Some(2), "{}", two.stderr);
}

/// Rule that opens a low `outage` alert on an `outage_low` event and escalates it to high on an
/// `outage_high` event, so each alert sends `alert.opened` and then `alert.escalated`.
const OUTAGE_RULE: &str = r#"// Opens an alert on `outage_low` and escalates it on `outage_high`.
fn on_reading(reading, meter) {
    if !reading.matching_events(["outage_low"]).is_empty() {
        alert("outage", "low", "supply lost");
    }
    if !reading.matching_events(["outage_high"]).is_empty() {
        alert("outage", "high", "supply lost for long");
    }
}
"#;

/// Waves of alerts raised while the receiver is down, one every [`WAVE_INTERVAL`].
const WAVES: u32 = 3;

/// Time between two waves.
const WAVE_INTERVAL: Duration = Duration::from_secs(60);

/// Meters whose alert opens in each wave; the alerts of the previous wave escalate.
const METERS_PER_WAVE: u32 = 10;

/// Time the receiver answers 503 after refusing connections, at the end of the outage.
const UNAVAILABLE: Duration = Duration::from_secs(60);

/// Readings of one wave: the opening event for this wave's meters and the escalation event for
/// the previous wave's.
fn outage_wave(wave: u32) -> Vec<(String, Vec<u8>)> {
    let ts = 1_750_000_000_000_i64 + i64::from(wave) * 3_600_000;
    let reading = |meter: u32, event: &str| {
        let payload = format!(
            r#"{{"ts":{ts},"energy_import_kwh":{}.5,"events":["{event}"]}}"#,
            100 + wave
        );
        (
            format!("meters/south/outage-{meter}/telemetry"),
            payload.into_bytes(),
        )
    };
    let opened = (wave * METERS_PER_WAVE..(wave + 1) * METERS_PER_WAVE)
        .map(|meter| reading(meter, "outage_low"));
    let escalated = (wave.saturating_sub(1) * METERS_PER_WAVE..wave * METERS_PER_WAVE)
        .map(|meter| reading(meter, "outage_high"));
    opened.chain(escalated).collect()
}

/// Returns the alert id and event type in a delivery's body.
fn alert_and_type(delivery: &ReceivedDelivery) -> (String, String) {
    let json = delivery.json.as_ref().expect("JSON body");
    (
        json["data"]["id"].as_str().expect("data.id").to_owned(),
        json["type"].as_str().expect("type").to_owned(),
    )
}

async fn start_receiver(addr: SocketAddr, behaviour: Behaviour) -> Receiver {
    let (_, receiver) = Receiver::start(addr, SECRET, behaviour)
        .await
        .unwrap_or_else(|error| panic!("failed to start the receiver again on {addr}: {error}"));
    receiver
}

/// A receiver that refuses connections for two minutes and answers 503 for one more, while 30
/// alerts open and 20 of them escalate, then comes back.
///
/// The daemon runs with the default `[delivery]` settings except `max_backoff_ms`, which is
/// 60,000 in place of 300,000. With full jitter, a delivery first tried when the outage began
/// has a backoff ceiling of 128 to 256 s after three minutes, so with the default its next
/// attempt could come more than four minutes after the receiver is back, and the test would
/// run for about eight minutes. The 60 s cap bounds that wait, and the first six doublings
/// (1 s to 32 s) are those of the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_minutes_delivers_all_in_order() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    std::fs::write(rules.join("common/outage.rhai"), OUTAGE_RULE).unwrap();
    // Nothing listens on the receiver's port until the last minute of the outage.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-receiver-down\"\n\n[rules]\ndir = \"{}\"\n\n\
         [delivery]\nmax_backoff_ms = 60000\n\n\
         [[webhooks]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\n",
        broker.url(),
        rules.display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    let outage_start = Instant::now();

    let mut unavailable = None;
    for wave in 0..WAVES {
        let due = outage_start + WAVE_INTERVAL * wave;
        tokio::time::sleep_until(due.into()).await;
        if wave == WAVES - 1 {
            let behaviour = Behaviour::replies(vec![Reply::status(503)]);
            unavailable = Some(start_receiver(addr, behaviour).await);
        }
        publish_all(broker.port, outage_wave(wave)).await;
    }
    let unavailable = unavailable.expect("503 receiver started");
    tokio::time::sleep_until((outage_start + WAVE_INTERVAL * (WAVES - 1) + UNAVAILABLE).into())
        .await;
    let rejected = unavailable.received();
    unavailable.shutdown().await;
    let outage = outage_start.elapsed();

    let receiver = start_receiver(addr, Behaviour::accept()).await;
    let opened = (WAVES * METERS_PER_WAVE) as usize;
    let expected = opened + ((WAVES - 1) * METERS_PER_WAVE) as usize;
    let arrived = receiver.wait_for(expected, Duration::from_secs(90)).await;
    if let Err(got) = arrived {
        panic!(
            "{} of {expected} deliveries arrived within 90 s of the receiver's return; log:\n{}",
            got.len(),
            daemon.log()
        );
    }
    let recovery = outage_start.elapsed() - outage;
    let metrics_url = format!("{}/metrics", daemon.http);
    let start = Instant::now();
    while metric(&get_text(&metrics_url).await, "gridwatch_outbox_depth") != Some(0.0) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "outbox not empty"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let delivered = receiver.received();
    receiver.shutdown().await;

    // Every alert change arrived once, signed, under one webhook-id.
    assert_eq!(delivered.len(), expected, "deliveries after the outage");
    let invalid: Vec<_> = delivered.iter().filter(|d| !d.signature_valid).collect();
    assert!(invalid.is_empty(), "unverified deliveries: {invalid:?}");
    let ids: HashSet<&str> = delivered.iter().filter_map(|d| d.id.as_deref()).collect();
    assert_eq!(ids.len(), expected, "distinct webhook-ids");

    // Per alert, alert.opened arrived before alert.escalated.
    let mut types: HashMap<String, Vec<String>> = HashMap::new();
    for delivery in &delivered {
        let (alert, event_type) = alert_and_type(delivery);
        types.entry(alert).or_default().push(event_type);
    }
    assert_eq!(types.len(), opened, "alerts with deliveries");
    let escalated = types.values().filter(|t| t.len() == 2).count();
    assert_eq!(escalated, expected - opened, "alerts with an escalation");
    for (alert, sequence) in &types {
        assert_eq!(
            sequence[0], "alert.opened",
            "first delivery of alert {alert}"
        );
        if let Some(second) = sequence.get(1) {
            assert_eq!(
                second, "alert.escalated",
                "second delivery of alert {alert}"
            );
        }
    }

    // Retries during the 503 minute carried the webhook-id and body that later arrived, and
    // only the first message of each alert was tried before it was delivered.
    assert!(!rejected.is_empty(), "no attempt reached the 503 receiver");
    let bodies: HashMap<&str, &[u8]> = delivered
        .iter()
        .map(|d| (d.id.as_deref().unwrap_or_default(), d.body.as_ref()))
        .collect();
    for attempt in &rejected {
        let id = attempt.id.as_deref().unwrap_or_default();
        assert!(
            attempt.signature_valid,
            "retry {id}: {:?}",
            attempt.verify_error
        );
        assert_eq!(
            bodies.get(id).copied(),
            Some(attempt.body.as_ref()),
            "retry {id}"
        );
        let (alert, event_type) = alert_and_type(attempt);
        assert_eq!(
            event_type, "alert.opened",
            "retried message of alert {alert}"
        );
    }

    let metrics = get_text(&metrics_url).await;
    let count = |outcome: &str| {
        let name =
            format!(r#"gridwatch_webhook_deliveries_total{{webhook="ops",outcome="{outcome}"}}"#);
        metric(&metrics, &name).unwrap_or(0.0)
    };
    assert_eq!(count("success"), expected as f64, "successful attempts");
    assert_eq!(count("dead_letter"), 0.0, "dead letters");
    assert_eq!(
        metric(&metrics, "gridwatch_dead_letters"),
        Some(0.0),
        "dead-letter table"
    );
    let refused = daemon.log().matches("Connection refused").count();
    println!(
        "receiver down {:.0} s ({} s refused, {} s 503); {expected} deliveries for {opened} alerts \
         arrived {:.1} s after its return; failed attempts {} ({} refused, {} answered 503)",
        outage.as_secs_f64(),
        (WAVE_INTERVAL * (WAVES - 1)).as_secs(),
        UNAVAILABLE.as_secs(),
        recovery.as_secs_f64(),
        count("retry"),
        refused,
        rejected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_log_hides_url_query() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port, so every attempt fails.
    let port = free_port();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-url-query\"\n\n[rules]\ndir = \"{}\"\n\n\
         [delivery]\ninitial_backoff_ms = 100\nmax_backoff_ms = 200\n\n\
         [[webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook?token=query-secret-77\"\n\
         secret = \"{SECRET}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    let cover_open =
        br#"{"ts":"2025-06-01T12:00:00Z","energy_import_kwh":12.5,"events":["cover_open"]}"#;
    publish_all(
        broker.port,
        vec![("meters/south/m-url/telemetry".into(), cover_open.to_vec())],
    )
    .await;
    daemon.wait_for_log("Connection refused", Duration::from_secs(30));
    let log = daemon.log();
    assert!(!log.contains("query-secret-77"), "token in the log:\n{log}");
}
