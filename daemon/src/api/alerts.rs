//! The alert routes: filtered listing with cursor pagination, one alert, and operator actions.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, ApiState, ErrorBody, blocking, now_ms, parse_limit};
use crate::alerts::{ActionKind, Alert, AlertAction, AlertStatus, Severity};
use crate::store::{ActionOutcome, AlertQuery};

/// Maximum length of a comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2_000;

/// Query parameters of `GET /api/alerts`. Every filter that is given must match.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    /// Exact status: `open`, `acknowledged` or `resolved`.
    status: Option<String>,
    /// Exact region.
    region: Option<String>,
    /// Exact alert kind, such as `mining`.
    kind: Option<String>,
    /// Lowest severity listed: `info`, `low`, `medium`, `high` or `critical`.
    severity: Option<String>,
    /// Exact meter id.
    meter: Option<String>,
    /// Earliest `last_seen_ms` listed, inclusive: Unix milliseconds or RFC 3339.
    from: Option<String>,
    /// Latest `last_seen_ms` listed, exclusive: Unix milliseconds or RFC 3339.
    to: Option<String>,
    /// Alerts per page, 1 to 1000; 100 when not given.
    limit: Option<String>,
    /// `next_cursor` of the previous page; the first page when not given.
    cursor: Option<String>,
}

/// One page of alerts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// The alerts of this page.
    alerts: Vec<Alert>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Body of the action routes: a comment, optional for acknowledge and resolve.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Operator's comment, at most 2000 characters.
    comment: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/alerts",
    tag = "alerts",
    params(AlertListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of alerts, newest first", body = AlertList),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    )
)]
/// Lists alerts, newest first, with filters and cursor pagination.
pub async fn list_alerts(
    State(state): State<ApiState>,
    params: Result<Query<AlertListParams>, QueryRejection>,
) -> Result<Json<AlertList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = parse_query(&params)?;
    let page = blocking(&state, move |store| store.list_alert_page(&query)).await?;
    Ok(Json(AlertList {
        alerts: page.alerts,
        next_cursor: page.next_cursor.map(|id| id.to_string()),
    }))
}

/// Turns the query parameters into an [`AlertQuery`].
///
/// # Errors
/// Returns a 400 error naming the first invalid value and what was expected.
pub fn parse_query(params: &AlertListParams) -> Result<AlertQuery, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(AlertStatus::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let min_severity = params
        .severity
        .as_deref()
        .map(Severity::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let from_ms = params
        .from
        .as_deref()
        .map(|text| parse_time("from", text))
        .transpose()?;
    let to_ms = params
        .to
        .as_deref()
        .map(|text| parse_time("to", text))
        .transpose()?;
    if let (Some(from), Some(to)) = (from_ms, to_ms)
        && from >= to
    {
        return Err(ApiError::bad_request(format!(
            "invalid time range: from ({from} ms) must be before to ({to} ms)"
        )));
    }
    let before = params
        .cursor
        .as_deref()
        .map(|text| {
            Ulid::from_string(text).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid cursor '{text}', expected the next_cursor of an earlier page"
                ))
            })
        })
        .transpose()?;
    Ok(AlertQuery {
        status,
        region: params.region.clone(),
        kind: params.kind.clone(),
        min_severity,
        meter: params.meter.clone(),
        from_ms,
        to_ms,
        before,
        limit: parse_limit(params.limit.as_deref())?,
    })
}

/// Parses Unix milliseconds or an RFC 3339 time.
fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "invalid {name} '{text}', expected Unix milliseconds or an RFC 3339 time such as \
                 2025-03-01T00:00:00Z"
            ))
        })
}

fn parse_id(text: &str) -> Result<Ulid, ApiError> {
    Ulid::from_string(text).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid alert id '{text}', expected a 26-character ULID"
        ))
    })
}

#[utoipa::path(
    get,
    path = "/api/alerts/{id}",
    tag = "alerts",
    params(("id" = String, Path, description = "Alert id, a ULID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The alert with its evidence and actions", body = Alert),
        (status = 400, description = "The id is not a ULID", body = ErrorBody),
        (status = 404, description = "No alert has this id", body = ErrorBody),
    )
)]
/// Returns one alert with its evidence and the operator actions taken on it.
pub async fn get_alert(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(&id)?;
    match blocking(&state, move |store| store.get_alert(id)).await? {
        Some(alert) => Ok(Json(alert)),
        None => Err(not_found(id)),
    }
}

fn not_found(id: Ulid) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("alert {id} not found"))
}

