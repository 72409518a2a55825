//! Integration with a service manager: systemd readiness and watchdog notifications, and the
//! `healthcheck` command that container runtimes call.
//!
//! Under systemd with `Type=notify`, the daemon sends `READY=1` once the rules are loaded and
//! the broker connection is up, then `WATCHDOG=1` at half the unit's `WatchdogSec` for as long
//! as its async runtime runs, and `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` in the
//! environment every notification is skipped.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::metrics::Metrics;

/// How often readiness is checked while waiting for the broker connection.
const READY_POLL: Duration = Duration::from_millis(100);

/// Sends `READY=1` once the broker connection is up, then watchdog notifications if the unit
/// sets `WatchdogSec`. Rules and plugins are loaded before this starts.
pub async fn announce(metrics: Arc<Metrics>) {
    while metrics.mqtt_connected.get() != 1 {
        tokio::time::sleep(READY_POLL).await;
    }
    send(&[
        NotifyState::Ready,
        NotifyState::Status("connected to the broker"),
    ]);
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!(
        timeout_ms = timeout.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let mut ticker = tokio::time::interval(timeout / 2);
    loop {
        ticker.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

/// Sends `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "failed to notify the service manager");
    }
}

/// Command-line options of `gridwatch healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Configuration whose `http.listen` address is checked.
    #[arg(long, default_value = "config/gridwatch.toml")]
    config: std::path::PathBuf,
    /// Seconds to wait for the response.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,
}

/// Asks the running daemon's `/healthz` and returns `Ok(())` when it responds with 200.
///
/// # Errors
/// Returns a message naming the address and the status or error otherwise.
pub async fn healthcheck(args: &HealthcheckArgs) -> Result<(), String> {
    let config = crate::config::Config::load(&args.config).map_err(|e| e.to_string())?;
    let mut address = config.http.listen;
    if address.ip().is_unspecified() {
        // A daemon listening on every address also accepts connections on loopback.
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{address}/healthz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .map_err(|e| format!("failed to build the HTTP client: {e}"))?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("{url} responded with {}", response.status())),
        Err(error) => Err(format!("failed to reach {url}: {error}")),
    }
}
