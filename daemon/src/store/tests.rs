use super::*;
use crate::alerts::{AlertDraft, AlertSource, Severity};
use crate::config::Secret;

fn webhook() -> WebhookConfig {
    WebhookConfig {
        name: "ops".into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        regions: Vec::new(),
        kinds: Vec::new(),
        min_severity: Severity::Info,
    }
}

fn firing(severity: Severity, ts_ms: i64) -> AlertWrite {
    AlertWrite {
        region: "south".into(),
        meter: "m1".into(),
        ts_ms,
        draft: AlertDraft {
            kind: "mining".into(),
            severity,
            message: "flat load".into(),
            evidence: serde_json::json!({ "mean_kw": 6.5 }),
            source: AlertSource {
                rule: "common/mining.rhai".into(),
                content_hash: "ab".into(),
            },
        },
    }
}

fn commit(store: &Store, alerts: Vec<AlertWrite>, webhooks: &[WebhookConfig]) -> Vec<AlertChange> {
    let batch = BatchWrite {
        plugin_state: Vec::new(),
        meters: Vec::new(),
        alerts,
        rejected: Vec::new(),
        webhooks,
        max_rejected_kept: 10,
        now_ms: 1_000,
    };
    store
        .commit_batch(batch)
        .unwrap()
        .into_iter()
        .map(|(_, change)| change)
        .collect()
}

#[test]
fn repeat_updates_and_escalation_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let hooks = [webhook()];

    let changes = commit(
        &store,
        vec![firing(Severity::Medium, 10), firing(Severity::Low, 20)],
        &hooks,
    );
    assert_eq!(changes, vec![AlertChange::Opened, AlertChange::Repeated]);
    let changes = commit(&store, vec![firing(Severity::High, 30)], &hooks);
    assert_eq!(changes, vec![AlertChange::Escalated]);

    let alerts = store.list_alerts(10).unwrap();
    assert_eq!(alerts.len(), 1, "one alert per meter and kind");
    let alert = &alerts[0];
    assert_eq!(alert.count, 3);
    assert_eq!(alert.severity, Severity::High);
    assert_eq!((alert.first_seen_ms, alert.last_seen_ms), (10, 30));
    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!(
        depth.outbox, 2,
        "opened and escalated are sent, the repeat is not"
    );
}

#[test]
fn rejected_table_evicts_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let rejection = crate::decode::Rejection {
        reason: crate::decode::RejectReason::MalformedJson,
        detail: "invalid JSON".into(),
    };
    for i in 0..15 {
        let row = RejectedMessage::new(i, "meters/a/b/telemetry", b"{", &rejection, 16);
        let batch = BatchWrite {
            plugin_state: Vec::new(),
            meters: Vec::new(),
            alerts: Vec::new(),
            rejected: vec![row],
            webhooks: &[],
            max_rejected_kept: 10,
            now_ms: i,
        };
        store.commit_batch(batch).unwrap();
    }
    let rows = store.list_rejected(100).unwrap();
    assert_eq!(rows.len(), 10, "bounded to max_rejected_kept");
    assert_eq!(rows[0].received_ms, 14, "newest first");
    assert_eq!(rows[9].received_ms, 5, "oldest five evicted");
}

#[test]
fn recover_does_not_recreate_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let moved = dir.path().join("moved.redb");
    let store = Store::open(&path).unwrap();
    let hooks = [webhook()];
    commit(&store, vec![firing(Severity::Medium, 10)], &hooks);

    // The file disappears from its path, as when its disk is unmounted for repair.
    std::fs::rename(&path, &moved).unwrap();
    let error = store.recover().unwrap_err();
    assert!(
        matches!(error, StoreError::Missing { .. }),
        "error for a missing file: {error}"
    );
    assert!(!path.exists(), "recover created a new store file");
    assert!(
        store.is_degraded(),
        "store degraded while the file is missing"
    );
    let batch = BatchWrite {
        plugin_state: Vec::new(),
        meters: Vec::new(),
        alerts: vec![firing(Severity::High, 20)],
        rejected: Vec::new(),
        webhooks: &hooks,
        max_rejected_kept: 10,
        now_ms: 2_000,
    };
    assert!(
        store.commit_batch(batch).is_err(),
        "commit accepted while the file is missing"
    );

    std::fs::rename(&moved, &path).unwrap();
    store.recover().unwrap();
    assert!(
        !store.is_degraded(),
        "store degraded after the file returned"
    );
    let alerts = store.list_alerts(10).unwrap();
    assert_eq!(alerts.len(), 1, "stored alert after the file returned");
    assert_eq!(alerts[0].severity, Severity::Medium);
}
