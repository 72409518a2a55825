//! Meter state persists in redb: statistics gathered before a restart count after it.

use crate::support::{
    Daemon, Mosquitto, flat_load, mining_alerts, publish_all, repo_root, wait_until_processed,
};

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
    publish_all(broker.port, flat_load("farm-1", 0, 80)).await;
    wait_until_processed(&daemon).await;
    assert_eq!(
        mining_alerts(&daemon).await,
        0,
        "80 hours are too few for the mining rule"
    );
    drop(daemon);

    let daemon = Daemon::start(dir.path(), &config);
    publish_all(broker.port, flat_load("farm-1", 80, 80)).await;
    wait_until_processed(&daemon).await;
    assert_eq!(
        mining_alerts(&daemon).await,
        1,
        "160 hours across the restart fire the mining rule; log:\n{}",
        daemon.log()
    );
}
