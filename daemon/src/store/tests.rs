use super::*;
use crate::alerts::{AlertDraft, AlertSource, AlertStatus, Severity};
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

fn firing_on(meter: &str, kind: &str, severity: Severity, ts_ms: i64) -> AlertWrite {
    let mut write = firing(severity, ts_ms);
    write.meter = meter.into();
    write.draft.kind = kind.into();
    write
}

fn action(kind: crate::alerts::ActionKind, by: &str, comment: Option<&str>) -> AlertAction {
    AlertAction {
        action: kind,
        by: by.into(),
        at_ms: 5_000,
        comment: comment.map(str::to_owned),
    }
}

fn page(store: &Store, before: Option<ulid::Ulid>, limit: usize) -> AlertPage {
    store
        .list_alert_page(&AlertQuery {
            before,
            limit,
            ..AlertQuery::default()
        })
        .unwrap()
}

#[test]
fn alert_pages_neither_repeat_nor_skip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let writes = (0..25)
        .map(|i| firing_on(&format!("m{i}"), "mining", Severity::Medium, i))
        .collect();
    commit(&store, writes, &[]);
    let all: Vec<ulid::Ulid> = page(&store, None, 1_000)
        .alerts
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest id first");
    // One batch opens its alerts within a millisecond or two, and their ids still follow the
    // order in which they were opened.
    let by_id: Vec<String> = store
        .list_alerts(100)
        .unwrap()
        .iter()
        .rev()
        .map(|a| a.meter.clone())
        .collect();
    let opened: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(by_id, opened, "ids increase in opening order");

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let current = page(&store, cursor, 10);
        pages += 1;
        seen.extend(current.alerts.iter().map(|a| a.id));
        // New alerts and repeat firings arrive between pages, within the same millisecond as
        // the listed ones, and still sort above them.
        let new_meter = format!("new{pages}");
        commit(
            &store,
            vec![
                firing_on(&new_meter, "mining", Severity::High, 100),
                firing_on("m3", "mining", Severity::High, 200),
            ],
            &[],
        );
        match current.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 alerts in pages of 10");
    assert_eq!(seen, all, "every alert once, in order");
}

#[test]
fn alert_filters_select_matching_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let mut north = firing_on("m2", "tamper", Severity::Critical, 3_000);
    north.region = "north".into();
    commit(
        &store,
        vec![
            firing_on("m1", "mining", Severity::Low, 1_000),
            firing_on("m1", "tamper", Severity::High, 2_000),
            north,
        ],
        &[],
    );

    let count = |query: AlertQuery| {
        store
            .list_alert_page(&AlertQuery {
                limit: 100,
                ..query
            })
            .unwrap()
            .alerts
            .len()
    };
    assert_eq!(count(AlertQuery::default()), 3, "no filter");

    let region = AlertQuery {
        region: Some("north".into()),
        ..AlertQuery::default()
    };
    assert_eq!(count(region), 1, "region");
    let kind = AlertQuery {
        kind: Some("tamper".into()),
        ..AlertQuery::default()
    };
    assert_eq!(count(kind), 2, "kind");
    let severity = AlertQuery {
        min_severity: Some(Severity::High),
        ..AlertQuery::default()
    };
    assert_eq!(count(severity), 2, "minimum severity");
    let meter = AlertQuery {
        meter: Some("m1".into()),
        ..AlertQuery::default()
    };
    assert_eq!(count(meter), 2, "meter");
    let range = AlertQuery {
        from_ms: Some(2_000),
        to_ms: Some(3_000),
        ..AlertQuery::default()
    };
    assert_eq!(count(range), 1, "from inclusive, to exclusive");
    let status = AlertQuery {
        status: Some(AlertStatus::Acknowledged),
        ..AlertQuery::default()
    };
    assert_eq!(count(status), 0, "status");
}

