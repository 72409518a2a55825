//! SIGKILL at random points while the bundled UK data streams in at full speed. After every kill
//! the daemon restarts on the same store and broker session. In the end every reading has taken
//! effect exactly once, no alert is duplicated and every alert change reached the webhook
//! receiver, with redeliveries carrying the same `webhook-id`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use gridwatch::alerts::Severity;
use gridwatch::delivery::receiver::{Behaviour, ReceivedDelivery, Receiver};
use gridwatch::publish::{
    DatasetKind, Injection, MeterFilter, TelemetryOptions, build_telemetry, load_dataset,
};
use gridwatch::store::{Store, outbox};
use rand::Rng;

use crate::accounting::{PROBE_KIND, SECRET, daemon_config, rules_with_probe};
use crate::support::{BrokerSettings, Daemon, Mosquitto, get_text, metric, repo_root};

/// Kills and restarts of the daemon.
const KILL_CYCLES: usize = 20;

/// Maximum time the daemon runs before it is killed.
const MAX_RUN: Duration = Duration::from_millis(900);

/// One publisher run: region, meter, first and end reading time, rigs added.
struct Stream {
    region: &'static str,
    meter: &'static str,
    from: &'static str,
    to: &'static str,
    rigs: u32,
}

/// 90 days of each bundled meter in two regions, with mining rigs on two meters.
const STREAMS: [Stream; 6] = [
    stream(
        "south",
        "uk-0",
        "2020-04-01T00:00:00Z",
        "2020-06-30T00:00:00Z",
        3,
    ),
    stream(
        "south",
        "uk-1",
        "2012-10-12T00:00:00Z",
        "2013-01-10T00:00:00Z",
        0,
    ),
    stream(
        "south",
        "uk-2",
        "2012-01-03T00:00:00Z",
        "2012-04-02T00:00:00Z",
        0,
    ),
    stream(
        "north",
        "uk-0",
        "2020-04-01T00:00:00Z",
        "2020-06-30T00:00:00Z",
        0,
    ),
    stream(
        "north",
        "uk-1",
        "2012-10-12T00:00:00Z",
        "2013-01-10T00:00:00Z",
        2,
    ),
    stream(
        "north",
        "uk-2",
        "2012-01-03T00:00:00Z",
        "2012-04-02T00:00:00Z",
        0,
    ),
];

const fn stream(
    region: &'static str,
    meter: &'static str,
    from: &'static str,
    to: &'static str,
    rigs: u32,
) -> Stream {
    Stream {
        region,
        meter,
        from,
        to,
        rigs,
    }
}

impl Stream {
    fn key(&self) -> String {
        format!("{}/{}", self.region, self.meter)
    }

    /// Runs `gridwatch publish` for this stream and returns the readings it published.
    fn publish(&self, broker: &str) -> u64 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
        command
            .args(["publish", "--dataset", "eemeter-uk", "--speedup", "0"])
            .arg("--data-dir")
            .arg(repo_root().join("datasets/eemeter-uk"))
            .args([
                "--broker",
                broker,
                "--region",
                self.region,
                "--meters",
                self.meter,
            ])
            .args(["--from", self.from, "--to", self.to])
            .args([
                "--client-id",
                &format!("pub-{}-{}", self.region, self.meter),
            ]);
        if self.rigs > 0 {
            command.args(["--rigs", &self.rigs.to_string(), "--rig-meters", self.meter]);
        }
        let output = command.output().expect("failed to run gridwatch publish");
        assert!(
            output.status.success(),
            "publish {} failed: {}",
            self.key(),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no reading count in publish output: {stdout}"))
    }

    /// Builds the same telemetry as `gridwatch publish` and returns what the meter must end with.
    fn expected(&self) -> Expected {
        let time = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap();
        let from_ms = time(self.from).timestamp_millis();
        let dir = repo_root().join("datasets/eemeter-uk");
        let filter = MeterFilter {
            meters: vec![self.meter.to_owned()],
        };
        let series = load_dataset(DatasetKind::EemeterUk, &dir, &filter).unwrap();
        let options = TelemetryOptions {
            region: self.region.to_owned(),
            from_ms: Some(from_ms),
            to_ms: Some(time(self.to).timestamp_millis()),
            time_shift_ms: 0,
            injection: (self.rigs > 0).then(|| Injection {
                rigs: self.rigs,
                rig_kw: 3.25,
                meters: vec![self.meter.to_owned()],
                from_ms,
            }),
        };
        let mut expected = Expected::default();
        for telemetry in build_telemetry(&series, &options) {
            let payload: serde_json::Value = serde_json::from_slice(&telemetry.payload).unwrap();
            expected.published += 1;
            // Only a reading newer than the meter's newest runs the rules.
            if expected.readings == 0 || telemetry.ts_ms > expected.last_ts_ms {
                expected.readings += 1;
                expected.last_ts_ms = telemetry.ts_ms;
                expected.register_kwh = payload["energy_import_kwh"].as_f64().unwrap();
            }
        }
        expected
    }
}

