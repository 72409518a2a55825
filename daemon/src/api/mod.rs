//! HTTP endpoint: health, Prometheus metrics and read-only alert and rejection listings.
//!
//! `/healthz` and `/metrics` are open. Routes under `/api/` need `Authorization: Bearer <token>`
//! with `http.api_token`, and are disabled while no token is configured.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest page the listing endpoints return.
const MAX_LIMIT: usize = 1_000;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Arc<Store>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Token the `/api/` routes require; empty disables them.
    pub api_token: Secret,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/alerts", get(alerts))
        .route("/api/rejected", get(rejected))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
}

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

/// Rejects requests without the configured bearer token.
async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.api_token.expose();
    if expected.is_empty() {
        let body = "the API is disabled: set http.api_token to enable it\n";
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        let body = "missing or invalid bearer token\n";
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            body,
        )
            .into_response();
    }
    next.run(request).await
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(state): State<ApiState>) -> Response {
    if state.metrics.store_healthy.get() == 0 {
        let body = "unhealthy: alert store commits are failing, readings are not acknowledged\n";
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    "ok\n".into_response()
}

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

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<usize>,
}

async fn alerts(State(state): State<ApiState>, Query(page): Query<Page>) -> Response {
    let limit = page.limit.unwrap_or(100).min(MAX_LIMIT);
    list(state.store, move |store| store.list_alerts(limit)).await
}

async fn rejected(State(state): State<ApiState>, Query(page): Query<Page>) -> Response {
    let limit = page.limit.unwrap_or(100).min(MAX_LIMIT);
    list(state.store, move |store| store.list_rejected(limit)).await
}

/// Runs a store read off the async runtime and returns its rows as JSON.
async fn list<T: serde::Serialize + Send + 'static>(
    store: Arc<Store>,
    read: impl FnOnce(&Store) -> Result<Vec<T>, crate::store::StoreError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || read(&store)).await {
        Ok(Ok(rows)) => Json(rows).into_response(),
        Ok(Err(error)) => internal_error(&error.to_string()),
        Err(error) => internal_error(&error.to_string()),
    }
}

fn internal_error(message: &str) -> Response {
    tracing::error!(error = message, "API request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response()
}
