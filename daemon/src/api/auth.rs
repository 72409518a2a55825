//! Bearer tokens and scopes of the routes under `/api/`.
//!
//! A `GET` or `HEAD` request needs a token of read or write scope. Every other method changes
//! something and needs write scope.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::config::{ApiTokenConfig, TokenScope};

/// The token that authorised a request, added to the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, recorded with alert actions.
    pub name: String,
    /// The token's scope.
    pub scope: TokenScope,
}

/// Returns the scope a request with this method needs.
pub fn required_scope(method: &Method) -> TokenScope {
    if method == Method::GET || method == Method::HEAD {
        TokenScope::Read
    } else {
        TokenScope::Write
    }
}

/// Finds the configured token equal to `presented`. Every token is compared, each in time that
/// depends only on the lengths, so the response time does not show which token came close.
fn find<'a>(tokens: &'a [ApiTokenConfig], presented: &str) -> Option<&'a ApiTokenConfig> {
    let mut found = None;
    for entry in tokens {
        if constant_time_eq(presented.as_bytes(), entry.token.expose().as_bytes()) {
            found = Some(entry);
        }
    }
    found
}

/// Rejects requests without a configured bearer token (401), or whose token lacks the scope
/// that the method needs (403), and adds the [`Caller`] to the others.
pub async fn require_token(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the API is disabled: set http.api_token or add [[http.tokens]] to enable it",
        )
        .into_response();
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or_default();
    let Some(entry) = find(&state.tokens, presented) else {
        let mut response =
            ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
                .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("valid header"),
        );
        return response;
    };
    let needed = required_scope(request.method());
    if entry.scope < needed {
        let message = format!(
            "token '{}' has scope {}, but {} {} needs scope {}",
            entry.name,
            entry.scope.as_str(),
            request.method(),
            request.uri().path(),
            needed.as_str()
        );
        return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
    }
    request.extensions_mut().insert(Caller {
        name: entry.name.clone(),
        scope: entry.scope,
    });
    next.run(request).await
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Returns the token of an `Authorization: Bearer <token>` value, with the scheme name in any
/// case, because some clients send `bearer`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn token(name: &str, value: &str, scope: TokenScope) -> ApiTokenConfig {
        ApiTokenConfig {
            name: name.into(),
            token: Secret::new(value),
            scope,
        }
    }

    #[test]
    fn find_matches_whole_token_only() {
        let tokens = [
            token("api", "write-secret", TokenScope::Write),
            token("dashboard", "read-secret", TokenScope::Read),
        ];
        assert_eq!(find(&tokens, "read-secret").unwrap().name, "dashboard");
        assert_eq!(find(&tokens, "write-secret").unwrap().name, "api");
        assert!(find(&tokens, "read-secre").is_none(), "prefix");
        assert!(find(&tokens, "").is_none(), "empty");
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn write_methods_need_write_scope() {
        assert_eq!(required_scope(&Method::GET), TokenScope::Read);
        assert_eq!(required_scope(&Method::HEAD), TokenScope::Read);
        assert_eq!(required_scope(&Method::POST), TokenScope::Write);
        assert_eq!(required_scope(&Method::DELETE), TokenScope::Write);
        assert!(TokenScope::Write > TokenScope::Read, "write includes read");
    }
}
