//! Signed webhook delivery with retries and dead letters.
//!
//! The pipeline calls [`plan`] for each alert change and stores the resulting deliveries with
//! [`crate::store::outbox::enqueue`] in the transaction that stores the alert, then calls
//! [`Deliverer::notify`]. The [`Deliverer`] sends due deliveries, signed with [`signer`], and
//! reschedules, completes or dead-letters them in the outbox. A 410 Gone response disables the
//! webhook until an operator enables it with a command in [`admin`]. [`receiver`] is a verifying
//! endpoint for the demo and for tests.
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | endpoint filters and the JSON payload |
//! | `signer.rs` | Standard Webhooks HMAC-SHA256 signatures |
//! | `retry.rs` | backoff, `Retry-After` and the decision after an attempt |
//! | `worker.rs` | the delivery task |
//! | `admin.rs` | the `gridwatch webhooks` commands: dead letters, retry, enable |
//! | `receiver.rs` | a verifying webhook receiver |

pub mod admin;
pub mod receiver;
pub mod retry;
pub mod signer;
mod worker;

#[cfg(test)]
mod tests;

use chrono::{DateTime, SecondsFormat};
use serde_json::json;
use ulid::Ulid;

use crate::alerts::{Alert, AlertChange};
use crate::config::WebhookConfig;
use crate::store::outbox::Delivery;

pub(crate) use worker::redact_url;
pub use worker::{Deliverer, DeliveryNotifier, MAX_CONCURRENT_REQUESTS};

/// A payload that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The event time is outside the range that RFC 3339 can express.
    #[error("invalid event time {0} ms, outside the RFC 3339 range")]
    Timestamp(i64),
    /// The alert could not be serialized.
    #[error("failed to serialize alert: {0}")]
    Json(#[from] serde_json::Error),
}

/// Builds one delivery per webhook that accepts the alert. Returns nothing for changes that send
/// no notification, such as [`AlertChange::Repeated`].
///
/// Every delivery gets its own `webhook-id` (`msg_<ULID>`) and the same payload bytes. The
/// payload's `timestamp` is `now_ms`, the time the change was recorded.
pub fn plan(
    alert: &Alert,
    change: AlertChange,
    webhooks: &[WebhookConfig],
    now_ms: i64,
) -> Vec<Delivery> {
    let Some(event_type) = change.event_type() else {
        return Vec::new();
    };
    let targets: Vec<&WebhookConfig> = webhooks.iter().filter(|w| accepts(w, alert)).collect();
    if targets.is_empty() {
        return Vec::new();
    }

    let body = match payload(alert, event_type, now_ms) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(
                alert_id = %alert.id,
                %error,
                "failed to build webhook payload, alert not sent"
            );
            return Vec::new();
        }
    };

    targets
        .into_iter()
        .map(|webhook| Delivery {
            id: format!("msg_{}", Ulid::new()),
            webhook: webhook.name.clone(),
            alert_id: alert.id,
            event_type: event_type.to_owned(),
            body: body.clone(),
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        })
        .collect()
}

/// Returns true when the webhook's region, kind and severity filters accept the alert. An empty
/// region or kind list accepts every value.
pub fn accepts(webhook: &WebhookConfig, alert: &Alert) -> bool {
    let region = webhook.regions.is_empty() || webhook.regions.contains(&alert.region);
    let kind = webhook.kinds.is_empty() || webhook.kinds.contains(&alert.kind);
    region && kind && alert.severity >= webhook.min_severity
}

/// Builds the JSON payload `{"type", "timestamp", "data"}`, where `data` is the alert record.
///
/// # Errors
/// Returns an error when `now_ms` is outside the RFC 3339 range or the alert cannot be
/// serialized.
pub fn payload(alert: &Alert, event_type: &str, now_ms: i64) -> Result<Vec<u8>, PayloadError> {
    let time = DateTime::from_timestamp_millis(now_ms).ok_or(PayloadError::Timestamp(now_ms))?;
    let data = serde_json::to_value(alert)?;
    let envelope = json!({
        "type": event_type,
        "timestamp": time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    Ok(serde_json::to_vec(&envelope)?)
}
