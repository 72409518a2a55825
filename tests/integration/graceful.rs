//! SIGTERM and SIGINT stop the daemon cleanly while a backlog is being processed: it exits 0
//! within 10 s, and after a restart on the same store and broker session no reading is applied
//! twice and none is missing.

use std::time::{Duration, Instant};

use crate::accounting::{daemon_config, rules_with_probe, wait_for_probe_total};
use crate::support::{
    BrokerSettings, Daemon, Mosquitto, flat_load, get_text, metric, publish_all,
    wait_until_processed,
};

/// Meters and hourly readings per meter published before and after the restart.
const METERS: usize = 20;
const HOURS_BEFORE: i64 = 150;
const HOURS_AFTER: i64 = 30;

/// Maximum time from the signal to the exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn readings(first_hour: i64, hours: i64) -> Vec<(String, Vec<u8>)> {
    (0..METERS)
        .flat_map(|m| flat_load(&format!("stop-{m}"), first_hour, hours))
        .collect()
}

async fn stops_cleanly_on(signal: &str) {
    let broker = Mosquitto::start_with(BrokerSettings {
        max_queued_messages: 0,
        persistence: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_with_probe(dir.path());
    let config = daemon_config(&broker, &format!("gridwatch-{signal}"), &rules, None);
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("subscribed", Duration::from_secs(20));

    publish_all(broker.port, readings(0, HOURS_BEFORE)).await;
    wait_for_accepted(&daemon).await;
    let signalled = Instant::now();
    let status = daemon.stop_with(signal, STOP_TIMEOUT);
    let elapsed = signalled.elapsed();
    let log = daemon.log();
    assert!(
        status.is_some(),
        "daemon still running {STOP_TIMEOUT:?} after SIG{signal}; log:\n{log}"
    );
    assert!(
        status.unwrap().success(),
        "exit status after SIG{signal}: {status:?}; log:\n{log}"
    );
    assert!(
        log.contains("gridwatch stopped"),
        "no stop line after SIG{signal}; log:\n{log}"
    );

    let daemon = Daemon::start(dir.path(), &config);
    publish_all(broker.port, readings(HOURS_BEFORE, HOURS_AFTER)).await;
    let total = METERS as u64 * (HOURS_BEFORE + HOURS_AFTER) as u64;
    let counts = wait_for_probe_total(&daemon, total, Duration::from_secs(90)).await;
    wait_until_processed(&daemon).await;

    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let duplicate = metric(
        &text,
        "gridwatch_register_intervals_total{kind=\"duplicate\"}",
    );
    let late = metric(&text, "gridwatch_register_intervals_total{kind=\"late\"}");
    assert_eq!(
        duplicate.unwrap_or(0.0),
        0.0,
        "readings delivered again after SIG{signal}"
    );
    assert_eq!(late.unwrap_or(0.0), 0.0, "late readings after SIG{signal}");
    for m in 0..METERS {
        let key = format!("south/stop-{m}");
        let count = counts.get(&key).copied();
        assert_eq!(
            count,
            Some((HOURS_BEFORE + HOURS_AFTER) as u64),
            "readings applied for {key}"
        );
    }
    println!(
        "graceful stop on SIG{signal}: exit 0 after {elapsed:?}, {total} readings applied once"
    );
}

/// Waits until the daemon has applied some readings, so the signal arrives mid-backlog.
async fn wait_for_accepted(daemon: &Daemon) {
    let url = format!("{}/metrics", daemon.http);
    let start = Instant::now();
    loop {
        let text = get_text(&url).await;
        if metric(&text, "gridwatch_readings_accepted_total").unwrap_or(0.0) > 0.0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no reading accepted within 30 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_and_acknowledges_before_exit() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_commits_and_acknowledges_before_exit() {
    stops_cleanly_on("INT").await;
}
