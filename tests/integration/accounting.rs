//! Accounting shared by the fault tests: a probe rule that fires on every reading that runs the
//! rules, so the `count` of a meter's probe alert is the number of its readings that took effect.
//! Duplicates and late readings do not run rules, so a redelivered reading leaves the count
//! unchanged, a lost one lowers it and one applied twice raises it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Daemon, Mosquitto, copy_dir, get_json, repo_root};

/// Signing secret of the test webhook.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Alert kind of the probe rule.
pub const PROBE_KIND: &str = "probe";

const PROBE_RULE: &str = r#"// Fires on every reading that runs the rules. Its alerts merge into one per meter, whose
// count is the number of readings that took effect.
fn on_reading(reading, meter) {
    alert("probe", "info", `reading at ${reading.ts_ms}`);
}
"#;

/// Copies the shipped rules to `dir/rules`, adds the probe rule and returns the folder.
pub fn rules_with_probe(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    std::fs::write(rules.join("common/probe.rhai"), PROBE_RULE).unwrap();
    rules
}

/// Builds a daemon configuration for `broker` with a fixed client id (so restarts resume the
/// broker session), the rules in `rules` and, when given, one webhook to `receiver`.
pub fn daemon_config(
    broker: &Mosquitto,
    client_id: &str,
    rules: &Path,
    receiver: Option<SocketAddr>,
) -> String {
    let mut config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"{client_id}\"\nreconnect_min_ms = 100\n\
         reconnect_max_ms = 2000\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        rules.display()
    );
    if let Some(addr) = receiver {
        config.push_str(&format!(
            "\n[delivery]\ninitial_backoff_ms = 100\nmax_backoff_ms = 1000\n\n\
             [[webhooks]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\n"
        ));
    }
    config
}

/// Returns every stored alert from the daemon's API.
pub async fn alerts(daemon: &Daemon) -> Vec<serde_json::Value> {
    let alerts = get_json(&format!("{}/api/alerts?limit=1000", daemon.http)).await;
    alerts["alerts"].as_array().expect("alerts array").clone()
}

/// Returns the probe alert count of each meter, by `region/meter`.
pub async fn probe_counts(daemon: &Daemon) -> HashMap<String, u64> {
    alerts(daemon)
        .await
        .iter()
        .filter(|a| a["kind"] == PROBE_KIND)
        .map(|a| {
            let key = format!(
                "{}/{}",
                a["region"].as_str().unwrap(),
                a["meter"].as_str().unwrap()
            );
            (key, a["count"].as_u64().unwrap())
        })
        .collect()
}

/// Waits until the probe counts add up to at least `total` and returns them.
///
/// # Panics
/// Panics when `timeout` passes first, naming the counts reached.
pub async fn wait_for_probe_total(
    daemon: &Daemon,
    total: u64,
    timeout: Duration,
) -> HashMap<String, u64> {
    let start = Instant::now();
    loop {
        let counts = probe_counts(daemon).await;
        let reached: u64 = counts.values().sum();
        if reached >= total {
            return counts;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} with {reached} of {total} readings applied: {counts:?}; \
             log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
