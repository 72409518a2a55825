//! Alert rows: one open alert per meter and kind, updated by later firings.

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use ulid::Ulid;

use super::{ALERTS, OPEN_ALERTS, StoreError, outbox};
use crate::alerts::{Alert, AlertChange, AlertDraft, AlertStatus};
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
                    Ulid::new(),
                    write.draft,
                    &write.region,
                    &write.meter,
                    write.ts_ms,
                );
                open.insert(key.as_str(), alert.id.0)?;
                (alert, AlertChange::Opened)
            }
        };
        let bytes = serde_json::to_vec(&alert).map_err(|e| StoreError::Corrupt {
            table: "alerts",
            detail: format!("failed to encode alert {}: {e}", alert.id),
        })?;
        alerts.insert(alert.id.0, bytes.as_slice())?;
        for delivery in crate::delivery::plan(&alert, change, webhooks, now_ms) {
            outbox::enqueue(txn, &delivery)?;
        }
        changes.push((alert, change));
    }
    Ok(changes)
}

fn decode(bytes: &[u8]) -> Result<Alert, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: "alerts",
        detail: e.to_string(),
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
