//! The `gridwatch alerts` and `gridwatch status` commands: a client of the running daemon's
//! HTTP API, unlike `gridwatch webhooks`, which opens the store file itself.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use reqwest::Method;
use serde_json::{Value, json};

use crate::config::{Config, ConfigError};

/// Daemon URL, token and output format: the options of every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the daemon's HTTP endpoint, such as http://127.0.0.1:9464 [default: from
    /// http.listen of --config].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Configuration file whose http.listen gives the URL when --url is not set.
    #[arg(long, value_name = "FILE", default_value = "config/gridwatch.toml")]
    pub config: PathBuf,
    /// Bearer token for the /api/ routes (http.api_token or a [[http.tokens]] entry).
    #[arg(long, env = "GRIDWATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds to wait for each response.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout_secs: u64,
    /// Prints the JSON response instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `gridwatch alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// The command to run.
    #[command(subcommand)]
    pub command: AlertsCommand,
}

/// A `gridwatch alerts` command.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Lists alerts, newest first, one page at a time.
    List {
        /// Daemon URL, token and output format.
        #[command(flatten)]
        connection: Connection,
        /// Lists only alerts with this status: open, acknowledged or resolved.
        #[arg(long)]
        status: Option<String>,
        /// Lists only alerts of this region.
        #[arg(long)]
        region: Option<String>,
        /// Lists only alerts of this kind, such as mining.
        #[arg(long)]
        kind: Option<String>,
        /// Lists only alerts of this severity or higher: info, low, medium, high or critical.
        #[arg(long)]
        severity: Option<String>,
        /// Lists only alerts of this meter id.
        #[arg(long)]
        meter: Option<String>,
        /// Lists only alerts last seen at or after this time: Unix milliseconds or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// Lists only alerts last seen before this time: Unix milliseconds or RFC 3339.
        #[arg(long)]
        to: Option<String>,
        /// Alerts per page, 1 to 1000 [default: 100].
        #[arg(long)]
        limit: Option<usize>,
        /// Next-page cursor printed by the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Shows one alert with its evidence and its actions.
    Show {
        /// Daemon URL, token and output format.
        #[command(flatten)]
        connection: Connection,
        /// Alert id, a ULID.
        id: String,
    },
    /// Acknowledges an alert; later firings still merge into it. Needs a write token.
    Ack {
        /// Daemon URL, token and output format.
        #[command(flatten)]
        connection: Connection,
        /// Alert id, a ULID.
        id: String,
        /// Comment stored with the action, at most 2000 characters [default: none].
        #[arg(long)]
        comment: Option<String>,
    },
    /// Resolves an alert; the next firing opens a new one. Needs a write token.
    Resolve {
        /// Daemon URL, token and output format.
        #[command(flatten)]
        connection: Connection,
        /// Alert id, a ULID.
        id: String,
        /// Comment stored with the action, at most 2000 characters [default: none].
        #[arg(long)]
        comment: Option<String>,
    },
    /// Adds a comment to an alert without changing its status. Needs a write token.
    Comment {
        /// Daemon URL, token and output format.
        #[command(flatten)]
        connection: Connection,
        /// Alert id, a ULID.
        id: String,
        /// The comment, at most 2000 characters.
        comment: String,
    },
}

/// Arguments of `gridwatch status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Daemon URL, token and output format. Without a token only /healthz and /metrics are read.
    #[command(flatten)]
    pub connection: Connection,
}

/// A client command that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The `/api/` route needs a token and none was given.
    #[error("missing token for {0}: pass --token or set GRIDWATCH_TOKEN")]
    MissingToken(String),
    /// The request could not be sent or its response not read.
    #[error("failed to reach {url}: {detail}")]
    Request {
        /// Request URL.
        url: String,
        /// Cause.
        detail: String,
    },
    /// The daemon returned an error status.
    #[error("{method} {url} returned {status}: {message}")]
    Status {
        /// Request method.
        method: Method,
        /// Request URL.
        url: String,
        /// Response status.
        status: reqwest::StatusCode,
        /// The response's `error` field, or its body.
        message: String,
    },
    /// The response was not the expected JSON.
    #[error("invalid response from {url}: {detail}")]
    InvalidResponse {
        /// Request URL.
        url: String,
        /// Decoder message.
        detail: String,
    },
    /// Writing to standard output failed.
    #[error("failed to write output: {0}")]
    Output(#[from] std::io::Error),
}

