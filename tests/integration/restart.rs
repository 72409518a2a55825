//! Meter state persists in redb: statistics gathered before a restart count after it.

use crate::support::{Daemon, Mosquitto, get_json, publish_all, repo_root, wait_until_processed};

/// Hourly readings of a flat 6.5 kW load (two mining rigs) for `hours` from `first_hour`.
fn flat_load(first_hour: i64, hours: i64) -> Vec<(String, Vec<u8>)> {
    let start_ms = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    (first_hour..first_hour + hours)
        .map(|h| {
            let ts = start_ms + h * 3_600_000;
            let register = 5_000.0 + h as f64 * 6.5;
            (
                "meters/south/farm-1/telemetry".to_owned(),
                format!(r#"{{"ts":{ts},"energy_import_kwh":{register:.3}}}"#).into_bytes(),
            )
        })
        .collect()
}

async fn mining_alerts(daemon: &Daemon) -> usize {
    let alerts = get_json(&format!("{}/api/alerts", daemon.http)).await;
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "mining")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_daemon_restart() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-restart\"\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );

    let daemon = Daemon::start(dir.path(), &config);
    publish_all(broker.port, flat_load(0, 80)).await;
    wait_until_processed(&daemon).await;
    assert_eq!(
        mining_alerts(&daemon).await,
        0,
        "80 hours are too few for the mining rule"
    );
    drop(daemon);

    let daemon = Daemon::start(dir.path(), &config);
    publish_all(broker.port, flat_load(80, 80)).await;
    wait_until_processed(&daemon).await;
    assert_eq!(
        mining_alerts(&daemon).await,
        1,
        "160 hours across the restart fire the mining rule; log:\n{}",
        daemon.log()
    );
}
