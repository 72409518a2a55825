//! Meter state survives a rule reload: statistics gathered before the reload count after it.

use std::time::Duration;

use crate::support::{
    Daemon, Mosquitto, copy_dir, flat_load, get_text, metric, mining_alerts, publish_all,
    repo_root, wait_until_processed,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_rule_reload() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-reload\"\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        rules.display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    publish_all(broker.port, flat_load("farm-2", 0, 80)).await;
    wait_until_processed(&daemon).await;
    assert_eq!(
        mining_alerts(&daemon).await,
        0,
        "80 hours are too few for the mining rule"
    );

    // A new rule file makes the daemon compile and swap in a new rule set.
    std::fs::write(
        rules.join("common/noop.rhai"),
        "fn on_reading(reading, meter) { }\n",
    )
    .unwrap();
    let metrics_url = format!("{}/metrics", daemon.http);
    let start = std::time::Instant::now();
    loop {
        let text = get_text(&metrics_url).await;
        let reloads = metric(&text, "gridwatch_rule_reloads_total{outcome=\"success\"}");
        if reloads >= Some(1.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no rule reload: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    publish_all(broker.port, flat_load("farm-2", 80, 80)).await;
    wait_until_processed(&daemon).await;
    let mining = mining_alerts(&daemon).await;
    assert_eq!(
        mining,
        1,
        "160 hours across the reload fire the mining rule; log:\n{}",
        daemon.log()
    );
}
