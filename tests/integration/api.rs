//! The HTTP endpoint: health and metrics are open, the `/api/` routes need the bearer token.

use crate::support::{API_TOKEN, Daemon, Mosquitto, repo_root};

async fn status(url: &str, token: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_routes_need_bearer_token() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-api\"\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    let alerts = format!("{}/api/alerts", daemon.http);
    let rejected = format!("{}/api/rejected", daemon.http);

    assert_eq!(
        status(&format!("{}/healthz", daemon.http), None).await,
        200,
        "healthz open"
    );
    assert_eq!(
        status(&format!("{}/metrics", daemon.http), None).await,
        200,
        "metrics open"
    );
    assert_eq!(status(&alerts, None).await, 401, "alerts without a token");
    assert_eq!(
        status(&alerts, Some("wrong-token")).await,
        401,
        "alerts with a wrong token"
    );
    assert_eq!(
        status(&rejected, None).await,
        401,
        "rejected without a token"
    );
    assert_eq!(
        status(&alerts, Some(API_TOKEN)).await,
        200,
        "alerts with the token"
    );
    assert_eq!(
        status(&rejected, Some(API_TOKEN)).await,
        200,
        "rejected with the token"
    );
    assert!(
        !daemon.log().contains(API_TOKEN),
        "token logged:\n{}",
        daemon.log()
    );
}
