//! Alert rows: one open alert per meter and kind, updated by later firings.

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use ulid::Ulid;

use super::{ALERTS, OPEN_ALERTS, StoreError, outbox};
use crate::alerts::{
    ActionKind, Alert, AlertAction, AlertChange, AlertDraft, AlertStatus, Severity,
};
use crate::config::WebhookConfig;

/// An alert draft with the reading it fired on.
#[derive(Debug, Clone)]
pub struct AlertWrite {
    /// Region of the reading.
    pub region: String,
    /// Meter of the reading.
    pub meter: String,
    /// Reading time, Unix milliseconds.
    pub ts_ms: i64,
    /// The alert the rule raised.
    pub draft: AlertDraft,
}

/// Returns the key of the open-alert index: `region/meter/kind`.
pub fn open_alert_key(region: &str, meter: &str, kind: &str) -> String {
    format!("{region}/{meter}/{kind}")
}

pub(super) fn write_alerts(
    txn: &WriteTransaction,
    writes: Vec<AlertWrite>,
    webhooks: &[WebhookConfig],
    now_ms: i64,
) -> Result<Vec<(Alert, AlertChange)>, StoreError> {
    let mut changes = Vec::with_capacity(writes.len());
    if writes.is_empty() {
        return Ok(changes);
    }
    let mut alerts = txn.open_table(ALERTS)?;
    let mut open = txn.open_table(OPEN_ALERTS)?;
    for write in writes {
        let key = open_alert_key(&write.region, &write.meter, &write.draft.kind);
        let existing = match open.get(key.as_str())? {
            Some(id) => {
                let id = id.value();
                alerts
                    .get(id)?
                    .map(|bytes| decode(bytes.value()))
                    .transpose()?
            }
            None => None,
        };
        let (alert, change) = match existing {
            Some(mut alert) if alert.status != AlertStatus::Resolved => {
                let change = alert.merge(write.draft, write.ts_ms);
                (alert, change)
            }
            _ => {
                let alert = Alert::open(
                    next_alert_id(),
                    write.draft,
                    &write.region,
                    &write.meter,
                    write.ts_ms,
                );
                open.insert(key.as_str(), alert.id.0)?;
                (alert, AlertChange::Opened)
            }
        };
        let bytes = encode(&alert)?;
        alerts.insert(alert.id.0, bytes.as_slice())?;
        for delivery in crate::delivery::plan(&alert, change, webhooks, now_ms) {
            outbox::enqueue(txn, &delivery)?;
        }
        changes.push((alert, change));
    }
    Ok(changes)
}

/// Makes a new alert id. Ids increase within the process, even within one millisecond or when
/// the clock steps back, so a new alert sorts above every alert already listed.
fn next_alert_id() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // ulid 1.2.1 fails only when incrementing overflows the 80 random bits of the previous id.
    // The fallback is then a fresh id, which may sort lower.
    generator.generate().unwrap_or_else(|_| Ulid::new())
}

fn decode(bytes: &[u8]) -> Result<Alert, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: "alerts",
        detail: e.to_string(),
    })
}

/// Filters and position of one page of [`super::Store::list_alert_page`]. Every filter that is
/// set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    /// Exact status.
    pub status: Option<AlertStatus>,
    /// Exact region.
    pub region: Option<String>,
    /// Exact kind.
    pub kind: Option<String>,
    /// Lowest severity listed.
    pub min_severity: Option<Severity>,
    /// Exact meter id.
    pub meter: Option<String>,
    /// Earliest `last_seen_ms` listed, inclusive, Unix milliseconds.
    pub from_ms: Option<i64>,
    /// Latest `last_seen_ms` listed, exclusive, Unix milliseconds.
    pub to_ms: Option<i64>,
    /// Lists only alerts with ids below this one: the previous page's `next_cursor`.
    pub before: Option<Ulid>,
    /// Largest number of alerts returned.
    pub limit: usize,
}

impl AlertQuery {
    fn matches(&self, alert: &Alert) -> bool {
        self.status.is_none_or(|status| alert.status == status)
            && self
                .region
                .as_ref()
                .is_none_or(|region| alert.region == *region)
            && self.kind.as_ref().is_none_or(|kind| alert.kind == *kind)
            && self.min_severity.is_none_or(|min| alert.severity >= min)
            && self
                .meter
                .as_ref()
                .is_none_or(|meter| alert.meter == *meter)
            && self.from_ms.is_none_or(|from| alert.last_seen_ms >= from)
            && self.to_ms.is_none_or(|to| alert.last_seen_ms < to)
    }
}

/// One page of alerts, newest id first.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    /// The matching alerts.
    pub alerts: Vec<Alert>,
    /// Id to pass as [`AlertQuery::before`] for the next page, or `None` on the last page.
    pub next_cursor: Option<Ulid>,
}

