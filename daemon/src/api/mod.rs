//! HTTP endpoint: health, Prometheus metrics, the operator API and its OpenAPI document.
//!
//! `/healthz` and `/metrics` are open. Routes under `/api/` need `Authorization: Bearer <token>`
//! with a token from `http.api_token` or `[[http.tokens]]`, and are disabled while no token is
//! configured; [`auth`] checks tokens and scopes. Every route is registered with
//! [`utoipa_axum::routes`], which adds it to the router and to the OpenAPI document at once, so
//! `/api/openapi.json` lists exactly the routes served.
//!
//! | file | routes |
//! |---|---|
//! | `alerts.rs` | `/api/alerts`, `/api/alerts/{id}` and its actions |
//! | `webhooks.rs` | `/api/webhooks`, dead letters and their requeue |
//! | `meters.rs` | `/api/meters/{region}/{meter}` |
//! | `status.rs` | `/api/status`: rule files and plugins |
//! | `client.rs` | the `gridwatch alerts` and `gridwatch status` commands over this API |

pub mod alerts;
pub mod auth;
pub mod client;
pub mod meters;
pub mod status;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{ApiTokenConfig, WebhookConfig};
use crate::delivery::DeliveryNotifier;
use crate::metrics::Metrics;
use crate::pipeline::MeterView;
use crate::plugins::PluginHost;
use crate::rules::RuleEngine;
use crate::state::StateModel;
use crate::store::{RejectedMessage, Store, StoreError};

/// Largest page the listing endpoints return.
pub const MAX_LIMIT: usize = 1_000;

/// Page size of the listing endpoints when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Arc<Store>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Tokens the `/api/` routes accept; none disables them.
    pub tokens: Arc<Vec<ApiTokenConfig>>,
    /// Configured webhooks, for the webhook listing and the events of alert actions.
    pub webhooks: Arc<Vec<WebhookConfig>>,
    /// Wakes the delivery task after an action queues webhook events.
    pub delivery: DeliveryNotifier,
    /// Meter states held by the pipeline.
    pub meters: MeterView,
    /// The state model, for window statistics and the hourly history length.
    pub state_model: Arc<StateModel>,
    /// The rule engine, for `/api/status`; `None` leaves its `rules` out.
    pub rules: Option<Arc<RuleEngine>>,
    /// The plugin host, for `/api/status`; `None` leaves its `plugins` out.
    pub plugins: Option<Arc<PluginHost>>,
}

/// Error body of every `/api/` route.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Message naming what failed, the value involved and what to do.
    pub error: String,
}

/// A failed request: its status and message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the `error` field.
    pub message: String,
}

impl ApiError {
    /// Creates an error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// Creates a 400 error.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let status = match error {
            StoreError::Degraded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::error!(%error, "API request failed");
        ApiError::new(status, error.to_string())
    }
}

/// Parses a `limit` parameter: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when not given.
///
/// # Errors
/// Returns a 400 error naming the value.
pub fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "invalid limit '{text}', expected an integer from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// Runs a store call off the async runtime.
async fn blocking<T: Send + 'static>(
    state: &ApiState,
    call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(result) => Ok(result?),
        Err(error) => {
            tracing::error!(%error, "API store task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("store task failed: {error}"),
            ))
        }
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gridwatch",
        description = "Operator API of the gridwatch daemon: alerts, their actions and webhooks."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "alerts", description = "Alerts raised by rules and plugins"),
        (name = "webhooks", description = "Webhook endpoints, outbox and dead letters"),
        (name = "meters", description = "Meter state and hourly energy"),
        (name = "service", description = "Health, metrics, rejected messages and this document"),
    )
)]
struct ApiDoc;

/// Adds the `bearer` security scheme that the `/api/` routes name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Builds the routes under `/api/`, without the token check.
fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::ack_alert))
        .routes(routes!(alerts::resolve_alert))
        .routes(routes!(alerts::comment_alert))
        .routes(routes!(webhooks::list_webhooks))
        .routes(routes!(webhooks::list_dead_letters))
        .routes(routes!(webhooks::retry_dead_letters))
        .routes(routes!(meters::get_meter))
        .routes(routes!(status::get_status))
        .routes(routes!(rejected))
        .routes(routes!(openapi_json))
}

/// Builds the routes outside `/api/`, which need no token.
fn open_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// Returns the OpenAPI document of every route the router serves.
pub fn openapi() -> OpenApiDocument {
    open_routes().merge(api_routes()).into_openapi()
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let api = api_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    let (router, document) = open_routes().merge(api).split_for_parts();
    let document = match document.to_pretty_json() {
        Ok(json) => json,
        Err(error) => {
            tracing::error!(%error, "failed to encode the OpenAPI document");
            String::new()
        }
    };
    router
        .layer(Extension(OpenApiJson(Arc::new(document))))
        .with_state(state)
        .merge(crate::console::router())
}

/// The OpenAPI document as JSON text, shared by the requests.
#[derive(Clone)]
struct OpenApiJson(Arc<String>);

/// Binds the HTTP endpoint. Port 0 picks a free port; the listener reports which.
///
/// # Errors
/// Returns an error when the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the router on a bound listener until `shutdown` resolves.
///
/// # Errors
/// Returns an error when serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses(
        (status = 200, description = "Store commits succeed", body = String, content_type = "text/plain"),
        (status = 503, description = "Store commits are failing", body = String, content_type = "text/plain"),
    )
)]
/// Returns 200 while store commits succeed and 503 while they fail.
async fn healthz(State(state): State<ApiState>) -> Response {
    if state.metrics.store_healthy.get() == 0 {
        let body = "unhealthy: alert store commits are failing, readings are not acknowledged\n";
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    "ok\n".into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses(
        (status = 200, description = "Prometheus metrics in the OpenMetrics text format", body = String, content_type = "application/openmetrics-text"),
    )
)]
/// Returns the Prometheus metrics.
async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Query parameters of `GET /api/rejected`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RejectedParams {
    /// Messages listed, 1 to 1000; 100 when not given.
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/rejected",
    tag = "service",
    params(RejectedParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rejected messages, newest first", body = [Object]),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
    )
)]
/// Lists messages the decoder rejected, newest first.
async fn rejected(
    State(state): State<ApiState>,
    params: Result<Query<RejectedParams>, QueryRejection>,
) -> Result<Json<Vec<RejectedMessage>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = parse_limit(params.limit.as_deref())?;
    let rows = blocking(&state, move |store| store.list_rejected(limit)).await?;
    Ok(Json(rows))
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "service",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This OpenAPI 3 document", body = Object),
    )
)]
/// Returns this OpenAPI document.
async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