/// What one meter must end with.
#[derive(Debug, Default)]
struct Expected {
    /// Messages published.
    published: u64,
    /// Readings that run the rules: those newer than every earlier one.
    readings: u64,
    /// Time of the newest reading, Unix milliseconds.
    last_ts_ms: i64,
    /// Import register of the newest reading, kWh.
    register_kwh: f64,
}

/// Counters scraped from the daemon just before each kill; they reset with every restart.
#[derive(Debug, Default)]
struct KillFigures {
    kills_while_publishing: usize,
    received: f64,
    accepted: f64,
    redelivered: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let broker = Mosquitto::start_with(BrokerSettings {
        max_queued_messages: 0,
        persistence: false,
    });
    let (receiver_addr, receiver) =
        Receiver::start("127.0.0.1:0".parse().unwrap(), SECRET, Behaviour::accept())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_with_probe(dir.path());
    let config = daemon_config(&broker, "gridwatch-crash", &rules, Some(receiver_addr));
    let mut daemon = Daemon::start(dir.path(), &config);
    // Readings published before the first subscription would be dropped by the broker.
    daemon.wait_for_log("subscribed", Duration::from_secs(20));

    let url = broker.url();
    let publisher =
        tokio::task::spawn_blocking(move || STREAMS.iter().map(|s| s.publish(&url)).sum::<u64>());

    let mut figures = KillFigures::default();
    let mut rng = rand::rng();
    for _ in 0..KILL_CYCLES {
        let run = rng.random_range(Duration::ZERO..=MAX_RUN);
        tokio::time::sleep(run).await;
        record_before_kill(&daemon, &mut figures, !publisher.is_finished()).await;
        daemon.kill();
        daemon = Daemon::start(dir.path(), &config);
    }
    let sent = publisher.await.unwrap();

    let expected: BTreeMap<String, Expected> =
        STREAMS.iter().map(|s| (s.key(), s.expected())).collect();
    let published: u64 = expected.values().map(|e| e.published).sum();
    assert_eq!(sent, published, "readings the publisher reported");
    let total: u64 = expected.values().map(|e| e.readings).sum();
    crate::accounting::wait_for_probe_total(&daemon, total, Duration::from_secs(120)).await;
    wait_for_deliveries(&daemon, &receiver).await;
    let status = daemon.stop_with("TERM", Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status after SIGTERM: {status:?}"
    );

    let store = Store::open(&dir.path().join("gridwatch.redb")).unwrap();
    check_meters(&store, &expected);
    let stored = check_alerts(&store, &expected);
    let deliveries = receiver.received();
    check_deliveries(&deliveries, &stored);
    let depth = outbox::depth(&store.db()).unwrap();
    assert_eq!(depth.outbox, 0, "deliveries left in the outbox");
    assert_eq!(depth.dead_letters, 0, "dead letters");

    let distinct: BTreeSet<&str> = deliveries.iter().filter_map(|d| d.id.as_deref()).collect();
    println!(
        "crash test: {KILL_CYCLES} kills ({} while publishing), {sent} readings sent, {total} \
         applied once; before the kills at least {} received, {} accepted, {} duplicate or late; \
         {} deliveries of {} messages ({} repeated) for {} alerts, {:.1} s",
        figures.kills_while_publishing,
        figures.received,
        figures.accepted,
        figures.redelivered,
        deliveries.len(),
        distinct.len(),
        deliveries.len() - distinct.len(),
        stored.len(),
        started.elapsed().as_secs_f64()
    );
}

async fn record_before_kill(daemon: &Daemon, figures: &mut KillFigures, publishing: bool) {
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let count = |labels: &str| metric(&text, labels).unwrap_or(0.0);
    figures.received += count("gridwatch_readings_received_total");
    figures.accepted += count("gridwatch_readings_accepted_total");
    figures.redelivered += count("gridwatch_register_intervals_total{kind=\"duplicate\"}")
        + count("gridwatch_register_intervals_total{kind=\"late\"}");
    if publishing {
        figures.kills_while_publishing += 1;
    }
}

