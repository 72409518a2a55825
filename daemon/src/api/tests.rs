use super::*;
use crate::config::{Secret, TokenScope};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Returns every `(method, path)` of the OpenAPI document, methods in upper case.
fn documented_routes() -> Vec<(String, String)> {
    let document = serde_json::to_value(openapi()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes.sort();
    routes
}

#[test]
fn routes_only_registered_through_utoipa() {
    // Every route must come from `routes!`, which also documents it. A bare `.route(` call
    // would serve a path that the OpenAPI document does not list.
    let sources = [
        ("mod.rs", include_str!("mod.rs")),
        ("alerts.rs", include_str!("alerts.rs")),
        ("webhooks.rs", include_str!("webhooks.rs")),
    ];
    for (file, source) in sources {
        for (number, line) in source.lines().enumerate() {
            for call in [".route(", ".nest(", ".route_service(", ".fallback("] {
                assert!(
                    !line.contains(call) || line.trim_start().starts_with("//"),
                    "{file}:{}: routes must be added with routes!(): {line}",
                    number + 1
                );
            }
        }
    }
}

#[test]
fn docs_list_every_documented_route() {
    let docs = include_str!("../../../docs/api.md");
    let mut listed: Vec<(String, String)> = docs
        .lines()
        .filter_map(|line| {
            let heading = line.strip_prefix("### `")?.strip_suffix('`')?;
            let (method, path) = heading.split_once(' ')?;
            Some((method.to_owned(), path.to_owned()))
        })
        .collect();
    listed.sort();
    assert_eq!(listed, documented_routes(), "routes in docs/api.md");
}

fn state(dir: &std::path::Path) -> ApiState {
    let token = |name: &str, scope| ApiTokenConfig {
        name: name.into(),
        token: Secret::new(format!("{name}-token")),
        scope,
    };
    ApiState {
        store: Arc::new(Store::open(&dir.join("store.redb")).unwrap()),
        metrics: Arc::new(Metrics::new()),
        tokens: Arc::new(vec![
            token("writer", TokenScope::Write),
            token("reader", TokenScope::Read),
        ]),
        webhooks: Arc::new(Vec::new()),
        delivery: DeliveryNotifier::default(),
        meters: MeterView::default(),
        rules: None,
        plugins: None,
        state_model: Arc::new(StateModel::new(
            &crate::config::StateConfig::default(),
            10_000.0,
        )),
    }
}

async fn serve_router(state: ApiState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    base
}

#[tokio::test]
async fn router_serves_exactly_documented_methods() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve_router(state(dir.path())).await;
    let client = reqwest::Client::new();
    let documented = documented_routes();
    let id = ulid::Ulid::new().to_string();
    let fill = |path: &str| {
        path.replace("{id}", &id)
            .replace("{region}", "south")
            .replace("{meter}", "m1")
    };
    let paths: std::collections::BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let url = format!("{base}{}", fill(path));
        for method in METHODS {
            let response = client
                .request(method.parse().unwrap(), &url)
                .bearer_auth("writer-token")
                .header("content-type", "application/json")
                .body("{\"all\": true}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let is_documented = documented.contains(&(method.to_owned(), path.clone()));
            if is_documented {
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                // The store is empty, so alert and meter routes return 404 for their ids.
                let unknown_id = path.contains('{');
                assert!(
                    status != 404 || unknown_id,
                    "{method} {path} is documented but returned 404"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            }
        }
    }
}

#[tokio::test]
async fn read_token_rejected_on_write_routes() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve_router(state(dir.path())).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/api/webhooks/dead-letters/retry");
    let response = client
        .post(&url)
        .bearer_auth("reader-token")
        .body("{\"all\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json_or_panic().await;
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("token 'reader' has scope read"),
        "{message}"
    );
    let response = client
        .get(format!("{base}/api/webhooks"))
        .bearer_auth("reader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "read route");
}

/// Parses a response body as JSON, with the body in the panic message.
trait JsonOrPanic {
    async fn json_or_panic(self) -> serde_json::Value;
}

impl JsonOrPanic for reqwest::Response {
    async fn json_or_panic(self) -> serde_json::Value {
        let text = self.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON {e}: {text}"))
    }
}

/// Collects every `$ref` value in a JSON document.
fn references(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item.as_str()) {
                    ("$ref", Some(target)) => found.push(target.to_owned()),
                    _ => references(item, found),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                references(item, found);
            }
        }
        _ => {}
    }
}

#[test]
fn openapi_references_resolve() {
    let document = serde_json::to_value(openapi()).unwrap();
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(!found.is_empty(), "the document uses schema references");
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "{target} does not resolve"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let ack = &document["paths"]["/api/alerts/{id}/ack"]["post"];
    assert_eq!(ack["security"][0]["bearer"], serde_json::json!([]));
}