#[utoipa::path(
    post,
    path = "/api/alerts/{id}/ack",
    tag = "alerts",
    params(("id" = String, Path, description = "Alert id, a ULID")),
    request_body(content = ActionRequest, description = "Optional comment; the body may be empty"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The alert after the action", body = Alert),
        (status = 400, description = "The id or body is invalid", body = ErrorBody),
        (status = 403, description = "The token has read scope only", body = ErrorBody),
        (status = 404, description = "No alert has this id", body = ErrorBody),
        (status = 409, description = "The alert is resolved", body = ErrorBody),
    )
)]
/// Acknowledges an alert. It stays in the open-alert index, so later firings merge into it.
pub async fn ack_alert(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Alert>, ApiError> {
    act(state, caller, &id, ActionKind::Acknowledge, &body).await
}

#[utoipa::path(
    post,
    path = "/api/alerts/{id}/resolve",
    tag = "alerts",
    params(("id" = String, Path, description = "Alert id, a ULID")),
    request_body(content = ActionRequest, description = "Optional comment; the body may be empty"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The alert after the action", body = Alert),
        (status = 400, description = "The id or body is invalid", body = ErrorBody),
        (status = 403, description = "The token has read scope only", body = ErrorBody),
        (status = 404, description = "No alert has this id", body = ErrorBody),
        (status = 409, description = "The alert is already resolved", body = ErrorBody),
    )
)]
/// Resolves an alert. The next firing for its meter and kind opens a new alert.
pub async fn resolve_alert(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Alert>, ApiError> {
    act(state, caller, &id, ActionKind::Resolve, &body).await
}

#[utoipa::path(
    post,
    path = "/api/alerts/{id}/comments",
    tag = "alerts",
    params(("id" = String, Path, description = "Alert id, a ULID")),
    request_body(content = ActionRequest, description = "The comment, required"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The alert after the action", body = Alert),
        (status = 400, description = "The id or body is invalid", body = ErrorBody),
        (status = 403, description = "The token has read scope only", body = ErrorBody),
        (status = 404, description = "No alert has this id", body = ErrorBody),
    )
)]
/// Adds a comment to an alert of any status.
pub async fn comment_alert(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Alert>, ApiError> {
    act(state, caller, &id, ActionKind::Comment, &body).await
}

async fn act(
    state: ApiState,
    caller: Caller,
    id: &str,
    kind: ActionKind,
    body: &[u8],
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(id)?;
    let comment = parse_comment(body, kind)?;
    let action = AlertAction {
        action: kind,
        by: caller.name.clone(),
        at_ms: now_ms(),
        comment,
    };
    let webhooks = state.webhooks.clone();
    let at_ms = action.at_ms;
    let outcome = blocking(&state, move |store| {
        store.record_alert_action(id, action, &webhooks, at_ms)
    })
    .await?;
    match outcome {
        ActionOutcome::Applied(alert) => {
            let alert = *alert;
            if kind != ActionKind::Comment {
                state.delivery.notify();
            }
            tracing::info!(
                alert_id = %id,
                action = ?kind,
                by = %caller.name,
                status = alert.status.as_str(),
                "alert action recorded"
            );
            Ok(Json(alert))
        }
        ActionOutcome::NotFound => Err(not_found(id)),
        ActionOutcome::Conflict(message) => {
            tracing::info!(alert_id = %id, action = ?kind, by = %caller.name, %message, "alert action rejected");
            Err(ApiError::new(StatusCode::CONFLICT, message))
        }
    }
}

/// Reads the optional JSON body `{"comment": "..."}`; `/comments` requires a comment.
fn parse_comment(body: &[u8], kind: ActionKind) -> Result<Option<String>, ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ActionRequest::default()
    } else {
        serde_json::from_slice::<ActionRequest>(body).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid request body: {e}; expected a JSON object such as {{\"comment\": \"...\"}}"
            ))
        })?
    };
    let comment = request.comment.filter(|c| !c.trim().is_empty());
    if let Some(text) = &comment {
        let chars = text.chars().count();
        if chars > MAX_COMMENT_CHARS {
            return Err(ApiError::bad_request(format!(
                "invalid comment: {chars} characters, expected at most {MAX_COMMENT_CHARS}"
            )));
        }
    }
    if kind == ActionKind::Comment && comment.is_none() {
        return Err(ApiError::bad_request(
            "missing comment: expected a JSON body such as {\"comment\": \"...\"}",
        ));
    }
    Ok(comment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> AlertListParams {
        let text = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let uri: axum::http::Uri = format!("/api/alerts?{text}").parse().unwrap();
        Query::<AlertListParams>::try_from_uri(&uri).unwrap().0
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        parse_query(&params(pairs)).unwrap_err().message
    }

    #[test]
    fn query_parses_filters_and_times() {
        let query = parse_query(&params(&[
            ("status", "open"),
            ("severity", "high"),
            ("from", "1750000000000"),
            ("to", "2025-06-16T00:00:00Z"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(query.status, Some(AlertStatus::Open));
        assert_eq!(query.min_severity, Some(Severity::High));
        assert_eq!(query.from_ms, Some(1_750_000_000_000));
        assert_eq!(query.to_ms, Some(1_750_032_000_000));
        assert_eq!(query.limit, 5);
        assert_eq!(parse_query(&params(&[])).unwrap().limit, 100, "default");
    }

    #[test]
    fn query_errors_name_value_and_expectation() {
        let cases = [
            (("status", "closed"), "invalid status 'closed'"),
            (("severity", "urgent"), "invalid severity 'urgent'"),
            (("from", "yesterday"), "invalid from 'yesterday'"),
            (
                ("limit", "0"),
                "invalid limit '0', expected an integer from 1 to 1000",
            ),
            (("limit", "1001"), "invalid limit '1001'"),
            (("cursor", "abc"), "invalid cursor 'abc'"),
        ];
        for ((key, value), expected) in cases {
            let message = error(&[(key, value)]);
            assert!(message.contains(expected), "{key}={value}: {message}");
        }
        let message = error(&[("from", "2000"), ("to", "1000")]);
        assert!(message.contains("must be before"), "{message}");
    }

    #[test]
    fn comment_body_rules() {
        assert_eq!(parse_comment(b"", ActionKind::Acknowledge).unwrap(), None);
        assert_eq!(
            parse_comment(br#"{"comment":"checked"}"#, ActionKind::Resolve).unwrap(),
            Some("checked".into())
        );
        assert!(parse_comment(b"", ActionKind::Comment).is_err(), "required");
        assert!(parse_comment(b"{\"note\":1}", ActionKind::Acknowledge).is_err());
        let long = format!("{{\"comment\":\"{}\"}}", "x".repeat(MAX_COMMENT_CHARS + 1));
        assert!(parse_comment(long.as_bytes(), ActionKind::Comment).is_err());
    }
}
