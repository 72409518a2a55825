//! The HTTP endpoint: health and metrics are open, the `/api/` routes need a bearer token with
//! the right scope. Alerts come from a test rule that raises the kind and severity each reading
//! names, through real Mosquitto and the daemon binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gridwatch::delivery::receiver::{Behaviour, Receiver};
use gridwatch::store::Store;
use gridwatch::store::outbox::{self, Delivery};
use serde_json::Value;

use crate::support::{
    API_TOKEN, Daemon, Mosquitto, free_port, publish_all, repo_root, wait_until_processed,
};

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

/// Write token of the `oncall` entry in [`API_CONFIG`].
const ONCALL_TOKEN: &str = "oncall-token-value";
/// Read token of the `viewer` entry in [`API_CONFIG`].
const VIEWER_TOKEN: &str = "viewer-token-value";

/// Extra tokens for the daemon, before the `[http]` section that [`Daemon::start`] adds.
const API_CONFIG: &str = "[[http.tokens]]\nname = \"oncall\"\ntoken = \"oncall-token-value\"\n\
                          scope = \"write\"\n\n[[http.tokens]]\nname = \"viewer\"\n\
                          token = \"viewer-token-value\"\n";

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Raises an alert for every reading that carries `kind` and `severity` fields.
const TEST_RULE: &str = r#"// Raises the alert that the reading names in its extra fields.
fn on_reading(reading, meter) {
    let kind = reading["kind"];
    if kind != () {
        alert(kind, reading["severity"], `test alert at ${reading.ts_ms}`, #{ mean_kw: 1.5 });
    }
}
"#;

/// Reading time of hour 0 of the test readings, Unix milliseconds.
const START_MS: i64 = 1_750_000_000_000 / 3_600_000 * 3_600_000;

/// Two hourly readings of `region/meter` at `hour` and `hour + 1` that raise a `kind` alert.
fn readings(
    region: &str,
    meter: &str,
    kind: &str,
    severity: &str,
    hour: i64,
) -> Vec<(String, Vec<u8>)> {
    (hour..hour + 2)
        .map(|h| {
            let ts = START_MS + h * 3_600_000;
            let register = 100.0 + h as f64;
            (
                format!("meters/{region}/{meter}/telemetry"),
                format!(
                    r#"{{"ts":{ts},"energy_import_kwh":{register:.1},"kind":"{kind}","severity":"{severity}"}}"#
                )
                .into_bytes(),
            )
        })
        .collect()
}

fn start_with_rule(broker: &Mosquitto, dir: &Path, extra: &str) -> Daemon {
    let rules = dir.join("rules");
    std::fs::create_dir_all(rules.join("common")).unwrap();
    std::fs::write(rules.join("common/test.rhai"), TEST_RULE).unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-api-{}\"\n\n[rules]\ndir = \"{}\"\n\n\
         [delivery]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\npoll_interval_ms = 50\n\n\
         {extra}\n{API_CONFIG}",
        broker.url(),
        free_port(),
        rules.display()
    );
    Daemon::start(dir, &config)
}

/// Sends a request and returns the status and the body parsed as JSON (`null` when empty).
async fn call(method: reqwest::Method, url: &str, token: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    // Text bodies, such as those of /healthz and /metrics, come back as a JSON string.
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

async fn get(url: &str) -> (u16, Value) {
    call(reqwest::Method::GET, url, VIEWER_TOKEN, None).await
}

async fn post(url: &str, token: &str, body: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::POST, url, token, body).await
}