/// An HTTP client bound to one daemon.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(connection: &Connection) -> Result<Client, ClientError> {
        let base = match &connection.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let config = Config::load(&connection.config)?;
                let mut address = config.http.listen;
                if address.ip().is_unspecified() {
                    // A daemon listening on every address also accepts connections on loopback.
                    address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{address}")
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(connection.timeout_secs))
            .build()
            .map_err(|e| ClientError::Request {
                url: base.clone(),
                detail: format!("failed to build the HTTP client: {e}"),
            })?;
        Ok(Client {
            http,
            base,
            token: connection.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// Sends a request and returns the status and body text.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(reqwest::StatusCode, String, String), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if path.starts_with("/api/") {
            let token = self
                .token
                .as_deref()
                .ok_or_else(|| ClientError::MissingToken(url.clone()))?;
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let failed = |e: reqwest::Error| ClientError::Request {
            url: url.clone(),
            detail: error_chain(&e),
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        Ok((status, text, url))
    }

    /// Sends a request and returns its JSON body, or an error for a non-2xx status.
    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let (status, text, url) = self.send(method.clone(), path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            return Err(ClientError::Status {
                method,
                url,
                status,
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::InvalidResponse {
            url,
            detail: e.to_string(),
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Runs a `gridwatch alerts` command and writes its output to `out`.
///
/// # Errors
/// Returns an error when the daemon cannot be reached, returns an error status or an invalid
/// body, or `out` cannot be written.
pub async fn run_alerts(args: &AlertsArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    match &args.command {
        AlertsCommand::List {
            connection,
            status,
            region,
            kind,
            severity,
            meter,
            from,
            to,
            limit,
            cursor,
        } => {
            let limit = limit.map(|l| l.to_string());
            let pairs = [
                ("status", status.as_deref()),
                ("region", region.as_deref()),
                ("kind", kind.as_deref()),
                ("severity", severity.as_deref()),
                ("meter", meter.as_deref()),
                ("from", from.as_deref()),
                ("to", to.as_deref()),
                ("limit", limit.as_deref()),
                ("cursor", cursor.as_deref()),
            ];
            let query: Vec<String> = pairs
                .iter()
                .filter_map(|(key, value)| value.map(|v| format!("{key}={}", encode(v))))
                .collect();
            let path = if query.is_empty() {
                "/api/alerts".to_owned()
            } else {
                format!("/api/alerts?{}", query.join("&"))
            };
            let client = Client::new(connection)?;
            let page = client.json(Method::GET, &path, None).await?;
            if connection.json {
                return print_json(&page, out);
            }
            print_alert_table(&page, out)
        }
        AlertsCommand::Show { connection, id } => {
            let client = Client::new(connection)?;
            let alert = client
                .json(Method::GET, &format!("/api/alerts/{}", encode(id)), None)
                .await?;
            if connection.json {
                return print_json(&alert, out);
            }
            print_alert(&alert, out)
        }
        AlertsCommand::Ack {
            connection,
            id,
            comment,
        } => act(connection, id, "ack", comment.as_deref(), out).await,
        AlertsCommand::Resolve {
            connection,
            id,
            comment,
        } => act(connection, id, "resolve", comment.as_deref(), out).await,
        AlertsCommand::Comment {
            connection,
            id,
            comment,
        } => act(connection, id, "comments", Some(comment), out).await,
    }
}

async fn act(
    connection: &Connection,
    id: &str,
    route: &str,
    comment: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let client = Client::new(connection)?;
    let body = comment.map(|c| json!({ "comment": c }));
    let path = format!("/api/alerts/{}/{route}", encode(id));
    let alert = client.json(Method::POST, &path, body).await?;
    if connection.json {
        return print_json(&alert, out);
    }
    let done = match route {
        "ack" => "acknowledged",
        "resolve" => "resolved",
        _ => "commented on",
    };
    writeln!(
        out,
        "{done} alert {} ({} {}/{}), status {}",
        text(&alert["id"]),
        text(&alert["kind"]),
        text(&alert["region"]),
        text(&alert["meter"]),
        text(&alert["status"])
    )?;
    Ok(())
}

/// Percent-encodes a query or path value.
fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn print_json(value: &Value, out: &mut dyn Write) -> Result<(), ClientError> {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    writeln!(out, "{pretty}")?;
    Ok(())
}

/// Formats Unix milliseconds as RFC 3339 UTC, or the raw value when it is not a valid time.
fn format_ms(value: &Value) -> String {
    value
        .as_i64()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || text(value),
            |time| time.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

fn print_alert_table(page: &Value, out: &mut dyn Write) -> Result<(), ClientError> {
    let alerts = page["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        writeln!(out, "no alerts")?;
    } else {
        let header = [
            "ID",
            "STATUS",
            "SEVERITY",
            "REGION",
            "METER",
            "KIND",
            "LAST SEEN",
            "COUNT",
            "MESSAGE",
        ];
        let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
        for alert in &alerts {
            rows.push(vec![
                text(&alert["id"]),
                text(&alert["status"]),
                text(&alert["severity"]),
                text(&alert["region"]),
                text(&alert["meter"]),
                text(&alert["kind"]),
                format_ms(&alert["last_seen_ms"]),
                text(&alert["count"]),
                text(&alert["message"]).replace(['\n', '\r'], " "),
            ]);
        }
        crate::delivery::admin::write_aligned(&rows, out)?;
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        writeln!(out, "more alerts: run again with --cursor {cursor}")?;
    }
    Ok(())
}

fn print_alert(alert: &Value, out: &mut dyn Write) -> Result<(), ClientError> {
    for (label, value) in [
        ("id", text(&alert["id"])),
        ("status", text(&alert["status"])),
        ("severity", text(&alert["severity"])),
        ("kind", text(&alert["kind"])),
        ("region", text(&alert["region"])),
        ("meter", text(&alert["meter"])),
        ("message", text(&alert["message"])),
        ("first seen", format_ms(&alert["first_seen_ms"])),
        ("last seen", format_ms(&alert["last_seen_ms"])),
        ("firings", text(&alert["count"])),
        ("rule", text(&alert["source"]["rule"])),
    ] {
        writeln!(out, "{label:<11} {value}")?;
    }
    let evidence =
        serde_json::to_string_pretty(&alert["evidence"]).unwrap_or_else(|_| "-".to_owned());
    writeln!(
        out,
        "evidence    {}",
        evidence.replace('\n', "\n            ")
    )?;
    let actions = alert["actions"].as_array().cloned().unwrap_or_default();
    if actions.is_empty() {
        writeln!(out, "actions     none")?;
    }
    for (i, action) in actions.iter().enumerate() {
        let label = if i == 0 { "actions" } else { "" };
        let comment = action["comment"]
            .as_str()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{label:<11} {} {} by {}{comment}",
            format_ms(&action["at_ms"]),
            text(&action["action"]),
            text(&action["by"]),
        )?;
    }
    Ok(())
}

/// Returns the value of an unlabelled metric such as `gridwatch_meters`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        if parts.next()? != name {
            return None;
        }
        parts.next()?.parse().ok()
    })
}

/// Runs `gridwatch status`: reads `/healthz` and `/metrics`, and `/api/webhooks` when a token
/// is given, and writes a summary to `out`.
///
/// # Errors
/// Returns an error when the daemon cannot be reached, returns an error status or an invalid
/// body, or `out` cannot be written.
pub async fn run_status(args: &StatusArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    let connection = &args.connection;
    let client = Client::new(connection)?;
    let summary = read_status(&client).await?;
    if connection.json {
        return print_json(&summary, out);
    }
    print_status(&summary, out)
}

/// Reads `/healthz`, `/metrics` and, with a token, `/api/webhooks` and `/api/status` into one
/// JSON summary.
async fn read_status(client: &Client) -> Result<Value, ClientError> {
    let (health_status, health_text, _) = client.send(Method::GET, "/healthz", None).await?;
    let (metrics_status, metrics, metrics_url) = client.send(Method::GET, "/metrics", None).await?;
    if !metrics_status.is_success() {
        return Err(ClientError::Status {
            method: Method::GET,
            url: metrics_url,
            status: metrics_status,
            message: metrics.trim().to_owned(),
        });
    }

    let (webhooks, status) = match client.token {
        Some(_) => (
            Some(client.json(Method::GET, "/api/webhooks", None).await?),
            Some(client.json(Method::GET, "/api/status", None).await?),
        ),
        None => (None, None),
    };
    let value = |name: &str| metric(&metrics, name).map(|v| v as i64);
    Ok(json!({
        "url": client.base,
        "healthy": health_status.is_success(),
        "health": health_text.trim(),
        "broker_connected": value("gridwatch_mqtt_connected").map(|v| v == 1),
        "store_healthy": value("gridwatch_store_healthy").map(|v| v == 1),
        "meters": value("gridwatch_meters"),
        "readings_received": value("gridwatch_readings_received_total"),
        "outbox_depth": value("gridwatch_outbox_depth"),
        "dead_letters": value("gridwatch_dead_letters"),
        "plugins_loaded": value("gridwatch_plugins_loaded"),
        "webhooks": webhooks.map(|w| w["webhooks"].clone()),
        "rules": status.as_ref().map(|s| s["rules"].clone()),
        "plugins": status.as_ref().map(|s| s["plugins"].clone()),
    }))
}

fn print_status(summary: &Value, out: &mut dyn Write) -> Result<(), ClientError> {
    let yes_no = |value: &Value, yes: &str, no: &str| match value.as_bool() {
        Some(true) => yes.to_owned(),
        Some(false) => no.to_owned(),
        None => "unknown".to_owned(),
    };
    writeln!(out, "daemon             {}", text(&summary["url"]))?;
    writeln!(out, "health             {}", text(&summary["health"]))?;
    writeln!(
        out,
        "broker             {}",
        yes_no(&summary["broker_connected"], "connected", "disconnected")
    )?;
    writeln!(
        out,
        "store              {}",
        yes_no(&summary["store_healthy"], "healthy", "commits failing")
    )?;
    for (label, key) in [
        ("meters held", "meters"),
        ("readings received", "readings_received"),
        ("outbox depth", "outbox_depth"),
        ("dead letters", "dead_letters"),
        ("plugins loaded", "plugins_loaded"),
    ] {
        writeln!(out, "{label:<18} {}", text(&summary[key]))?;
    }
    let rules = &summary["rules"];
    if let Some(files) = rules["files"].as_array() {
        let reload = match rules["last_reload"]["succeeded"].as_bool() {
            None => "none since start-up".to_owned(),
            Some(true) => "succeeded".to_owned(),
            Some(false) => format!(
                "failed, previous rules active: {}",
                text(&rules["last_reload"]["problems"][0])
            ),
        };
        writeln!(
            out,
            "rule files         {} (generation {}, last reload {reload})",
            files.len(),
            text(&rules["generation"])
        )?;
    }

    let Some(list) = summary["webhooks"].as_array() else {
        writeln!(
            out,
            "webhooks           unknown: pass --token or set GRIDWATCH_TOKEN"
        )?;
        return Ok(());
    };
    if list.is_empty() {
        writeln!(out, "webhooks           none configured")?;
        return Ok(());
    }
    writeln!(out)?;
    let mut rows = vec![
        ["WEBHOOK", "STATE", "OUTBOX", "DEAD LETTERS", "URL"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for hook in list {
        let state = if hook["enabled"].as_bool() == Some(false) {
            "disabled"
        } else if hook["configured"].as_bool() == Some(false) {
            "not configured"
        } else {
            "enabled"
        };
        rows.push(vec![
            text(&hook["name"]),
            state.to_owned(),
            text(&hook["outbox_depth"]),
            text(&hook["dead_letters"]),
            text(&hook["url"]),
        ]);
    }
    Ok(crate::delivery::admin::write_aligned(&rows, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_matches_whole_name() {
        let text = "# HELP gridwatch_meters x\ngridwatch_meters_total 9\ngridwatch_meters 3\n";
        assert_eq!(metric(text, "gridwatch_meters"), Some(3.0));
        assert_eq!(metric(text, "gridwatch_missing"), None);
    }

    #[test]
    fn encode_escapes_reserved_bytes() {
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(encode("2025-03-01T00:00:00Z"), "2025-03-01T00%3A00%3A00Z");
    }
}
