//! A backlog at the broker. In the first test the daemon is stopped (SIGSTOP) while readings
//! are published, and then meets them all at once. Its queue stays bounded, and the
//! acknowledgements keep pace with the commits. In the second a slow rule makes the drain last
//! several keep-alive periods, and the connection stays up throughout.

use std::time::{Duration, Instant};

use crate::accounting::daemon_config;
use crate::support::{
    Daemon, Mosquitto, copy_dir, flat_load, get_text, metric, publish_all, repo_root, send_signal,
};

const METERS: usize = 1_000;
const HOURS: i64 = 60;
/// `mqtt.queue_capacity` and `store.commit_max_readings` at their defaults.
const QUEUE: u64 = 10_000;
const BATCH: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drain_keeps_acknowledgements_flowing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    let config = daemon_config(&broker, "gridwatch-backlog", &rules, None);
    let daemon = Daemon::start(dir.path(), &config);

    let readings: Vec<_> = (0..METERS)
        .flat_map(|m| flat_load(&format!("backlog-{m}"), 0, HOURS))
        .collect();
    let total = readings.len() as u64;
    send_signal(daemon.pid(), "STOP");
    publish_all(broker.port, readings).await;
    send_signal(daemon.pid(), "CONT");

    let url = format!("{}/metrics", daemon.http);
    let start = Instant::now();
    let (mut held_max, mut unacked_max) = (0.0f64, 0.0f64);
    loop {
        let text = get_text(&url).await;
        let value = |name: &str| metric(&text, name).unwrap_or(0.0);
        let received = value("gridwatch_readings_received_total");
        let committed = value("gridwatch_messages_committed_total");
        let acked = value("gridwatch_mqtt_acks_total");
        held_max = held_max.max(received - committed);
        unacked_max = unacked_max.max(committed - acked);
        if acked >= total as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{acked} of {total} acknowledged after 180 s; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "backlog of {total}: held at most {held_max} received but uncommitted, {unacked_max} \
         committed but unacknowledged"
    );
    assert!(
        held_max <= (QUEUE + BATCH + 1) as f64,
        "the daemon held {held_max} messages, more than its queue and one batch"
    );
    // Acknowledgements go out a batch at a time after each commit, so a sample can catch a
    // batch or two waiting, but never the backlog.
    assert!(
        unacked_max <= (3 * BATCH) as f64,
        "{unacked_max} committed messages waited for their acknowledgement"
    );
    let text = get_text(&url).await;
    assert_eq!(
        metric(&text, "gridwatch_readings_accepted_total"),
        Some(total as f64)
    );
    assert_eq!(
        metric(&text, "gridwatch_mqtt_connection_errors_total"),
        Some(0.0),
        "the connection dropped during the drain; log:\n{}",
        daemon.log()
    );
}

/// Rule that spends a fixed number of Rhai operations on every reading.
const SLOW_RULE: &str = r#"// Burns time on every reading.
fn on_reading(reading, meter) {
    let sum = 0;
    for i in 0..1000 {
        sum += i;
    }
}
"#;

const KEEP_ALIVE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drain_keeps_connection_past_keep_alive() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    std::fs::write(rules.join("common/slow.rhai"), SLOW_RULE).unwrap();
    let config = daemon_config(&broker, "gridwatch-slow-drain", &rules, None).replace(
        "reconnect_min_ms = 100\n",
        &format!("reconnect_min_ms = 100\nkeep_alive_secs = {KEEP_ALIVE_SECS}\n"),
    );
    let daemon = Daemon::start(dir.path(), &config);

    let readings: Vec<_> = (0..METERS)
        .flat_map(|m| flat_load(&format!("slow-{m}"), 0, HOURS / 2))
        .collect();
    let total = readings.len() as f64;
    let start = Instant::now();
    publish_all(broker.port, readings).await;
    let url = format!("{}/metrics", daemon.http);
    loop {
        let text = get_text(&url).await;
        if metric(&text, "gridwatch_mqtt_acks_total").unwrap_or(0.0) >= total {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "not all acknowledged after 180 s; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain = start.elapsed();
    println!("slow drain of {total} readings took {drain:?}");
    assert!(
        drain > Duration::from_secs(3 * KEEP_ALIVE_SECS),
        "the drain took {drain:?}, too short to span three keep-alive periods"
    );
    let text = get_text(&url).await;
    assert_eq!(
        metric(&text, "gridwatch_mqtt_connection_errors_total"),
        Some(0.0),
        "the connection dropped during the drain; log:\n{}",
        daemon.log()
    );
}
