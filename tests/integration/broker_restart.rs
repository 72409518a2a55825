//! Mosquitto restarts mid-stream with persistence on: the daemon reconnects with growing
//! backoff, resumes its session and subscriptions, and applies every reading exactly once.

use std::time::{Duration, Instant};

use crate::accounting::{daemon_config, rules_with_probe, wait_for_probe_total};
use crate::support::{BrokerSettings, Daemon, Mosquitto, flat_load, get_text, metric, publish_all};

const METERS: usize = 20;
const HOURS_BEFORE: i64 = 150;
const HOURS_AFTER: i64 = 50;

/// Failed reconnects to see in the log before the broker comes back.
const FAILED_RECONNECTS: usize = 4;

fn readings(first_hour: i64, hours: i64) -> Vec<(String, Vec<u8>)> {
    (0..METERS)
        .flat_map(|m| flat_load(&format!("broker-{m}"), first_hour, hours))
        .collect()
}

/// Returns the `retry_in_ms` values of the log's failed connection lines, in order.
fn retry_delays(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains("broker connection failed"))
        .filter_map(|line| {
            let rest = line.split("retry_in_ms=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_resumes_session() {
    let mut broker = Mosquitto::start_with(BrokerSettings::durable());
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_with_probe(dir.path());
    let config = daemon_config(&broker, "gridwatch-broker-restart", &rules, None);
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("subscribed", Duration::from_secs(20));

    // The daemon is still working through this backlog when the broker stops.
    publish_all(broker.port, readings(0, HOURS_BEFORE)).await;
    broker.stop();
    daemon.wait_for_log("broker connection failed", Duration::from_secs(20));
    let start = Instant::now();
    while retry_delays(&daemon.log()).len() < FAILED_RECONNECTS {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "fewer than {FAILED_RECONNECTS} failed reconnects logged; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delays = retry_delays(&daemon.log());
    for pair in delays[..FAILED_RECONNECTS].windows(2) {
        assert!(pair[1] > pair[0], "retry_in_ms does not grow: {delays:?}");
    }

    broker.restart();
    publish_all(broker.port, readings(HOURS_BEFORE, HOURS_AFTER)).await;
    let total = METERS as u64 * (HOURS_BEFORE + HOURS_AFTER) as u64;
    let counts = wait_for_probe_total(&daemon, total, Duration::from_secs(90)).await;
    for m in 0..METERS {
        let key = format!("south/broker-{m}");
        assert_eq!(
            counts.get(&key).copied(),
            Some((HOURS_BEFORE + HOURS_AFTER) as u64),
            "readings applied for {key}"
        );
    }

    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let connected = metric(&text, "gridwatch_mqtt_connected");
    assert_eq!(
        connected,
        Some(1.0),
        "gridwatch_mqtt_connected after the restart"
    );
    let log = daemon.log();
    let connects = log.matches("connected to broker").count();
    assert!(connects >= 2, "connections logged: {connects}; log:\n{log}");
    let resumed = log.contains("session_present=true");
    assert!(resumed, "no resumed session logged; log:\n{log}");
    println!(
        "broker restart: {total} readings applied once, retry delays {delays:?} ms, {connects} \
         connections"
    );
}