#[test]
fn alert_actions_follow_lifecycle() {
    use crate::alerts::ActionKind;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let hooks = [webhook()];
    commit(&store, vec![firing(Severity::Medium, 10)], &hooks);
    let id = store.list_alerts(1).unwrap()[0].id;
    let outbox_depth = || outbox::depth(&store.db()).unwrap().outbox;
    assert_eq!(outbox_depth(), 1, "alert.opened");

    let record = |kind, comment| {
        store
            .record_alert_action(id, action(kind, "oncall", comment), &hooks, 5_000)
            .unwrap()
    };
    let ActionOutcome::Applied(acked) = record(ActionKind::Acknowledge, Some("looking")) else {
        panic!("acknowledge failed");
    };
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.actions.len(), 1);
    assert_eq!(acked.actions[0].by, "oncall");
    assert_eq!(acked.actions[0].comment.as_deref(), Some("looking"));
    assert_eq!(outbox_depth(), 2, "alert.acknowledged");

    let changes = commit(&store, vec![firing(Severity::Medium, 20)], &hooks);
    assert_eq!(
        changes,
        vec![AlertChange::Repeated],
        "acknowledged alert keeps merging"
    );

    let ActionOutcome::Applied(resolved) = record(ActionKind::Resolve, None) else {
        panic!("resolve failed");
    };
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.count, 2);
    assert_eq!(outbox_depth(), 3, "alert.resolved");
    assert!(
        matches!(
            record(ActionKind::Acknowledge, None),
            ActionOutcome::Conflict(_)
        ),
        "acknowledging a resolved alert"
    );
    assert!(
        matches!(
            record(ActionKind::Resolve, None),
            ActionOutcome::Conflict(_)
        ),
        "resolving twice"
    );
    let ActionOutcome::Applied(commented) = record(ActionKind::Comment, Some("false alarm")) else {
        panic!("comment on a resolved alert failed");
    };
    assert_eq!(commented.actions.len(), 3, "conflicts record nothing");
    assert_eq!(outbox_depth(), 3, "a comment sends no event");

    let changes = commit(&store, vec![firing(Severity::Medium, 30)], &hooks);
    assert_eq!(
        changes,
        vec![AlertChange::Opened],
        "firing after resolve opens a new alert"
    );
    assert_eq!(store.list_alerts(10).unwrap().len(), 2);

    let unknown = ulid::Ulid::new();
    assert_eq!(
        store
            .record_alert_action(
                unknown,
                action(ActionKind::Comment, "x", Some("y")),
                &hooks,
                1
            )
            .unwrap(),
        ActionOutcome::NotFound
    );
    assert_eq!(store.get_alert(unknown).unwrap(), None);
}

#[test]
fn alert_row_without_actions_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let id = ulid::Ulid::new();
    let old_row = serde_json::json!({
        "id": id.to_string(), "kind": "mining", "severity": "high", "meter": "m1",
        "region": "south", "message": "flat load", "evidence": {},
        "source": {"rule": "common/mining.rhai", "content_hash": "ab"},
        "first_seen_ms": 1, "last_seen_ms": 2, "count": 1, "status": "open"
    });
    {
        let db = store.db();
        let txn = db.begin_write().unwrap();
        txn.open_table(ALERTS)
            .unwrap()
            .insert(id.0, serde_json::to_vec(&old_row).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let alert = store.get_alert(id).unwrap().expect("stored alert");
    assert!(alert.actions.is_empty());
    assert_eq!(alert.status, AlertStatus::Open);
}

#[test]
fn webhook_counts_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let hooks = [webhook()];
    commit(
        &store,
        vec![
            firing_on("m1", "mining", Severity::Medium, 1),
            firing_on("m2", "mining", Severity::Medium, 1),
        ],
        &hooks,
    );
    let first = outbox::due(&store.db(), i64::MAX, 1, &Default::default()).unwrap();
    let outbox::DueEntry::Ready(pending) = &first[0] else {
        panic!("unreadable delivery");
    };
    outbox::move_to_dead_letters(&store.db(), pending.seq, "timed out", 2).unwrap();
    let counts = outbox::webhook_counts(&store.db()).unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts["ops"].outbox, 1);
    assert_eq!(counts["ops"].dead_letters, 1);
}
