//! Web console: the alert list, the alert page with the meter's load curve, and the service
//! status, served by the daemon at `/console/`.
//!
//! The page, script and style sheet are compiled into the binary and load nothing from other
//! hosts. The pages themselves are open like `/metrics`, and the script calls `/api/` with the
//! bearer token the operator enters, which stays in the browser tab's session storage.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Same-origin content only, so an injected script or frame from elsewhere does not run.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";

/// Returns the console's routes: `/` and `/console` redirect to `/console/`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_only_its_own_assets() {
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", SCRIPT),
            ("style.css", STYLE),
        ] {
            for remote in ["http://", "https://", "//cdn"] {
                let found = text
                    .lines()
                    .any(|line| line.contains(remote) && !line.contains("www.w3.org/2000/svg"));
                assert!(!found, "{name} refers to '{remote}'");
            }
        }
        assert!(INDEX.contains(r#"src="/console/app.js""#));
        assert!(INDEX.contains(r#"href="/console/style.css""#));
    }
}
