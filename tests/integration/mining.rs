//! The bundled UK household data through real Mosquitto and the daemon, with mining rigs added
//! to two meters: each gets exactly one open mining alert and one signed delivery.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use gridwatch::delivery::receiver::{Behaviour, Receiver};

use crate::support::{Daemon, Mosquitto, get_json, repo_root, wait_until_processed};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Each meter's first ten days: (meter, from, to).
const WINDOWS: [(&str, &str, &str); 3] = [
    ("uk-0", "2020-04-01T00:00:00Z", "2020-04-11T00:00:00Z"),
    ("uk-1", "2012-10-12T00:00:00Z", "2012-10-22T00:00:00Z"),
    ("uk-2", "2012-01-03T00:00:00Z", "2012-01-13T00:00:00Z"),
];

/// Meters that get two 3.25 kW rigs from the start of their window: (region, meter).
const RIGGED: [(&str, &str); 2] = [("south", "uk-0"), ("north", "uk-1")];

fn publish(broker: &str, region: &str, meter: &str, from: &str, to: &str, rigs: bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
    command
        .args(["publish", "--dataset", "eemeter-uk", "--speedup", "0"])
        .arg("--data-dir")
        .arg(repo_root().join("datasets/eemeter-uk"))
        .args(["--broker", broker, "--region", region, "--meters", meter])
        .args(["--from", from, "--to", to])
        .args(["--client-id", &format!("pub-{region}-{meter}")]);
    if rigs {
        command.args(["--rigs", "2", "--rig-meters", meter]);
    }
    let output = command.output().expect("failed to run gridwatch publish");
    assert!(
        output.status.success(),
        "publish {region}/{meter} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rigged_meters_get_one_mining_alert_each() {
    let broker = Mosquitto::start();
    let (receiver_addr, receiver) =
        Receiver::start("127.0.0.1:0".parse().unwrap(), SECRET, Behaviour::accept())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-e2e\"\n\n[rules]\ndir = \"{}\"\n\n\
         [[webhooks]]\nname = \"ops\"\nurl = \"http://{receiver_addr}/hook\"\nsecret = \"{SECRET}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let daemon = Daemon::start(dir.path(), &config);

    let url = broker.url();
    tokio::task::spawn_blocking(move || {
        for region in ["south", "north"] {
            for (meter, from, to) in WINDOWS {
                let rigs = RIGGED.contains(&(region, meter));
                publish(&url, region, meter, from, to, rigs);
            }
        }
    })
    .await
    .unwrap();

    wait_until_processed(&daemon).await;

    let alerts = get_json(&format!("{}/api/alerts?limit=1000", daemon.http)).await;
    let alerts = alerts["alerts"].as_array().expect("alerts array");
    let mining: Vec<_> = alerts.iter().filter(|a| a["kind"] == "mining").collect();
    let mut per_meter: HashMap<(String, String), usize> = HashMap::new();
    for alert in &mining {
        assert_eq!(alert["status"], "open", "alert {alert}");
        let key = (
            alert["region"].as_str().unwrap().to_owned(),
            alert["meter"].as_str().unwrap().to_owned(),
        );
        *per_meter.entry(key).or_default() += 1;
    }
    for (region, meter) in RIGGED {
        let count = per_meter
            .get(&(region.to_owned(), meter.to_owned()))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            count,
            1,
            "open mining alerts for {region}/{meter}; log:\n{}",
            daemon.log()
        );
    }
    assert_eq!(
        per_meter.len(),
        RIGGED.len(),
        "mining alerts on clean meters: {per_meter:?}"
    );

    let expected = alerts.len();
    let deliveries = receiver
        .wait_for(expected, Duration::from_secs(30))
        .await
        .unwrap_or_else(|got| panic!("expected {expected} deliveries, got {}", got.len()));
    // A second delivery for the same alert would arrive within the outbox's poll interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deliveries.len(), expected, "one delivery per alert");
    assert_eq!(
        receiver.received().len(),
        expected,
        "no extra deliveries arrived later"
    );
    for delivery in &deliveries {
        assert!(
            delivery.signature_valid,
            "invalid signature: {:?}",
            delivery.verify_error
        );
    }
    let delivered: BTreeSet<String> = deliveries
        .iter()
        .map(|d| {
            d.json.as_ref().unwrap()["data"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let stored: BTreeSet<String> = alerts
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, stored, "delivered alert ids");
}
