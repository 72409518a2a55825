//! End to end through a real Mosquitto broker at QoS 1: the daemon binary with the shipped rules
//! and a webhook receiver. Publishes readings as fast as the broker acknowledges them and reports
//! throughput, the backlog (published minus accepted) each second, and the latency from publish
//! to webhook delivery of probe readings, which is an upper bound of publish to commit.
//!
//! Run with `cargo bench -p gridwatch --bench mosquitto`. Needs `mosquitto` installed.
//! `GRIDWATCH_BENCH_READINGS` sets the number of readings (default 200,000 over 10,000 meters)
//! and `GRIDWATCH_BENCH_RATE` a steady publish rate in readings per second (default 0: as fast
//! as the broker acknowledges). `GRIDWATCH_BENCH_METERS` sets the number of meters (default
//! 10,000). The daemon's resident set size is sampled every second.
//!
//! With `GRIDWATCH_BENCH_BURST=1` the daemon is paused (SIGSTOP) while everything is published,
//! so the whole run waits at the broker, and then resumed (SIGCONT): the broker then delivers as
//! fast as the daemon acknowledges, which shows whether the daemon applies backpressure or
//! buffers the burst in memory. `GRIDWATCH_BENCH_PUBLISHERS` sets the number of publisher
//! connections that share the readings (default 1), and `GRIDWATCH_BENCH_CACHE_BYTES` the
//! daemon's `store.cache_bytes` (default: the daemon's default).
//!
//! Each second the bench records the daemon's resident set size and its anonymous and
//! file-backed parts (`/proc/PID/status`), the meters it holds, the messages it holds (received
//! but not yet committed, which the bounded `mqtt.queue_capacity` queue and the batch in
//! progress limit), and the broker's backlog (published but not yet received by the daemon).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gridwatch::delivery::receiver::{Behaviour, Receiver};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PROBE_EVERY: u64 = 1_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends a signal by name with kill(1).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("failed to run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Returns a size field of `/proc/PID/status`, such as `VmRSS` or `RssAnon`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// Counters read from the daemon's `/metrics` in one sample.
#[derive(Debug, Clone, Copy, Default)]
struct DaemonCounts {
    received: u64,
    committed: u64,
    acked: u64,
    accepted: u64,
    meters: u64,
}

/// Reads the daemon's counters, or `None` when it does not answer within 500 ms (while it is
/// stopped with SIGSTOP).
async fn daemon_counts(url: &str) -> Option<DaemonCounts> {
    let request = async { reqwest::get(url).await.ok()?.text().await.ok() };
    let text = tokio::time::timeout(Duration::from_millis(500), request)
        .await
        .ok()??;
    Some(DaemonCounts {
        received: metric(&text, "gridwatch_readings_received_total") as u64,
        committed: metric(&text, "gridwatch_messages_committed_total") as u64,
        acked: metric(&text, "gridwatch_mqtt_acks_total") as u64,
        accepted: metric(&text, "gridwatch_readings_accepted_total") as u64,
        meters: metric(&text, "gridwatch_meters") as u64,
    })
}

/// Per-second samples of the daemon and the broker.
#[derive(Debug, Default)]
struct Samples {
    /// Published minus accepted.
    backlog: Vec<u64>,
    /// Published minus received: what the broker still holds for the daemon.
    broker_backlog: Vec<u64>,
    /// Received minus committed: what the daemon holds in its queue and batch.
    in_daemon: Vec<u64>,
    /// Committed minus acknowledged.
    unacked: Vec<u64>,
    rss: Vec<u64>,
    rss_anon: Vec<u64>,
    rss_file: Vec<u64>,
    meters: Vec<u64>,
}

