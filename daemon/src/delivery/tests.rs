//! Tests for signing, the outbox tables, endpoint filters and the delivery worker. Worker tests
//! use a real redb file and a real HTTP receiver on 127.0.0.1 with a random port.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use ulid::Ulid;

use super::receiver::{Behaviour, Receiver, Reply};
use super::retry::{self, AttemptResult, Decision};
use super::signer::{SecretError, Signer, VerifyError};
use super::{Deliverer, plan};
use crate::alerts::{Alert, AlertChange, AlertSource, AlertStatus, Severity};
use crate::config::{DeliveryConfig, Secret, WebhookConfig};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::outbox::{self, DeadLetterFilter, Delivery, DisabledWebhook, DueEntry};

/// Secret of the Standard Webhooks reference test vector (see `signer_matches_reference_vector`).
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Maximum wait for a condition before a test fails.
const WAIT: Duration = Duration::from_secs(10);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn alert(region: &str, kind: &str, severity: Severity) -> Alert {
    Alert {
        id: Ulid::new(),
        kind: kind.into(),
        severity,
        meter: "m-001".into(),
        region: region.into(),
        message: "night load 12 kW for 7 days".into(),
        evidence: json!({"night_kw": 12.0}),
        source: AlertSource {
            rule: "common/mining.rhai".into(),
            content_hash: "ab".repeat(32),
        },
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_000_000,
        count: 1,
        status: AlertStatus::Open,
        actions: Vec::new(),
    }
}

fn webhook(name: &str, url: &str) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: url.into(),
        secret: Secret::new(SECRET),
        regions: Vec::new(),
        kinds: Vec::new(),
        min_severity: Severity::Info,
    }
}

fn fast_config() -> DeliveryConfig {
    DeliveryConfig {
        initial_backoff_ms: 20,
        max_backoff_ms: 100,
        max_age_secs: 60,
        request_timeout_ms: 2_000,
        poll_interval_ms: 20,
        max_retry_after_secs: 5,
    }
}

fn open_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
    (dir, Arc::new(store))
}

/// Plans and enqueues deliveries for `alert` in one transaction, as the pipeline does.
fn enqueue(store: &Store, alert: &Alert, change: AlertChange, hooks: &[WebhookConfig]) -> usize {
    let deliveries = plan(alert, change, hooks, now_ms());
    let txn = store.db().begin_write().unwrap();
    for delivery in &deliveries {
        outbox::enqueue(&txn, delivery).unwrap();
    }
    txn.commit().unwrap();
    deliveries.len()
}

/// Polls `condition` until it is true or [`WAIT`] passes, and returns whether it became true.
async fn wait_until<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn delivery(webhook: &str, alert_id: Ulid, event_type: &str, created_ms: i64) -> Delivery {
    Delivery {
        id: format!("msg_{}", Ulid::new()),
        webhook: webhook.into(),
        alert_id,
        event_type: event_type.into(),
        body: br#"{"type":"alert.opened"}"#.to_vec(),
        created_ms,
        attempts: 0,
        next_attempt_ms: created_ms,
        last_error: None,
    }
}

