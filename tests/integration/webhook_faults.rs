//! `gridwatch webhooks`: listing dead letters, requeueing them, enabling a webhook disabled after
//! 410 Gone, and the exit status while another process has the store open.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gridwatch::config::Config;
use gridwatch::delivery::Deliverer;
use gridwatch::delivery::receiver::{Behaviour, Receiver};
use gridwatch::metrics::Metrics;
use gridwatch::store::Store;
use gridwatch::store::outbox::{self, Delivery, DisabledWebhook};
use ulid::Ulid;

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