/// Samples every second until the daemon has accepted `total` readings.
async fn sample(url: String, pid: u32, published: Arc<AtomicU64>, total: u64) -> Samples {
    let mut samples = Samples::default();
    let mut last = DaemonCounts::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(counts) = daemon_counts(&url).await {
            last = counts;
        }
        let sent = published.load(Ordering::Relaxed);
        samples.backlog.push(sent.saturating_sub(last.accepted));
        samples
            .broker_backlog
            .push(sent.saturating_sub(last.received));
        samples
            .in_daemon
            .push(last.received.saturating_sub(last.committed));
        samples
            .unacked
            .push(last.committed.saturating_sub(last.acked));
        samples.rss.push(status_bytes(pid, "VmRSS"));
        samples.rss_anon.push(status_bytes(pid, "RssAnon"));
        samples.rss_file.push(status_bytes(pid, "RssFile"));
        samples.meters.push(last.meters);
        if last.accepted >= total {
            return samples;
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(i: u64, meters: u64, sent_ms: i64) -> (String, Vec<u8>) {
    let meter = i % meters;
    let hour = (i / meters) as i64;
    let ts = 1_750_000_000_000 / 3_600_000 * 3_600_000 + hour * 3_600_000;
    if i % PROBE_EVERY == PROBE_EVERY - 1 {
        let topic = format!("meters/south/probe-{i}/telemetry");
        let body = format!(
            r#"{{"ts":{ts},"energy_import_kwh":100.0,"events":["cover_open"],"sent_ms":{sent_ms}}}"#
        );
        return (topic, body.into_bytes());
    }
    let topic = format!("meters/south/m-{meter}/telemetry");
    let register = 1_000.0 + hour as f64 * 0.4 + (meter % 7) as f64;
    (
        topic,
        format!(r#"{{"ts":{ts},"energy_import_kwh":{register:.3},"power_w":400.0}}"#).into_bytes(),
    )
}

/// Prints a per-second series: every value when short, otherwise eleven evenly spaced samples
/// (start, each tenth, end) with the minimum and maximum.
fn print_series(name: &str, values: &[u64], divisor: f64, unit: &str) {
    let scale = |v: u64| format!("{:.0}", v as f64 / divisor);
    if values.len() <= 30 {
        let all: Vec<String> = values.iter().map(|v| scale(*v)).collect();
        println!("{name}: [{}]{unit}", all.join(", "));
        return;
    }
    let last = values.len() - 1;
    let samples: Vec<String> = (0..=10).map(|i| scale(values[last * i / 10])).collect();
    let min = values.iter().min().copied().unwrap_or(0);
    let max = values.iter().max().copied().unwrap_or(0);
    println!(
        "{name}: {} samples; at 0%, 10%, ..., 100%: [{}]; min {}, max {}{unit}",
        values.len(),
        samples.join(", "),
        scale(min),
        scale(max)
    );
}

/// Publishes every `publishers`-th reading from `first`, at `rate` readings/s (0: as fast as the
/// broker acknowledges), adding each acknowledgement to `published`. Returns the probes sent,
/// with their send times.
async fn publish(
    broker_port: u16,
    first: u64,
    publishers: u64,
    total: u64,
    meters: u64,
    rate: f64,
    published: Arc<AtomicU64>,
) -> Vec<(String, Instant)> {
    let mut options =
        MqttOptions::new(format!("bench-publisher-{first}"), "127.0.0.1", broker_port);
    options.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(options, 10_000);
    let own = (first..total).step_by(publishers as usize).count() as u64;
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < own {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                acked += 1;
                published.fetch_add(1, Ordering::Relaxed);
            }
        }
        events
    });
    let start = Instant::now();
    let mut probes = Vec::new();
    for (n, i) in (first..total).step_by(publishers as usize).enumerate() {
        if rate > 0.0 && n % 100 == 0 {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let sent_ms = chrono::Utc::now().timestamp_millis();
        let (topic, body) = payload(i, meters, sent_ms);
        if i % PROBE_EVERY == PROBE_EVERY - 1 {
            probes.push((format!("probe-{i}"), Instant::now()));
        }
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    let _events = poller.await.unwrap();
    probes
}

#[tokio::main]
async fn main() {
    let meters = env_number("GRIDWATCH_BENCH_METERS", 10_000);
    let total: u64 = std::env::var("GRIDWATCH_BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rate: f64 = std::env::var("GRIDWATCH_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let publishers = env_number("GRIDWATCH_BENCH_PUBLISHERS", 1).max(1);
    let cache_bytes = env_number("GRIDWATCH_BENCH_CACHE_BYTES", 0);
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    std::fs::write(
        dir.path().join("mosquitto.conf"),
        format!("listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 10000000\n"),
    )
    .unwrap();
    let mut mosquitto = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(dir.path().join("mosquitto.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto must be installed");
    // Reaped after the run, below.
    let (receiver_addr, receiver) =
        Receiver::start("127.0.0.1:0".parse().unwrap(), SECRET, Behaviour::accept())
            .await
            .unwrap();
    let http_port = free_port();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let cache = if cache_bytes > 0 {
        format!("cache_bytes = {cache_bytes}\n")
    } else {
        String::new()
    };
    std::fs::write(
        dir.path().join("gridwatch.toml"),
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nclient_id = \"bench\"\n\n[rules]\ndir = \"{rules}\"\n\n\
             [store]\npath = \"bench.redb\"\n{cache}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
             [[webhooks]]\nname = \"bench\"\nurl = \"http://{receiver_addr}/\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["run", "--config"])
        .arg(dir.path().join("gridwatch.toml"))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    while reqwest::get(&metrics_url).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let published = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample(
        metrics_url.clone(),
        daemon.id(),
        published.clone(),
        total,
    ));

    let burst = std::env::var("GRIDWATCH_BENCH_BURST").is_ok_and(|v| v == "1");
    if burst {
        signal(daemon.id(), "STOP");
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for publisher in 0..publishers {
        let published = published.clone();
        tasks.push(tokio::spawn(publish(
            broker_port,
            publisher,
            publishers,
            total,
            meters,
            rate / publishers as f64,
            published,
        )));
    }
    let mut probes = Vec::new();
    for task in tasks {
        probes.extend(task.await.unwrap());
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let resumed = Instant::now();
    if burst {
        signal(daemon.id(), "CONT");
    }
    let samples = sampler.await.unwrap();
    let process_secs = start.elapsed().as_secs_f64();
    let drain_secs = resumed.elapsed().as_secs_f64();

    let deliveries = receiver
        .wait_for(probes.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|d| d);
    let mut latencies: Vec<f64> = deliveries
        .iter()
        .filter_map(|d| {
            let meter = d.json.as_ref()?["data"]["meter"].as_str()?.to_owned();
            let sent = probes.iter().find(|(m, _)| *m == meter)?.1;
            Some(d.received_at.duration_since(sent).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];

    println!(
        "readings: {total} over {meters} meters from {publishers} publishers, QoS 1, Mosquitto \
         max_inflight_messages 1000, target rate {rate} readings/s (0 = unpaced)"
    );
    println!(
        "publish (all PubAcks): {publish_secs:.2} s = {:.0} readings/s",
        total as f64 / publish_secs
    );
    println!(
        "processed (all accepted): {process_secs:.2} s = {:.0} readings/s",
        total as f64 / process_secs
    );
    if burst {
        println!(
            "drained after SIGCONT: {drain_secs:.2} s = {:.0} readings/s",
            total as f64 / drain_secs
        );
    }
    print_series(
        "backlog per second (published - accepted)",
        &samples.backlog,
        1.0,
        "",
    );
    print_series(
        "broker backlog per second (published - received)",
        &samples.broker_backlog,
        1.0,
        "",
    );
    print_series(
        "held by the daemon per second (received - committed)",
        &samples.in_daemon,
        1.0,
        "",
    );
    print_series(
        "committed, not yet acknowledged, per second",
        &samples.unacked,
        1.0,
        "",
    );
    print_series("daemon RSS per second", &samples.rss, 1_048_576.0, " MiB");
    print_series("daemon RssAnon", &samples.rss_anon, 1_048_576.0, " MiB");
    print_series("daemon RssFile", &samples.rss_file, 1_048_576.0, " MiB");
    print_series("meters held", &samples.meters, 1.0, "");
    let redb_bytes = std::fs::metadata(dir.path().join("bench.redb")).map_or(0, |m| m.len());
    println!("store file: {:.0} MiB", redb_bytes as f64 / 1_048_576.0);
    println!(
        "publish to webhook delivery, {} probes: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}
