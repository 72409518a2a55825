//! The webhook routes: endpoint state, dead letters and their requeue.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody, blocking, now_ms, parse_limit};
use crate::delivery::redact_url;
use crate::store::outbox::{self, DeadLetter, DeadLetterFilter, WebhookCounts};

/// One webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookStatus {
    /// Name, as in the configuration.
    name: String,
    /// Endpoint URL without user info, query or fragment; `null` when the name is not configured.
    url: Option<String>,
    /// False for a name that only the store still holds, such as a removed webhook with dead
    /// letters.
    configured: bool,
    /// False after the endpoint returned 410 Gone, until an operator enables it again.
    enabled: bool,
    /// Reason it was disabled; `null` while enabled.
    disabled_reason: Option<String>,
    /// When it was disabled, Unix milliseconds; `null` while enabled.
    disabled_ms: Option<i64>,
    /// Deliveries waiting in the outbox.
    outbox_depth: u64,
    /// Deliveries in the dead-letter table.
    dead_letters: u64,
}

/// Every webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Configured webhooks in configuration order, then names only the store holds.
    webhooks: Vec<WebhookStatus>,
}

#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every webhook with its state and queue counts", body = WebhookList),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    )
)]
/// Lists each webhook's URL, whether it is enabled, its outbox depth and its dead letters.
pub async fn list_webhooks(State(state): State<ApiState>) -> Result<Json<WebhookList>, ApiError> {
    let (mut counts, mut disabled) = blocking(&state, |store| {
        let db = store.db();
        let counts = outbox::webhook_counts(&db)?;
        let disabled: BTreeMap<_, _> = outbox::disabled_webhooks(&db)?.into_iter().collect();
        Ok((counts, disabled))
    })
    .await?;

    let mut webhooks = Vec::new();
    for hook in state.webhooks.iter() {
        let count = counts.remove(&hook.name).unwrap_or_default();
        let record = disabled.remove(&hook.name);
        webhooks.push(status(
            hook.name.clone(),
            Some(redact_url(&hook.url)),
            record,
            count,
        ));
    }
    let mut leftover: BTreeMap<String, WebhookCounts> = counts;
    for name in disabled.keys() {
        leftover.entry(name.clone()).or_default();
    }
    for (name, count) in leftover {
        let record = disabled.remove(&name);
        webhooks.push(status(name, None, record, count));
    }
    Ok(Json(WebhookList { webhooks }))
}

fn status(
    name: String,
    url: Option<String>,
    record: Option<outbox::DisabledWebhook>,
    count: WebhookCounts,
) -> WebhookStatus {
    WebhookStatus {
        name,
        configured: url.is_some(),
        url,
        enabled: record.is_none(),
        disabled_reason: record.as_ref().map(|r| r.reason.clone()),
        disabled_ms: record.as_ref().map(|r| r.disabled_ms),
        outbox_depth: count.outbox,
        dead_letters: count.dead_letters,
    }
}

/// Query parameters of `GET /api/webhooks/dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// Lists only the dead letters of this webhook.
    webhook: Option<String>,
    /// Dead letters listed, 1 to 1000; 100 when not given.
    limit: Option<String>,
}

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterRow {
    /// The `webhook-id`, `msg_<ULID>`.
    id: String,
    /// Webhook name.
    webhook: String,
    /// Alert the message is about.
    alert_id: String,
    /// Event type, such as `alert.opened`.
    event_type: String,
    /// Attempts made.
    attempts: u32,
    /// Time it entered the outbox, Unix milliseconds.
    created_ms: i64,
    /// Time it was given up, Unix milliseconds.
    dead_lettered_ms: i64,
    /// Error of the last attempt.
    last_error: Option<String>,
}