fn ids(page: &Value) -> Vec<String> {
    page["alerts"]
        .as_array()
        .expect("alerts array")
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_api_filters_and_pages() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_rule(&broker, dir.path(), "");
    let mut messages = Vec::new();
    for i in 0..12 {
        let severity = if i % 3 == 0 { "high" } else { "low" };
        messages.extend(readings("south", &format!("s{i}"), "probe", severity, 0));
    }
    for i in 0..3 {
        messages.extend(readings(
            "north",
            &format!("n{i}"),
            "tamper",
            "critical",
            10,
        ));
    }
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;
    let alerts = format!("{}/api/alerts", daemon.http);

    let (status, all) = get(&format!("{alerts}?limit=1000")).await;
    assert_eq!(status, 200);
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 15, "one alert per meter: {all}");
    assert!(all["next_cursor"].is_null(), "one page holds all");
    let mut sorted = all_ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(all_ids, sorted, "newest id first");

    let count = |page: &Value| page["alerts"].as_array().unwrap().len();
    let cases = [
        ("region=north", 3),
        ("kind=tamper", 3),
        ("kind=probe&region=south", 12),
        ("severity=high", 7),
        ("severity=critical", 3),
        ("meter=s1", 1),
        ("status=open", 15),
        ("status=resolved", 0),
        ("from=2025-06-15T20:00:00Z", 3),
        (&format!("to={}", START_MS + 5 * 3_600_000), 12),
        (
            &format!("from={}&to={}", START_MS + 3_600_000, START_MS + 3_600_001),
            12,
        ),
    ];
    for (query, expected) in cases {
        let (status, page) = get(&format!("{alerts}?{query}")).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(count(&page), expected, "{query}");
    }

    // Pages of 4, with new alerts and repeat firings published between pages.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{alerts}?limit=4&cursor={cursor}"),
            None => format!("{alerts}?limit=4"),
        };
        let (status, page) = get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        pages += 1;
        seen.extend(ids(&page));
        let mut more = readings("east", &format!("e{pages}"), "probe", "medium", 20);
        more.extend(readings("south", "s0", "probe", "high", 20 + pages * 2));
        publish_all(broker.port, more).await;
        wait_until_processed(&daemon).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4, "15 alerts in pages of 4");
    assert_eq!(seen, all_ids, "every alert once, none repeated or skipped");
    let (_, now) = get(&format!("{alerts}?limit=1000")).await;
    assert_eq!(ids(&now).len(), 15 + 4, "new alerts arrived meanwhile");

    let meter = format!("{}/api/meters/south/s1", daemon.http);
    let (status, report) = get(&meter).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state_source"], "memory");
    assert_eq!(report["readings"], 2);
    assert_eq!(report["last_reading"]["energy_import_kwh"], 101.0);
    assert_eq!(report["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(report["alerts"][0]["meter"], "s1");
    let hourly = report["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 24, "default hours");
    let energy: f64 = hourly
        .iter()
        .map(|h| h["energy_kwh"].as_f64().unwrap())
        .sum();
    assert!(
        (energy - 1.0).abs() < 1e-6,
        "one kWh between the readings: {energy}"
    );
    let window_names: Vec<&str> = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(window_names, vec!["24h", "7d"]);
    let (_, short) = get(&format!("{meter}?hours=2")).await;
    assert_eq!(short["hourly"].as_array().unwrap().len(), 2);
    let (status, body) = get(&format!("{meter}?hours=0")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid hours '0'")
    );
    let (status, _) = get(&format!("{}/api/meters/south/nobody", daemon.http)).await;
    assert_eq!(status, 404, "unknown meter");

    let bad = [
        ("severity=urgent", "invalid severity 'urgent'"),
        ("status=closed", "invalid status 'closed'"),
        (
            "limit=0",
            "invalid limit '0', expected an integer from 1 to 1000",
        ),
        ("limit=5000", "invalid limit '5000'"),
        ("from=yesterday", "invalid from 'yesterday'"),
        ("cursor=nope", "invalid cursor 'nope'"),
        ("colour=red", "colour"),
    ];
    for (query, expected) in bad {
        let (status, body) = get(&format!("{alerts}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_actions_record_token_name() {
    let broker = Mosquitto::start();
    let (receiver_addr, receiver) = Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        SIGNING_SECRET,
        Behaviour::accept(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let webhook = format!(
        "[[webhooks]]\nname = \"ops\"\nurl = \"http://{receiver_addr}/hook\"\n\
         secret = \"{SIGNING_SECRET}\"\n"
    );
    let daemon = start_with_rule(&broker, dir.path(), &webhook);
    publish_all(broker.port, readings("south", "m1", "probe", "high", 0)).await;
    wait_until_processed(&daemon).await;
    let alerts = format!("{}/api/alerts", daemon.http);
    let (_, page) = get(&alerts).await;
    let id = ids(&page)[0].clone();
    let alert_url = format!("{alerts}/{id}");

    let (status, body) = post(&format!("{alert_url}/ack"), VIEWER_TOKEN, None).await;
    assert_eq!(status, 403, "read token on ack: {body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("token 'viewer' has scope read"),
        "{message}"
    );

    let (status, acked) = post(
        &format!("{alert_url}/ack"),
        ONCALL_TOKEN,
        Some(r#"{"comment": "crew sent"}"#),
    )
    .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    let (status, commented) = post(
        &format!("{alert_url}/comments"),
        API_TOKEN,
        Some(r#"{"comment": "meter cover open"}"#),
    )
    .await;
    assert_eq!(status, 200, "{commented}");

    // A firing after the acknowledgement merges into the same alert.
    publish_all(broker.port, readings("south", "m1", "probe", "high", 2)).await;
    wait_until_processed(&daemon).await;
    let (status, shown) = get(&alert_url).await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "acknowledged");
    assert_eq!(shown["count"], 4, "firings merged: {shown}");
    assert_eq!(shown["evidence"]["mean_kw"], 1.5);
    let actions = shown["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{shown}");
    assert_eq!(actions[0]["action"], "acknowledge");
    assert_eq!(actions[0]["by"], "oncall");
    assert_eq!(actions[0]["comment"], "crew sent");
    assert!(actions[0]["at_ms"].as_i64().unwrap() > START_MS);
    assert_eq!(actions[1]["action"], "comment");
    assert_eq!(actions[1]["by"], "api", "http.api_token is named api");

    let (status, resolved) = post(&format!("{alert_url}/resolve"), ONCALL_TOKEN, None).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    let (status, body) = post(&format!("{alert_url}/ack"), ONCALL_TOKEN, None).await;
    assert_eq!(status, 409, "ack after resolve: {body}");
    let (status, _) = post(&format!("{alert_url}/resolve"), ONCALL_TOKEN, None).await;
    assert_eq!(status, 409, "resolve twice");

    // The next firing opens a new alert for the same meter and kind.
    publish_all(broker.port, readings("south", "m1", "probe", "high", 4)).await;
    wait_until_processed(&daemon).await;
    let (_, page) = get(&format!("{alerts}?meter=m1")).await;
    let statuses: Vec<&str> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["open", "resolved"], "{page}");

    let unknown = format!("{alerts}/{}", ulid::Ulid::new());
    assert_eq!(get(&unknown).await.0, 404, "unknown id");
    assert_eq!(
        post(&format!("{unknown}/resolve"), ONCALL_TOKEN, None)
            .await
            .0,
        404,
        "resolve unknown id"
    );
    let (status, body) = get(&format!("{alerts}/not-a-ulid")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("'not-a-ulid'"));
    let (status, body) = post(&format!("{alert_url}/comments"), ONCALL_TOKEN, None).await;
    assert_eq!(status, 400, "comment without text: {body}");
    let (status, _) = post(&format!("{alert_url}/ack"), ONCALL_TOKEN, Some("{not json")).await;
    assert_eq!(status, 400, "invalid body");

    // opened, acknowledged, resolved, then opened for the new alert.
    let deliveries = receiver
        .wait_for(4, Duration::from_secs(20))
        .await
        .unwrap_or_else(|got| panic!("expected 4 deliveries, got {}", got.len()));
    let mut events: Vec<String> = deliveries
        .iter()
        .map(|d| {
            d.json.as_ref().unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        vec![
            "alert.acknowledged",
            "alert.opened",
            "alert.opened",
            "alert.resolved"
        ]
    );
    let resolved_event = deliveries
        .iter()
        .find(|d| d.json.as_ref().unwrap()["type"] == "alert.resolved")
        .unwrap();
    let log = daemon.log();
    for token in [ONCALL_TOKEN, VIEWER_TOKEN, API_TOKEN] {
        assert!(!log.contains(token), "token logged:\n{log}");
    }
    assert!(resolved_event.signature_valid);
    assert_eq!(
        resolved_event.json.as_ref().unwrap()["data"]["id"],
        id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_api_lists_and_requeues_dead_letters() {
    let broker = Mosquitto::start();
    let (receiver_addr, receiver) = Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        SIGNING_SECRET,
        Behaviour::accept(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let letters = [
        "msg_01JNF4X8ZK2W6V9Q3T7R5M1C0D",
        "msg_01JNF4X8ZK2W6V9Q3T7R5M1C0E",
    ];
    {
        let store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
        let txn = store.db().begin_write().unwrap();
        for id in letters {
            let delivery = Delivery {
                id: id.into(),
                webhook: "ops".into(),
                alert_id: ulid::Ulid::new(),
                event_type: "alert.opened".into(),
                body: br#"{"type":"alert.opened"}"#.to_vec(),
                created_ms: START_MS,
                attempts: 5,
                next_attempt_ms: START_MS,
                last_error: None,
            };
            outbox::enqueue(&txn, &delivery).unwrap();
        }
        txn.commit().unwrap();
        for seq in 1..=2 {
            outbox::move_to_dead_letters(&store.db(), seq, "connection refused", START_MS).unwrap();
        }
    }
    let webhook = format!(
        "[[webhooks]]\nname = \"ops\"\nurl = \"http://user:pw@{receiver_addr}/hook?key=x\"\n\
         secret = \"{SIGNING_SECRET}\"\n"
    );
    let daemon = start_with_rule(&broker, dir.path(), &webhook);
    let base = format!("{}/api/webhooks", daemon.http);

    let (status, list) = get(&base).await;
    assert_eq!(status, 200, "{list}");
    let hooks = list["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{list}");
    assert_eq!(hooks[0]["name"], "ops");
    assert_eq!(
        hooks[0]["url"],
        format!("http://{receiver_addr}/hook"),
        "credentials removed"
    );
    assert_eq!(hooks[0]["enabled"], true);
    assert_eq!(hooks[0]["dead_letters"], 2);
    assert_eq!(hooks[0]["outbox_depth"], 0);

    let (status, listed) = get(&format!("{base}/dead-letters?webhook=ops")).await;
    assert_eq!(status, 200);
    let rows = listed["dead_letters"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], letters[0]);
    assert_eq!(rows[0]["last_error"], "connection refused");
    let (_, limited) = get(&format!("{base}/dead-letters?limit=1")).await;
    assert_eq!(limited["dead_letters"].as_array().unwrap().len(), 1);

    let retry = format!("{base}/dead-letters/retry");
    let (status, _) = post(&retry, VIEWER_TOKEN, Some(r#"{"all": true}"#)).await;
    assert_eq!(status, 403, "read token on retry");
    let (status, body) = post(
        &retry,
        ONCALL_TOKEN,
        Some(r#"{"all": true, "webhook": "ops"}"#),
    )
    .await;
    assert_eq!(status, 400, "two targets: {body}");
    let (status, body) = post(&retry, ONCALL_TOKEN, Some(r#"{"id": "msg_unknown"}"#)).await;
    assert_eq!(status, 404, "{body}");
    let (status, moved) = post(&retry, ONCALL_TOKEN, Some(r#"{"webhook": "ops"}"#)).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["requeued"], 2);
    assert_eq!(moved["held_back"], 0);

    let deliveries = receiver
        .wait_for(2, Duration::from_secs(20))
        .await
        .unwrap_or_else(|got| panic!("expected 2 deliveries, got {}", got.len()));
    let mut delivered: Vec<String> = deliveries.iter().map(|d| d.id.clone().unwrap()).collect();
    delivered.sort();
    assert_eq!(delivered, letters, "requeued letters keep their webhook-id");
    let (_, after) = get(&base).await;
    assert_eq!(after["webhooks"][0]["dead_letters"], 0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_rule(&broker, dir.path(), "");
    publish_all(broker.port, readings("south", "m1", "probe", "high", 0)).await;
    wait_until_processed(&daemon).await;
    let (_, page) = get(&format!("{}/api/alerts", daemon.http)).await;
    let id = ids(&page)[0].clone();

    let (status, document) = get(&format!("{}/api/openapi.json", daemon.http)).await;
    assert_eq!(status, 200);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "OpenAPI 3"
    );
    let paths = document["paths"].as_object().unwrap();
    let mut routes = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    let expected = [
        "GET /api/alerts",
        "GET /api/alerts/{id}",
        "GET /api/meters/{region}/{meter}",
        "GET /api/openapi.json",
        "GET /api/rejected",
        "GET /api/status",
        "GET /api/webhooks",
        "GET /api/webhooks/dead-letters",
        "GET /healthz",
        "GET /metrics",
        "POST /api/alerts/{id}/ack",
        "POST /api/alerts/{id}/comments",
        "POST /api/alerts/{id}/resolve",
        "POST /api/webhooks/dead-letters/retry",
    ];
    assert_eq!(routes, expected, "documented routes");

    // Every documented method returns a success status, and every other method on the same
    // path returns 405, so the router serves nothing there that the document leaves out. Paths
    // come in alphabetical order, so the alert is acknowledged before it is resolved.
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    for (path, item) in paths {
        let filled = path
            .replace("{id}", &id)
            .replace("{region}", "south")
            .replace("{meter}", "m1");
        let url = format!("{}{filled}", daemon.http);
        for method in methods {
            let documented = item.get(method.to_lowercase().as_str()).is_some();
            let body = if path.ends_with("retry") {
                r#"{"all": true}"#
            } else {
                r#"{"comment": "openapi check"}"#
            };
            let (status, reply) =
                call(method.parse().unwrap(), &url, ONCALL_TOKEN, Some(body)).await;
            if documented {
                assert!(
                    (200..300).contains(&status),
                    "{method} {path} returned {status}: {reply}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} answers but is not documented");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_shows_and_acts_on_alerts() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_rule(&broker, dir.path(), "");
    let mut messages = readings("south", "m1", "probe", "high", 0);
    messages.extend(readings("south", "m2", "probe", "low", 0));
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;
    let config = dir.path().join("gridwatch.toml");
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
        command
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("GRIDWATCH_TOKEN");
        if let Some(token) = token {
            command.env("GRIDWATCH_TOKEN", token);
        }
        let output = command.output().expect("failed to run gridwatch");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, table, stderr) = cli(&["alerts", "list"], Some(VIEWER_TOKEN));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("m1"), "{table}");
    assert!(table.contains("m2"), "{table}");

    let (code, json, stderr) = cli(
        &[
            "alerts",
            "list",
            "--severity",
            "high",
            "--limit",
            "1",
            "--json",
        ],
        Some(VIEWER_TOKEN),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let page: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ids(&page).len(), 1);
    assert!(page["next_cursor"].is_null(), "only m1 is high: {page}");
    let id = ids(&page)[0].clone();
    assert_eq!(page["alerts"][0]["meter"], "m1");

    let (code, _, stderr) = cli(&["alerts", "ack", &id], Some(VIEWER_TOKEN));
    assert_eq!(code, Some(1), "read token on ack");
    assert!(stderr.contains("returned 403 Forbidden"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/api/alerts/{id}/ack", daemon.http)),
        "{stderr}"
    );

    let (code, out, stderr) = cli(
        &[
            "alerts",
            "ack",
            &id,
            "--comment",
            "crew sent",
            "--token",
            ONCALL_TOKEN,
        ],
        None,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains(&format!("acknowledged alert {id}")), "{out}");

    let (code, shown, stderr) = cli(&["alerts", "show", &id], Some(VIEWER_TOKEN));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(shown.contains("status      acknowledged"), "{shown}");
    assert!(
        shown.contains("acknowledge by oncall: crew sent"),
        "{shown}"
    );
    assert!(shown.contains("\"mean_kw\": 1.5"), "{shown}");

    let (code, out, stderr) = cli(&["alerts", "resolve", &id], Some(ONCALL_TOKEN));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains("status resolved"), "{out}");
    let (code, _, stderr) = cli(&["alerts", "resolve", &id], Some(ONCALL_TOKEN));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("409 Conflict"), "{stderr}");

    let (code, _, stderr) = cli(
        &["alerts", "list", "--severity", "urgent"],
        Some(VIEWER_TOKEN),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("400 Bad Request: invalid severity 'urgent'"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&["alerts", "list"], None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("missing token"), "{stderr}");

    let (code, status, stderr) = cli(&["status"], Some(VIEWER_TOKEN));
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "broker             connected",
        "store              healthy",
        "meters held        2",
        "outbox depth       0",
        "dead letters       0",
        "rule files         1 (generation 1, last reload none since start-up)",
    ] {
        assert!(status.contains(expected), "no '{expected}' in:\n{status}");
    }
    let (code, json, stderr) = cli(&["status", "--json", "--url", &daemon.http], None);
    assert_eq!(code, Some(0), "{stderr}");
    let summary: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["broker_connected"], true);
    assert_eq!(summary["meters"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_rules_and_reloads() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with_rule(&broker, dir.path(), "");
    let url = format!("{}/api/status", daemon.http);

    let (status, report) = get(&url).await;
    assert_eq!(status, 200, "{report}");
    let rules = &report["rules"];
    assert_eq!(rules["generation"], 1);
    assert_eq!(rules["stale"], false);
    assert!(rules["last_reload"].is_null(), "no reload yet: {rules}");
    let files = rules["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{rules}");
    assert_eq!(files[0]["rule"], "common/test.rhai");
    let expected_hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(TEST_RULE.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(files[0]["content_hash"], expected_hash.as_str());
    assert_eq!(report["plugins"]["loaded"].as_array().unwrap().len(), 0);
    assert_eq!(report["plugins"]["last_reload"]["succeeded"], true);

    let broken = dir.path().join("rules/common/broken.rhai");
    std::fs::write(&broken, "fn on_reading(reading, meter) {\n").unwrap();
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, report) = get(&url).await;
        last = report["rules"].clone();
        if !last["last_reload"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["last_reload"]["succeeded"], false, "{last}");
    let problems = last["last_reload"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("broken.rhai")),
        "{last}"
    );
    assert_eq!(last["stale"], true);
    // The watcher may reload more than once for one write, so count at least one failure.
    assert!(last["reloads"]["failure"].as_u64().unwrap() >= 1, "{last}");
    assert_eq!(last["generation"], 1, "the previous set stays active");
    assert_eq!(last["files"].as_array().unwrap().len(), 1);

    std::fs::remove_file(&broken).unwrap();
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, report) = get(&url).await;
        last = report["rules"].clone();
        if last["generation"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["generation"], 2, "{last}");
    assert_eq!(last["stale"], false);
    assert_eq!(last["last_reload"]["succeeded"], true);
}