/// Lists the alerts that match `query`, newest id first, starting below `query.before`.
///
/// Alert ids are ULIDs made when an alert opens, increasing within the daemon process, so an
/// alert opened after the first page has a higher id than the cursor and never shows up on a
/// later page. A merged firing updates its row
/// in place. Pages therefore repeat and skip nothing while new readings arrive, but a status
/// filter applies to each alert's status at the time its page is read.
// NOTE: filters are applied while scanning, so a filter that matches few alerts reads the whole
// table below the cursor.
pub(super) fn list_page(db: &Database, query: &AlertQuery) -> Result<AlertPage, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(ALERTS)?;
    let rows = match query.before {
        Some(before) => table.range(..before.0)?,
        None => table.range(..=u128::MAX)?,
    };
    let mut alerts = Vec::new();
    let mut next_cursor = None;
    for row in rows.rev() {
        let (_, bytes) = row?;
        let alert = decode(bytes.value())?;
        if !query.matches(&alert) {
            continue;
        }
        if alerts.len() == query.limit {
            next_cursor = alerts.last().map(|last: &Alert| last.id);
            break;
        }
        alerts.push(alert);
    }
    Ok(AlertPage {
        alerts,
        next_cursor,
    })
}

/// Loads one alert by id.
pub(super) fn get(db: &Database, id: Ulid) -> Result<Option<Alert>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(ALERTS)?;
    table
        .get(id.0)?
        .map(|bytes| decode(bytes.value()))
        .transpose()
}

/// Result of [`super::Store::record_alert_action`].
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// The action was stored; the alert as it is now.
    Applied(Box<Alert>),
    /// No alert has the id.
    NotFound,
    /// The action does not apply to the alert's status; the message gives the reason.
    Conflict(String),
}

/// Stores an operator action on an alert and queues the webhook events its status change sends.
///
/// Acknowledging an open alert sets it to acknowledged and keeps it in the open-alert index, so
/// later firings still merge into it. Acknowledging it again records the action only. Resolving
/// removes it from the index, so the next firing opens a new alert. A resolved alert takes
/// comments only: acknowledging or resolving it is a [`ActionOutcome::Conflict`].
pub(super) fn record_action(
    txn: &WriteTransaction,
    id: Ulid,
    action: AlertAction,
    webhooks: &[WebhookConfig],
    now_ms: i64,
) -> Result<ActionOutcome, StoreError> {
    let mut alerts = txn.open_table(ALERTS)?;
    let Some(mut alert) = alerts
        .get(id.0)?
        .map(|bytes| decode(bytes.value()))
        .transpose()?
    else {
        return Ok(ActionOutcome::NotFound);
    };
    let change = match (action.action, alert.status) {
        (ActionKind::Acknowledge | ActionKind::Resolve, AlertStatus::Resolved) => {
            return Ok(ActionOutcome::Conflict(format!(
                "alert {id} is resolved, so it can only take comments"
            )));
        }
        (ActionKind::Acknowledge, AlertStatus::Open) => {
            alert.status = AlertStatus::Acknowledged;
            Some(AlertChange::Acknowledged)
        }
        (ActionKind::Resolve, _) => {
            alert.status = AlertStatus::Resolved;
            let key = open_alert_key(&alert.region, &alert.meter, &alert.kind);
            let mut open = txn.open_table(OPEN_ALERTS)?;
            let indexed = open.get(key.as_str())?.map(|guard| guard.value());
            if indexed == Some(id.0) {
                open.remove(key.as_str())?;
            }
            Some(AlertChange::Resolved)
        }
        (ActionKind::Acknowledge, AlertStatus::Acknowledged) | (ActionKind::Comment, _) => None,
    };
    alert.actions.push(action);
    let bytes = encode(&alert)?;
    alerts.insert(alert.id.0, bytes.as_slice())?;
    if let Some(change) = change {
        for delivery in crate::delivery::plan(&alert, change, webhooks, now_ms) {
            outbox::enqueue(txn, &delivery)?;
        }
    }
    Ok(ActionOutcome::Applied(Box::new(alert)))
}

fn encode(alert: &Alert) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(alert).map_err(|e| StoreError::Corrupt {
        table: "alerts",
        detail: format!("failed to encode alert {}: {e}", alert.id),
    })
}

pub(super) fn list(db: &Database, limit: usize) -> Result<Vec<Alert>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(ALERTS)?;
    let mut out = Vec::new();
    for row in table.iter()?.rev().take(limit) {
        let (_, bytes) = row?;
        out.push(decode(bytes.value())?);
    }
    Ok(out)
}