impl From<DeadLetter> for DeadLetterRow {
    fn from(letter: DeadLetter) -> DeadLetterRow {
        let delivery = letter.delivery;
        DeadLetterRow {
            id: delivery.id,
            webhook: delivery.webhook,
            alert_id: delivery.alert_id.to_string(),
            event_type: delivery.event_type,
            attempts: delivery.attempts,
            created_ms: delivery.created_ms,
            dead_lettered_ms: letter.dead_lettered_ms,
            last_error: delivery.last_error,
        }
    }
}

/// Dead letters, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    /// The dead letters.
    dead_letters: Vec<DeadLetterRow>,
}

#[utoipa::path(
    get,
    path = "/api/webhooks/dead-letters",
    tag = "webhooks",
    params(DeadLetterParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Dead letters, oldest first", body = DeadLetterList),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
    )
)]
/// Lists deliveries that were given up, oldest first.
pub async fn list_dead_letters(
    State(state): State<ApiState>,
    params: Result<Query<DeadLetterParams>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = parse_limit(params.limit.as_deref())?;
    let filter = params
        .webhook
        .map_or(DeadLetterFilter::All, DeadLetterFilter::Webhook);
    let letters = blocking(&state, move |store| {
        outbox::dead_letters_matching(&store.db(), &filter, limit)
    })
    .await?;
    Ok(Json(DeadLetterList {
        dead_letters: letters.into_iter().map(DeadLetterRow::from).collect(),
    }))
}

/// The dead letters to requeue: exactly one of the three fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// `true` for every dead letter.
    #[serde(default)]
    all: bool,
    /// Every dead letter of this webhook.
    webhook: Option<String>,
    /// The dead letter with this `webhook-id`.
    id: Option<String>,
}

/// Outcome of a requeue.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryResult {
    /// Dead letters moved back into the outbox.
    requeued: usize,
    /// Matching dead letters left in place because their webhook is disabled.
    held_back: usize,
}

#[utoipa::path(
    post,
    path = "/api/webhooks/dead-letters/retry",
    tag = "webhooks",
    request_body(content = RetryRequest, description = "Exactly one of all, webhook and id"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts of requeued and held-back dead letters", body = RetryResult),
        (status = 400, description = "The body is invalid", body = ErrorBody),
        (status = 403, description = "The token has read scope only", body = ErrorBody),
        (status = 404, description = "No dead letter has the id", body = ErrorBody),
    )
)]
/// Moves dead letters back into the outbox, as `gridwatch webhooks retry` does. Each keeps its
/// `webhook-id`, restarts its attempt count and is sent at once. Dead letters of a disabled
/// webhook stay.
pub async fn retry_dead_letters(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<RetryResult>, ApiError> {
    let request: RetryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid request body: {e}; expected {{\"all\": true}}, {{\"webhook\": \"NAME\"}} or \
             {{\"id\": \"msg_...\"}}"
        ))
    })?;
    let filter = match (request.all, request.webhook, request.id) {
        (true, None, None) => DeadLetterFilter::All,
        (false, Some(name), None) => DeadLetterFilter::Webhook(name),
        (false, None, Some(id)) => DeadLetterFilter::Id(id),
        _ => {
            return Err(ApiError::bad_request(
                "invalid request body: expected exactly one of \"all\": true, \"webhook\" and \"id\"",
            ));
        }
    };
    let chosen = filter.clone();
    let moved = blocking(&state, move |store| {
        let db = store.db_for_write()?;
        outbox::requeue_dead_letters(&db, &chosen, now_ms())
    })
    .await?;
    if let (DeadLetterFilter::Id(id), 0) = (&filter, moved.requeued + moved.held_back) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("dead letter '{id}' not found"),
        ));
    }
    if moved.requeued > 0 {
        state.delivery.notify();
    }
    tracing::info!(
        requeued = moved.requeued,
        held_back = moved.held_back,
        "dead letters requeued through the API"
    );
    Ok(Json(RetryResult {
        requeued: moved.requeued,
        held_back: moved.held_back,
    }))
}
