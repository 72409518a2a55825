//! Rejected messages, kept for inspection with the oldest evicted first.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{REJECTED, StoreError};
use crate::decode::RejectReason;

/// A message the decoder rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedMessage {
    /// Time of receipt, Unix milliseconds.
    pub received_ms: i64,
    /// MQTT topic.
    pub topic: String,
    /// Reason code.
    pub reason: RejectReason,
    /// Sentence naming the value and what was expected.
    pub detail: String,
    /// The payload, truncated to the configured size, lossily decoded as UTF-8.
    pub payload: String,
    /// Size of the full payload in bytes.
    pub payload_bytes: usize,
}

impl RejectedMessage {
    /// Builds a record, keeping at most `max_payload_bytes` of the payload.
    pub fn new(
        received_ms: i64,
        topic: &str,
        payload: &[u8],
        rejection: &crate::decode::Rejection,
        max_payload_bytes: usize,
    ) -> Self {
        let kept = &payload[..payload.len().min(max_payload_bytes)];
        RejectedMessage {
            received_ms,
            topic: topic.to_owned(),
            reason: rejection.reason,
            detail: rejection.detail.clone(),
            payload: String::from_utf8_lossy(kept).into_owned(),
            payload_bytes: payload.len(),
        }
    }
}

pub(super) fn write(
    txn: &WriteTransaction,
    rows: Vec<RejectedMessage>,
    max_kept: u64,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(REJECTED)?;
    let next = table.last()?.map_or(0, |(k, _)| k.value() + 1);
    for (key, row) in (next..).zip(rows) {
        let bytes = serde_json::to_vec(&row).map_err(|e| StoreError::Corrupt {
            table: "rejected",
            detail: e.to_string(),
        })?;
        table.insert(key, bytes.as_slice())?;
    }
    let excess = table.len()?.saturating_sub(max_kept);
    for _ in 0..excess {
        table.pop_first()?;
    }
    Ok(())
}

pub(super) fn list(db: &Database, limit: usize) -> Result<Vec<RejectedMessage>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(REJECTED)?;
    let mut out = Vec::new();
    for row in table.iter()?.rev().take(limit) {
        let (_, bytes) = row?;
        let message = serde_json::from_slice(bytes.value()).map_err(|e| StoreError::Corrupt {
            table: "rejected",
            detail: e.to_string(),
        })?;
        out.push(message);
    }
    Ok(out)
}