fn ready_ids(entries: &[DueEntry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| match entry {
            DueEntry::Ready(pending) => Some(pending.delivery.id.clone()),
            DueEntry::Unreadable { .. } => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Signer

#[test]
fn signer_matches_reference_vector() {
    // From `test_sign` in libraries/rust/src/lib.rs of the reference implementation,
    // github.com/standard-webhooks/standard-webhooks.
    let signer = Signer::from_secret(SECRET).unwrap();
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let signature = signer.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553, body);
    assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

#[test]
fn verify_accepts_own_signature_among_others() {
    let signer = Signer::from_secret(SECRET).unwrap();
    let now = now_secs();
    let signature = signer.sign("msg_1", now, b"{}");
    let header = format!("v1,bm9wZQ== v1a,c29tZXRoaW5n {signature} v1,Zm9v");
    let result = signer.verify("msg_1", &now.to_string(), &header, b"{}", now, 300);
    assert_eq!(result, Ok(()), "header {header}");
}

#[test]
fn verify_rejects_tampered_body() {
    let signer = Signer::from_secret(SECRET).unwrap();
    let now = now_secs();
    let signature = signer.sign("msg_1", now, br#"{"severity":"high"}"#);
    let result = signer.verify(
        "msg_1",
        &now.to_string(),
        &signature,
        br#"{"severity":"low"}"#,
        now,
        300,
    );
    assert_eq!(result, Err(VerifyError::NoMatchingSignature));
}

#[test]
fn verify_rejects_stale_and_future_timestamps() {
    let signer = Signer::from_secret(SECRET).unwrap();
    let now = now_secs();
    for offset in [-301, 301] {
        let timestamp = now + offset;
        let signature = signer.sign("msg_1", timestamp, b"{}");
        let result = signer.verify("msg_1", &timestamp.to_string(), &signature, b"{}", now, 300);
        assert_eq!(
            result,
            Err(VerifyError::OutsideTolerance {
                offset_secs: offset,
                tolerance_secs: 300
            }),
            "offset {offset}"
        );
    }
}

#[test]
fn verify_rejects_other_message_id() {
    let signer = Signer::from_secret(SECRET).unwrap();
    let now = now_secs();
    let signature = signer.sign("msg_1", now, b"{}");
    let result = signer.verify("msg_2", &now.to_string(), &signature, b"{}", now, 300);
    assert_eq!(result, Err(VerifyError::NoMatchingSignature));
}

#[test]
fn from_secret_rejects_other_forms_without_echo() {
    let cases = [
        (
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            SecretError::MissingPrefix,
        ),
        ("whsec_not*base64!", SecretError::InvalidBase64),
        ("whsec_c2hvcnQ=", SecretError::TooShort { bytes: 5 }),
    ];
    for (secret, expected) in cases {
        let error = Signer::from_secret(secret).unwrap_err();
        assert_eq!(error, expected, "secret form {expected:?}");
        let message = error.to_string();
        assert!(
            message.contains("whsec_<base64>"),
            "message does not name the form: {message}"
        );
        let value = secret.trim_start_matches("whsec_");
        assert!(
            !message.contains(value),
            "message echoes the secret: {message}"
        );
    }
}

#[test]
fn signer_debug_hides_key() {
    let signer = Signer::from_secret(SECRET).unwrap();
    let debug = format!("{signer:?}");
    assert!(!debug.contains("C2FV"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// Retry policy

#[test]
fn backoff_stays_within_full_jitter_bounds() {
    let config = DeliveryConfig {
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
        ..fast_config()
    };
    let mut rng = StdRng::seed_from_u64(7);
    for (attempts, ceiling) in [
        (1, 100),
        (2, 200),
        (3, 400),
        (4, 800),
        (5, 1_000),
        (64, 1_000),
    ] {
        let delays: Vec<u64> = (0..200)
            .map(|_| retry::backoff_ms(attempts, &config, &mut rng))
            .collect();
        let max = delays.iter().copied().max().unwrap();
        assert!(
            max <= ceiling,
            "attempt {attempts}: delay {max} above {ceiling}"
        );
        assert!(
            max > ceiling / 2,
            "attempt {attempts}: no delay near {ceiling}, max {max}"
        );
    }
}

#[test]
fn retry_after_parses_seconds_and_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
    let cases = [
        ("1", Some(Duration::from_secs(1))),
        (" 120 ", Some(Duration::from_secs(120))),
        (
            "Sun, 06 Nov 1994 08:49:47 GMT",
            Some(Duration::from_secs(10)),
        ),
        ("Sun, 06 Nov 1994 08:49:27 GMT", Some(Duration::ZERO)),
        ("soon", None),
        ("-5", None),
        ("", None),
    ];
    for (value, expected) in cases {
        assert_eq!(
            retry::parse_retry_after(value, now),
            expected,
            "value {value:?}"
        );
    }
}

#[test]
fn decide_honours_and_caps_retry_after() {
    let config = fast_config();
    let item = delivery("ops", Ulid::new(), "alert.opened", 1_000_000);
    let mut rng = StdRng::seed_from_u64(1);
    for (requested, expected_ms) in [(3, 3_000), (3_600, 5_000), (0, 20)] {
        let result = AttemptResult::Rejected {
            status: 429,
            retry_after: Some(Duration::from_secs(requested)),
        };
        let decision = retry::decide(&item, &result, 1_000_500, &config, &mut rng);
        let expected = Decision::Retry {
            next_attempt_ms: 1_000_500 + expected_ms,
            error: "receiver returned HTTP status 429".into(),
        };
        assert_eq!(decision, expected, "Retry-After {requested}");
    }
}

#[test]
fn decide_dead_letters_after_max_age() {
    let config = fast_config();
    let item = delivery("ops", Ulid::new(), "alert.opened", 1_000_000);
    let result = AttemptResult::Failed {
        error: "connection refused".into(),
    };
    let mut rng = StdRng::seed_from_u64(1);

    let at_limit = retry::decide(&item, &result, 1_060_000, &config, &mut rng);
    assert!(
        matches!(at_limit, Decision::Retry { next_attempt_ms, .. } if next_attempt_ms <= 1_060_001)
    );

    let past_limit = retry::decide(&item, &result, 1_060_001, &config, &mut rng);
    assert_eq!(
        past_limit,
        Decision::DeadLetter {
            error: "connection refused".into()
        }
    );
}

#[test]
fn decide_disables_on_410_at_any_age() {
    let config = fast_config();
    let item = delivery("ops", Ulid::new(), "alert.opened", 1_000_000);
    let result = AttemptResult::Rejected {
        status: 410,
        retry_after: None,
    };
    let mut rng = StdRng::seed_from_u64(1);
    let expected = Decision::Disable {
        error: retry::GONE_ERROR.into(),
    };
    for now_ms in [1_000_001, 9_000_000] {
        let decision = retry::decide(&item, &result, now_ms, &config, &mut rng);
        assert_eq!(decision, expected, "attempt at {now_ms}");
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox tables

#[test]
fn outbox_releases_alert_events_in_order() {
    let (_dir, store) = open_store();
    let alert_id = Ulid::new();
    let opened = delivery("ops", alert_id, "alert.opened", 1_000);
    let escalated = delivery("ops", alert_id, "alert.escalated", 1_000);
    let other_hook = delivery("audit", alert_id, "alert.opened", 1_000);
    let txn = store.db().begin_write().unwrap();
    for item in [&opened, &escalated, &other_hook] {
        outbox::enqueue(&txn, item).unwrap();
    }
    txn.commit().unwrap();

    let first = outbox::due(&store.db(), 2_000, 10, &HashSet::new()).unwrap();
    assert_eq!(
        ready_ids(&first),
        vec![opened.id.clone(), other_hook.id.clone()]
    );

    let DueEntry::Ready(head) = &first[0] else {
        panic!("unreadable head")
    };
    assert!(outbox::complete(&store.db(), head.seq).unwrap());
    let second = outbox::due(&store.db(), 2_000, 10, &HashSet::new()).unwrap();
    assert_eq!(
        ready_ids(&second),
        vec![escalated.id.clone(), other_hook.id.clone()]
    );
}

#[test]
fn outbox_reschedule_hides_until_due() {
    let (_dir, store) = open_store();
    let item = delivery("ops", Ulid::new(), "alert.opened", 1_000);
    let txn = store.db().begin_write().unwrap();
    outbox::enqueue(&txn, &item).unwrap();
    txn.commit().unwrap();
    let seq = match &outbox::due(&store.db(), 1_000, 10, &HashSet::new()).unwrap()[0] {
        DueEntry::Ready(pending) => pending.seq,
        DueEntry::Unreadable { error, .. } => panic!("unreadable: {error}"),
    };

    assert!(outbox::reschedule(&store.db(), seq, 1, 5_000, "HTTP status 500").unwrap());
    let early = outbox::due(&store.db(), 4_999, 10, &HashSet::new()).unwrap();
    assert!(early.is_empty(), "due before its time: {early:?}");
    let on_time = outbox::due(&store.db(), 5_000, 10, &HashSet::new()).unwrap();
    let DueEntry::Ready(pending) = &on_time[0] else {
        panic!("unreadable record")
    };
    assert_eq!(pending.delivery.attempts, 1);
    assert_eq!(
        pending.delivery.last_error.as_deref(),
        Some("HTTP status 500")
    );
}

#[test]
fn dead_letter_requeue_keeps_webhook_id() {
    let (_dir, store) = open_store();
    let item = delivery("ops", Ulid::new(), "alert.opened", 1_000);
    let txn = store.db().begin_write().unwrap();
    outbox::enqueue(&txn, &item).unwrap();
    txn.commit().unwrap();
    let seq = 1;

    assert!(outbox::move_to_dead_letters(&store.db(), seq, "connection refused", 9_000).unwrap());
    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!((depth.outbox, depth.dead_letters), (0, 1));
    let letters = outbox::dead_letters(&store.db(), 10).unwrap();
    assert_eq!(
        letters[0].delivery.last_error.as_deref(),
        Some("connection refused")
    );
    assert_eq!(letters[0].dead_lettered_ms, 9_000);

    let filter = DeadLetterFilter::Id(item.id.clone());
    let moved = outbox::requeue_dead_letters(&store.db(), &filter, 20_000).unwrap();
    assert_eq!(moved.requeued, 1, "requeued");
    let due = outbox::due(&store.db(), 20_000, 10, &HashSet::new()).unwrap();
    assert_eq!(ready_ids(&due), vec![item.id.clone()]);
    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!((depth.outbox, depth.dead_letters), (1, 0));
}

#[test]
fn unreadable_record_is_set_aside_and_chain_continues() {
    let (_dir, store) = open_store();
    let alert_id = Ulid::new();
    let first = delivery("ops", alert_id, "alert.opened", 1_000);
    let second = delivery("ops", alert_id, "alert.escalated", 1_000);
    let txn = store.db().begin_write().unwrap();
    outbox::enqueue(&txn, &first).unwrap();
    outbox::enqueue(&txn, &second).unwrap();
    txn.open_table(outbox::OUTBOX)
        .unwrap()
        .insert(1, &[0xff, 1, 2][..])
        .unwrap();
    txn.commit().unwrap();

    let due = outbox::due(&store.db(), 2_000, 10, &HashSet::new()).unwrap();
    assert!(
        matches!(due[..], [DueEntry::Unreadable { seq: 1, .. }]),
        "{due:?}"
    );
    assert!(outbox::set_aside_unreadable(&store.db(), 1).unwrap());

    let due = outbox::due(&store.db(), 2_000, 10, &HashSet::new()).unwrap();
    assert_eq!(ready_ids(&due), vec![second.id.clone()]);
    assert_eq!(outbox::depth(&store.db()).unwrap().unreadable, 1);
}

fn gone_record(disabled_ms: i64) -> DisabledWebhook {
    DisabledWebhook {
        url: "http://127.0.0.1:9/hook".into(),
        disabled_ms,
        reason: retry::GONE_ERROR.into(),
    }
}

fn enqueue_all(store: &Store, items: &[&Delivery]) {
    let txn = store.db().begin_write().unwrap();
    for item in items {
        outbox::enqueue(&txn, item).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn disable_dead_letters_only_that_webhook() {
    let (_dir, store) = open_store();
    let alert_id = Ulid::new();
    let opened = delivery("ops", alert_id, "alert.opened", 1_000);
    let escalated = delivery("ops", alert_id, "alert.escalated", 1_000);
    let other_alert = delivery("ops", Ulid::new(), "alert.opened", 1_000);
    let other_hook = delivery("audit", alert_id, "alert.opened", 1_000);
    enqueue_all(&store, &[&opened, &escalated, &other_alert, &other_hook]);

    // Sequence 3, `other_alert`, is in flight, so it stays for the caller to record.
    let keep = HashSet::from([3]);
    let disabled = outbox::disable_webhook(&store.db(), "ops", &gone_record(5_000), &keep).unwrap();
    assert!(disabled.newly_disabled, "first disable");
    assert_eq!(disabled.dead_lettered, 2, "dead-lettered count");

    let letters = outbox::dead_letters(&store.db(), 10).unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l.delivery.id.as_str()).collect();
    assert_eq!(ids, vec![opened.id.as_str(), escalated.id.as_str()]);
    for letter in &letters {
        assert_eq!(
            letter.delivery.last_error.as_deref(),
            Some(retry::GONE_ERROR),
            "last error of {}",
            letter.delivery.id
        );
        assert_eq!(
            letter.dead_lettered_ms, 5_000,
            "time of {}",
            letter.delivery.id
        );
    }
    let due = outbox::due(&store.db(), 2_000, 10, &HashSet::new()).unwrap();
    assert_eq!(
        ready_ids(&due),
        vec![other_alert.id.clone(), other_hook.id.clone()]
    );

    let again = outbox::disable_webhook(&store.db(), "ops", &gone_record(9_000), &HashSet::new());
    let again = again.unwrap();
    assert!(!again.newly_disabled, "second disable");
    assert_eq!(
        again.dead_lettered, 1,
        "in-flight delivery moved on second disable"
    );
    let records = outbox::disabled_webhooks(&store.db()).unwrap();
    assert_eq!(records, vec![("ops".to_owned(), gone_record(5_000))]);
}

#[test]
fn enqueue_for_disabled_webhook_dead_letters() {
    let (_dir, store) = open_store();
    outbox::disable_webhook(&store.db(), "ops", &gone_record(5_000), &HashSet::new()).unwrap();
    let item = delivery("ops", Ulid::new(), "alert.opened", 7_000);
    let other = delivery("audit", Ulid::new(), "alert.opened", 7_000);
    enqueue_all(&store, &[&item, &other]);

    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!(depth.outbox, 1, "outbox depth");
    assert_eq!(depth.dead_letters, 1, "dead letters");
    let letters = outbox::dead_letters(&store.db(), 10).unwrap();
    assert_eq!(letters[0].delivery.id, item.id);
    assert_eq!(
        letters[0].delivery.last_error.as_deref(),
        Some("webhook disabled: endpoint returned 410 Gone")
    );
    assert_eq!(letters[0].dead_lettered_ms, 7_000);
}

#[test]
fn requeue_holds_back_until_enabled() {
    let (_dir, store) = open_store();
    let item = delivery("ops", Ulid::new(), "alert.opened", 1_000);
    enqueue_all(&store, &[&item]);
    outbox::disable_webhook(&store.db(), "ops", &gone_record(5_000), &HashSet::new()).unwrap();

    let all = DeadLetterFilter::All;
    let while_disabled = outbox::requeue_dead_letters(&store.db(), &all, 6_000).unwrap();
    assert_eq!(while_disabled.requeued, 0, "requeued while disabled");
    assert_eq!(while_disabled.held_back, 1, "held back while disabled");

    let record = outbox::enable_webhook(&store.db(), "ops").unwrap();
    assert_eq!(record, Some(gone_record(5_000)));
    assert_eq!(outbox::enable_webhook(&store.db(), "ops").unwrap(), None);
    let moved = outbox::requeue_dead_letters(&store.db(), &all, 7_000).unwrap();
    assert_eq!(moved.requeued, 1, "requeued after enable");
    let due = outbox::due(&store.db(), 7_000, 10, &HashSet::new()).unwrap();
    assert_eq!(ready_ids(&due), vec![item.id.clone()]);
}

#[test]
fn dead_letters_matching_filters_before_limit() {
    let (_dir, store) = open_store();
    let audit = delivery("audit", Ulid::new(), "alert.opened", 1_000);
    let ops = delivery("ops", Ulid::new(), "alert.opened", 1_000);
    enqueue_all(&store, &[&audit, &ops]);
    for seq in [1, 2] {
        assert!(outbox::move_to_dead_letters(&store.db(), seq, "timed out", 2_000).unwrap());
    }

    let filter = DeadLetterFilter::Webhook("ops".into());
    let letters = outbox::dead_letters_matching(&store.db(), &filter, 1).unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l.delivery.id.as_str()).collect();
    assert_eq!(ids, vec![ops.id.as_str()]);
}

// ---------------------------------------------------------------------------------------------
// Planning

#[test]
fn plan_filters_by_region_kind_and_severity() {
    let mut north = webhook("north", "http://127.0.0.1:9/north");
    north.regions = vec!["north".into()];
    let mut mining = webhook("mining", "http://127.0.0.1:9/mining");
    mining.kinds = vec!["mining".into()];
    let mut urgent = webhook("urgent", "http://127.0.0.1:9/urgent");
    urgent.min_severity = Severity::High;
    let all = webhook("all", "http://127.0.0.1:9/all");
    let hooks = [north, mining, urgent, all];

    let cases = [
        (
            alert("north", "mining", Severity::High),
            vec!["north", "mining", "urgent", "all"],
        ),
        (
            alert("south", "mining", Severity::Low),
            vec!["mining", "all"],
        ),
        (
            alert("north", "tamper", Severity::Medium),
            vec!["north", "all"],
        ),
        (
            alert("south", "tamper", Severity::Critical),
            vec!["urgent", "all"],
        ),
    ];
    for (alert, expected) in cases {
        let names: Vec<String> = plan(&alert, AlertChange::Opened, &hooks, 0)
            .into_iter()
            .map(|d| d.webhook)
            .collect();
        assert_eq!(
            names, expected,
            "{} {} {:?}",
            alert.region, alert.kind, alert.severity
        );
    }
}

#[test]
fn plan_builds_documented_payload() {
    let alert = alert("north", "mining", Severity::High);
    let hooks = [
        webhook("a", "http://127.0.0.1:9/a"),
        webhook("b", "http://127.0.0.1:9/b"),
    ];
    let deliveries = plan(&alert, AlertChange::Escalated, &hooks, 1_700_000_123_456);
    assert_eq!(deliveries.len(), 2);
    assert_ne!(
        deliveries[0].id, deliveries[1].id,
        "each endpoint needs its own webhook-id"
    );
    assert!(deliveries[0].id.starts_with("msg_"), "{}", deliveries[0].id);

    let body: serde_json::Value = serde_json::from_slice(&deliveries[0].body).unwrap();
    assert_eq!(body["type"], "alert.escalated");
    assert_eq!(body["timestamp"], "2023-11-14T22:15:23.456Z");
    assert_eq!(body["data"]["id"], alert.id.to_string());
    assert_eq!(body["data"]["severity"], "high");
    assert_eq!(body["data"]["region"], "north");
}

#[test]
fn plan_skips_repeated_alerts() {
    let alert = alert("north", "mining", Severity::High);
    let hooks = [webhook("a", "http://127.0.0.1:9/a")];
    assert!(plan(&alert, AlertChange::Repeated, &hooks, 0).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Worker and receiver

#[tokio::test]
async fn retries_503_then_delivers_once() {
    let (_dir, store) = open_store();
    let replies = vec![Reply::status(503), Reply::status(503), Reply::status(200)];
    let addr = "127.0.0.1:0".parse().unwrap();
    let (bound, receiver) = Receiver::start(addr, SECRET, Behaviour::replies(replies))
        .await
        .unwrap();
    let hooks = vec![webhook("ops", &format!("http://{bound}/hook"))];
    let metrics = Arc::new(Metrics::new());
    let deliverer = Deliverer::spawn(store.clone(), fast_config(), hooks.clone(), metrics.clone());

    let alert = alert("north", "mining", Severity::High);
    assert_eq!(enqueue(&store, &alert, AlertChange::Opened, &hooks), 1);
    deliverer.notify();
    let received = receiver.wait_for(3, WAIT).await.expect("three requests");
    let store_ref = &store;
    let emptied =
        wait_until(|| async move { outbox::depth(&store_ref.db()).unwrap().outbox == 0 }).await;
    deliverer.shutdown().await;

    assert_eq!(received.len(), 3, "requests: {received:?}");
    assert!(emptied, "outbox not emptied");
    let ids: HashSet<_> = received.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 1, "webhook-id changed across retries: {ids:?}");
    for request in &received {
        assert!(
            request.signature_valid,
            "invalid signature: {:?}",
            request.verify_error
        );
        let content_type = request.headers.get("content-type").unwrap();
        assert_eq!(content_type, "application/json");
        assert_eq!(
            request.json.as_ref().unwrap()["data"]["id"],
            alert.id.to_string()
        );
    }
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);

    let text = metrics.encode();
    let success = r#"gridwatch_webhook_deliveries_total{webhook="ops",outcome="success"} 1"#;
    assert!(text.contains(success), "{text}");
    let retry = r#"gridwatch_webhook_deliveries_total{webhook="ops",outcome="retry"} 2"#;
    assert!(text.contains(retry), "{text}");
    receiver.shutdown().await;
}

#[tokio::test]
async fn retry_after_delays_next_attempt() {
    let (_dir, store) = open_store();
    let replies = vec![Reply::retry_after(429, "1"), Reply::status(200)];
    let addr = "127.0.0.1:0".parse().unwrap();
    let (bound, receiver) = Receiver::start(addr, SECRET, Behaviour::replies(replies))
        .await
        .unwrap();
    let hooks = vec![webhook("ops", &format!("http://{bound}/hook"))];
    let deliverer = Deliverer::spawn(
        store.clone(),
        fast_config(),
        hooks.clone(),
        Arc::new(Metrics::new()),
    );

    enqueue(
        &store,
        &alert("north", "mining", Severity::High),
        AlertChange::Opened,
        &hooks,
    );
    deliverer.notify();
    let received = receiver.wait_for(2, WAIT).await.expect("two requests");
    deliverer.shutdown().await;

    let gap = received[1].received_at - received[0].received_at;
    assert!(
        gap >= Duration::from_millis(950),
        "retry came after {gap:?}, expected about 1 s"
    );
    assert_eq!(received[0].id, received[1].id);
    receiver.shutdown().await;
}

#[tokio::test]
async fn unreachable_receiver_ends_in_dead_letters() {
    let (_dir, store) = open_store();
    // Bind and release a port so that nothing listens on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let hooks = vec![webhook("ops", &format!("http://{addr}/hook"))];
    let config = DeliveryConfig {
        max_age_secs: 1,
        ..fast_config()
    };
    let metrics = Arc::new(Metrics::new());
    let deliverer = Deliverer::spawn(store.clone(), config, hooks.clone(), metrics.clone());

    enqueue(
        &store,
        &alert("north", "mining", Severity::High),
        AlertChange::Opened,
        &hooks,
    );
    deliverer.notify();
    let store_ref = &store;
    let moved =
        wait_until(|| async move { outbox::depth(&store_ref.db()).unwrap().dead_letters == 1 })
            .await;
    deliverer.shutdown().await;

    assert!(moved, "delivery not dead-lettered");
    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!(depth.outbox, 0, "outbox not empty");
    let letters = outbox::dead_letters(&store.db(), 10).unwrap();
    let last_error = letters[0].delivery.last_error.clone().unwrap_or_default();
    assert!(!last_error.is_empty(), "dead letter has no last error");
    assert!(
        letters[0].delivery.attempts >= 2,
        "attempts {}",
        letters[0].delivery.attempts
    );
    assert_eq!(metrics.dead_letters.get(), 1, "dead_letters gauge");
    assert_eq!(metrics.outbox_depth.get(), 0, "outbox_depth gauge");
}

#[tokio::test]
async fn unconfigured_webhook_goes_to_dead_letters() {
    let (_dir, store) = open_store();
    let item = delivery("removed", Ulid::new(), "alert.opened", now_ms());
    let txn = store.db().begin_write().unwrap();
    outbox::enqueue(&txn, &item).unwrap();
    txn.commit().unwrap();

    let deliverer = Deliverer::spawn(
        store.clone(),
        fast_config(),
        Vec::new(),
        Arc::new(Metrics::new()),
    );
    let store_ref = &store;
    let moved =
        wait_until(|| async move { outbox::depth(&store_ref.db()).unwrap().dead_letters == 1 })
            .await;
    deliverer.shutdown().await;

    assert!(
        moved,
        "delivery for an unconfigured webhook not dead-lettered"
    );
    let letters = outbox::dead_letters(&store.db(), 10).unwrap();
    let last_error = letters[0].delivery.last_error.clone().unwrap_or_default();
    assert!(
        last_error.contains("'removed' is not configured"),
        "{last_error}"
    );
}

#[tokio::test]
async fn receiver_rejects_tampered_body() {
    let addr = "127.0.0.1:0".parse().unwrap();
    let (bound, receiver) = Receiver::start(addr, SECRET, Behaviour::accept())
        .await
        .unwrap();
    let signer = Signer::from_secret(SECRET).unwrap();
    let now = now_secs();
    let signature = signer.sign("msg_1", now, br#"{"a":1}"#);

    let response = reqwest::Client::new()
        .post(format!("http://{bound}/"))
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(r#"{"a":2}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 401);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(!received[0].signature_valid, "tampered body verified");
    receiver.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Receiver faults

/// Plans and enqueues an `alert.opened` and an `alert.escalated` for each of `alerts` new alerts,
/// and returns every planned delivery.
fn enqueue_opened_and_escalated(
    store: &Store,
    hooks: &[WebhookConfig],
    alerts: usize,
) -> Vec<Delivery> {
    let mut planned = Vec::new();
    for _ in 0..alerts {
        let alert = alert("north", "mining", Severity::Medium);
        for change in [AlertChange::Opened, AlertChange::Escalated] {
            let deliveries = plan(&alert, change, hooks, now_ms());
            let txn = store.db().begin_write().unwrap();
            for delivery in &deliveries {
                outbox::enqueue(&txn, delivery).unwrap();
            }
            txn.commit().unwrap();
            planned.extend(deliveries);
        }
    }
    planned
}

fn outcome_count(metrics: &Metrics, webhook: &str, outcome: &str) -> u64 {
    let labels = vec![
        ("webhook", webhook.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics.webhook_deliveries.get_or_create(&labels).get()
}

fn disabled_gauge(metrics: &Metrics, webhook: &str) -> i64 {
    let labels = vec![("webhook", webhook.to_owned())];
    metrics.webhook_disabled.get_or_create(&labels).get()
}

#[tokio::test]
async fn receiver_down_then_back_delivers_all_in_order() {
    let (_dir, store) = open_store();
    // Bind and release a port, so nothing listens on it until the receiver starts there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hooks = vec![
        webhook("ops", &format!("http://{addr}/ops")),
        webhook("audit", &format!("http://{addr}/audit")),
    ];
    let metrics = Arc::new(Metrics::new());
    let deliverer = Deliverer::spawn(store.clone(), fast_config(), hooks.clone(), metrics.clone());

    let planned = enqueue_opened_and_escalated(&store, &hooks, 5);
    assert_eq!(planned.len(), 20, "planned deliveries");
    deliverer.notify();

    // About four failed attempts per alert and webhook, enough for the backoff ceiling to reach
    // `max_backoff_ms`.
    let chains = 10;
    let retried = wait_until(|| {
        let metrics = metrics.clone();
        async move {
            let retries =
                outcome_count(&metrics, "ops", "retry") + outcome_count(&metrics, "audit", "retry");
            retries >= 4 * chains
        }
    })
    .await;
    assert!(
        retried,
        "deliveries were not retried while the receiver was down"
    );

    let (_, receiver) = Receiver::start(addr, SECRET, Behaviour::accept())
        .await
        .unwrap();
    let arrived = receiver.wait_for(planned.len(), WAIT).await;
    let store_ref = &store;
    let emptied =
        wait_until(|| async move { outbox::depth(&store_ref.db()).unwrap().outbox == 0 }).await;
    deliverer.shutdown().await;
    receiver.shutdown().await;
    let received = arrived.unwrap_or_else(|got| panic!("{} of 20 requests arrived", got.len()));
    assert!(emptied, "outbox not emptied");

    let mut arrivals: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, request) in received.iter().enumerate() {
        assert!(
            request.signature_valid,
            "invalid signature: {:?}",
            request.verify_error
        );
        let id = request.id.clone().expect("webhook-id header");
        arrivals.entry(id).or_default().push(index);
    }
    for delivery in &planned {
        let seen = arrivals.get(&delivery.id).map_or(0, Vec::len);
        assert_eq!(seen, 1, "arrivals of {}", delivery.id);
    }
    assert_eq!(arrivals.len(), planned.len(), "distinct webhook-ids");

    // Per alert and webhook, `alert.opened` arrives before `alert.escalated`.
    for opened in planned.iter().filter(|d| d.event_type == "alert.opened") {
        let escalated = planned
            .iter()
            .find(|d| {
                d.event_type == "alert.escalated"
                    && d.alert_id == opened.alert_id
                    && d.webhook == opened.webhook
            })
            .expect("escalation planned for every opened alert");
        let opened_at = arrivals[&opened.id][0];
        let escalated_at = arrivals[&escalated.id][0];
        assert!(
            opened_at < escalated_at,
            "alert {} on '{}': opened arrived {opened_at}, escalated {escalated_at}",
            opened.alert_id,
            opened.webhook
        );
    }
    assert_eq!(outbox::depth(&store.db()).unwrap().dead_letters, 0);
}

#[tokio::test]
async fn gone_disables_webhook_across_restart() {
    let (_dir, store) = open_store();
    let any_port = "127.0.0.1:0".parse().unwrap();
    let gone_replies = Behaviour::replies(vec![Reply::status(410)]);
    let (gone_addr, gone) = Receiver::start(any_port, SECRET, gone_replies)
        .await
        .unwrap();
    let (ops_addr, ops) = Receiver::start(any_port, SECRET, Behaviour::accept())
        .await
        .unwrap();
    let hooks = vec![
        webhook("gone", &format!("http://{gone_addr}/hook")),
        webhook("ops", &format!("http://{ops_addr}/hook")),
    ];
    let metrics = Arc::new(Metrics::new());
    let deliverer = Deliverer::spawn(store.clone(), fast_config(), hooks.clone(), metrics.clone());

    enqueue_opened_and_escalated(&store, &hooks, 2);
    deliverer.notify();
    let store_ref = &store;
    let settled = wait_until(|| async move {
        let depth = outbox::depth(&store_ref.db()).unwrap();
        depth.outbox == 0 && depth.dead_letters == 4
    })
    .await;
    assert!(settled, "depth {:?}", outbox::depth(&store.db()).unwrap());
    ops.wait_for(4, WAIT).await.expect("ops deliveries");

    // Only chain heads are sent, so at most one request per alert reached the gone endpoint.
    let gone_requests = gone.received().len();
    assert!(
        (1..=2).contains(&gone_requests),
        "requests to the gone endpoint: {gone_requests}"
    );
    let disabled = outbox::disabled_webhooks(&store.db()).unwrap();
    let names: Vec<&str> = disabled.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["gone"]);
    assert_eq!(disabled[0].1.reason, retry::GONE_ERROR);
    assert_eq!(disabled[0].1.url, format!("http://{gone_addr}/hook"));
    for letter in outbox::dead_letters(&store.db(), 10).unwrap() {
        assert_eq!(
            letter.delivery.webhook, "gone",
            "dead letter {}",
            letter.delivery.id
        );
        assert_eq!(
            letter.delivery.last_error.as_deref(),
            Some(retry::GONE_ERROR),
            "dead letter {}",
            letter.delivery.id
        );
    }
    assert_eq!(disabled_gauge(&metrics, "gone"), 1, "gauge of 'gone'");
    assert_eq!(disabled_gauge(&metrics, "ops"), 0, "gauge of 'ops'");
    let text = metrics.encode();
    let gauge_line = r#"gridwatch_webhook_disabled{webhook="gone"} 1"#;
    assert!(text.contains(gauge_line), "{text}");
    let gone_count = outcome_count(&metrics, "gone", "gone");
    assert_eq!(gone_count, gone_requests as u64, "outcome 'gone' count");
    deliverer.shutdown().await;

    // After a restart the webhook is still disabled, and new alerts skip its endpoint.
    let metrics = Arc::new(Metrics::new());
    let deliverer = Deliverer::spawn(store.clone(), fast_config(), hooks.clone(), metrics.clone());
    let restored = wait_until(|| {
        let metrics = metrics.clone();
        async move { disabled_gauge(&metrics, "gone") == 1 }
    })
    .await;
    assert!(restored, "disabled gauge not set after restart");
    enqueue_opened_and_escalated(&store, &hooks, 1);
    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!(
        depth.dead_letters, 6,
        "new deliveries to 'gone' not dead-lettered at once"
    );
    deliverer.notify();
    ops.wait_for(6, WAIT)
        .await
        .expect("ops deliveries after restart");
    deliverer.shutdown().await;

    assert_eq!(
        gone.received().len(),
        gone_requests,
        "requests to the gone endpoint after it was disabled"
    );
    gone.shutdown().await;
    ops.shutdown().await;
}