/// Waits until the outbox is empty, as the daemon's gauge reports it.
async fn wait_for_deliveries(daemon: &Daemon, receiver: &Receiver) {
    let url = format!("{}/metrics", daemon.http);
    let start = Instant::now();
    loop {
        let text = get_text(&url).await;
        if metric(&text, "gridwatch_outbox_depth") == Some(0.0) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "outbox not empty after 30 s ({} deliveries received): {text}",
            receiver.received().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check_meters(store: &Store, expected: &BTreeMap<String, Expected>) {
    for (key, expected) in expected {
        let state = store
            .load_meter(key)
            .unwrap()
            .unwrap_or_else(|| panic!("no stored state for {key}"));
        let last = state
            .last
            .unwrap_or_else(|| panic!("no last reading for {key}"));
        assert_eq!(
            last.ts_ms, expected.last_ts_ms,
            "newest reading time of {key}"
        );
        assert_eq!(
            state.register.register_kwh(),
            Some(expected.register_kwh),
            "register of {key}"
        );
    }
}

/// Checks that every meter and kind has one alert and that each meter's probe count equals its
/// readings. Returns the stored alerts by id.
fn check_alerts(
    store: &Store,
    expected: &BTreeMap<String, Expected>,
) -> HashMap<String, gridwatch::alerts::Alert> {
    let alerts = store.list_alerts(usize::MAX).unwrap();
    let mut per_kind: BTreeMap<(String, String), usize> = BTreeMap::new();
    for alert in &alerts {
        let meter = format!("{}/{}", alert.region, alert.meter);
        *per_kind.entry((meter, alert.kind.clone())).or_default() += 1;
    }
    for ((meter, kind), count) in &per_kind {
        assert_eq!(*count, 1, "{kind} alerts stored for {meter}");
    }

    for (key, expected) in expected {
        let probe = alerts
            .iter()
            .find(|a| format!("{}/{}", a.region, a.meter) == *key && a.kind == PROBE_KIND)
            .unwrap_or_else(|| panic!("no probe alert for {key}"));
        assert_eq!(probe.count, expected.readings, "readings applied for {key}");
        assert_eq!(
            probe.last_seen_ms, expected.last_ts_ms,
            "newest reading that ran the rules for {key}"
        );
    }
    for stream in &STREAMS {
        let key = stream.key();
        let mining = per_kind.contains_key(&(key.clone(), "mining".to_owned()));
        assert_eq!(mining, stream.rigs > 0, "mining alert on {key}");
    }
    alerts.into_iter().map(|a| (a.id.to_string(), a)).collect()
}

/// Checks that every alert and every escalation arrived, that each alert change was sent under
/// one `webhook-id`, and that repeats of a `webhook-id` carry the same body.
fn check_deliveries(
    deliveries: &[ReceivedDelivery],
    stored: &HashMap<String, gridwatch::alerts::Alert>,
) {
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    let mut ids_per_change: BTreeMap<(String, String, String), BTreeSet<&str>> = BTreeMap::new();
    let mut top_severity: HashMap<String, Severity> = HashMap::new();
    for delivery in deliveries {
        assert!(
            delivery.signature_valid,
            "invalid signature: {:?}",
            delivery.verify_error
        );
        let id = delivery.id.as_deref().expect("webhook-id header");
        let body = bodies.entry(id).or_insert(&delivery.body);
        assert_eq!(*body, &delivery.body[..], "bodies sent under {id}");

        let json = delivery.json.as_ref().expect("JSON body");
        let data = &json["data"];
        let alert_id = data["id"].as_str().unwrap().to_owned();
        let severity = data["severity"].as_str().unwrap();
        let change = (
            alert_id.clone(),
            json["type"].to_string(),
            severity.to_owned(),
        );
        ids_per_change.entry(change).or_default().insert(id);
        let severity = Severity::parse(severity).unwrap();
        let top = top_severity.entry(alert_id).or_insert(severity);
        *top = (*top).max(severity);
    }

    for (change, ids) in &ids_per_change {
        assert_eq!(
            ids.len(),
            1,
            "webhook-ids for alert change {change:?}: {ids:?}"
        );
    }
    let delivered: BTreeSet<&String> = top_severity.keys().collect();
    let alert_ids: BTreeSet<&String> = stored.keys().collect();
    assert_eq!(delivered, alert_ids, "alert ids delivered");
    for (id, alert) in stored {
        assert_eq!(
            top_severity.get(id),
            Some(&alert.severity),
            "highest delivered severity of alert {id}"
        );
    }
}
