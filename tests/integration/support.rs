//! Real components for the integration tests: a Mosquitto broker and the daemon binary, each
//! started on free loopback ports and stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bearer token of the daemons the tests start, for the `/api/` routes.
pub const API_TOKEN: &str = "integration-test-token";

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal such as `TERM` or `INT` to a process with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("failed to run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Waits until `child` exits and returns its status, or `None` when `timeout` passes first.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mosquitto settings that differ between tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerSettings {
    /// `max_queued_messages` per client session; 0 means no limit.
    pub max_queued_messages: u64,
    /// Keeps sessions and their queued messages in a file across broker restarts.
    pub persistence: bool,
}

impl Default for BrokerSettings {
    fn default() -> BrokerSettings {
        BrokerSettings {
            max_queued_messages: 1_000_000,
            persistence: false,
        }
    }
}

impl BrokerSettings {
    /// No queue limit and sessions kept on disk, so nothing is dropped while the daemon or the
    /// broker is down.
    pub fn durable() -> BrokerSettings {
        BrokerSettings {
            max_queued_messages: 0,
            persistence: true,
        }
    }

    fn config(&self, port: u16, dir: &Path) -> String {
        let mut config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n\
             max_queued_messages {}\n",
            self.max_queued_messages
        );
        if self.persistence {
            let data = persistence_dir(dir);
            // The trailing slash makes Mosquitto treat the location as a folder.
            config.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                data.display()
            ));
        } else {
            config.push_str("persistence false\n");
        }
        config
    }
}

/// Creates the folder for Mosquitto's persistence file inside `dir`. Started as root, Mosquitto
/// drops to its own user, so the folder is writable by all and `dir` readable by all.
fn persistence_dir(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    data
}

/// A Mosquitto broker on a free loopback port.
pub struct Mosquitto {
    child: Child,
    /// Broker port.
    pub port: u16,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(BrokerSettings::default())
    }

    /// Starts Mosquitto with `settings` and waits until it accepts connections.
    pub fn start_with(settings: BrokerSettings) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, settings.config(port, dir.path())).unwrap();
        let child = spawn_mosquitto(&conf, port);
        Mosquitto {
            child,
            port,
            conf,
            _dir: dir,
        }
    }

    /// Starts Mosquitto with a whole configuration from `config`, which gets the port of the
    /// plain listener that start-up waits for, and the broker's folder (readable by all, so
    /// Mosquitto can read files placed there after dropping root).
    pub fn start_custom(config: impl FnOnce(u16, &Path) -> String) -> Mosquitto {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config(port, dir.path())).unwrap();
        let child = spawn_mosquitto(&conf, port);
        Mosquitto {
            child,
            port,
            conf,
            _dir: dir,
        }
    }

    /// Returns the broker URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker with SIGTERM, which makes it write its persistence file, and waits for
    /// it to exit.
    pub fn stop(&mut self) {
        send_signal(self.child.id(), "TERM");
        let status = wait_exit(&mut self.child, Duration::from_secs(10));
        assert!(
            status.is_some(),
            "mosquitto did not exit within 10 s of SIGTERM"
        );
    }

    /// Starts the broker again on the same port with the same configuration and persistence
    /// file.
    pub fn restart(&mut self) {
        self.child = spawn_mosquitto(&self.conf, self.port);
    }
}

fn spawn_mosquitto(conf: &Path, port: u16) -> Child {
    let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto is not installed: apt-get install -y mosquitto");
    let child = Command::new(binary)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("failed to start mosquitto");
    wait_for("mosquitto to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `gridwatch run` binary with a generated configuration.
pub struct Daemon {
    child: Child,
    /// Base URL of its HTTP endpoint.
    pub http: String,
    /// Its working folder (config, store, copied rules).
    pub dir: PathBuf,
}

/// Copies the folder `from` and everything below it to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

impl Daemon {
    /// Writes `config` (TOML without the `[http]` and `[store]` sections, which this adds) into
    /// `dir` and starts the daemon there.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let http_port = free_port();
        let full = format!(
            "{config}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\napi_token = \"{API_TOKEN}\"\n\n\
             [store]\npath = \"gridwatch.redb\"\n"
        );
        let path = dir.join("gridwatch.toml");
        std::fs::write(&path, full).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("failed to start gridwatch");
        let daemon = Daemon {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            dir: dir.to_owned(),
        };
        let url = format!("{}/healthz", daemon.http);
        wait_for("gridwatch /healthz", Duration::from_secs(30), || {
            reqwest::blocking_get_ok(&url)
        });
        // Messages published before the subscription is confirmed would miss a first session.
        if config.contains("url = \"mqtt://") {
            daemon.wait_for_log("subscription confirmed", Duration::from_secs(30));
        }
        daemon
    }

    /// Returns the daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Waits until the daemon's log contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        wait_for(&format!("'{text}' in the daemon log"), timeout, || {
            self.log().contains(text)
        });
    }

    /// Kills the daemon with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (such as `TERM` or `INT`) and returns the exit status, or `None` when the
    /// daemon is still running after `timeout`.
    pub fn stop_with(&mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        send_signal(self.child.id(), signal);
        wait_exit(&mut self.child, timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking GET used while waiting for start-up.
mod reqwest {
    use std::io::{Read, Write};

    pub fn blocking_get_ok(url: &str) -> bool {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(mut stream) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    }
}

/// Fetches a JSON document from the daemon.
pub async fn get_json(url: &str) -> serde_json::Value {
    let response = ::reqwest::Client::new()
        .get(url)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON from {url}: {e}: {text}"))
}

/// Fetches the daemon's metrics text.
pub async fn get_text(url: &str) -> String {
    ::reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Returns the value of a metric line such as `gridwatch_readings_rejected_total{reason="x"}`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// Publishes messages at QoS 1 and waits for every acknowledgement.
pub async fn publish_all(url_port: u16, messages: Vec<(String, Vec<u8>)>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut options = MqttOptions::new(format!("test-pub-{}", free_port()), "127.0.0.1", url_port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, messages.len().max(10) + 10);
    let total = messages.len();
    for (topic, payload) in messages {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout(std::time::Duration::from_secs(20), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("publisher connection failed: {error}"),
            Err(_) => panic!("timed out waiting for PubAcks ({acked} of {total})"),
        }
    }
    let _ = client.disconnect().await;
}

/// Waits until the daemon has committed every message the broker delivered: the received count
/// equals the committed count and has not changed for one second.
pub async fn wait_until_processed(daemon: &Daemon) {
    let url = format!("{}/metrics", daemon.http);
    let mut previous = -1.0;
    let start = Instant::now();
    loop {
        let text = get_text(&url).await;
        let received = metric(&text, "gridwatch_readings_received_total").unwrap_or(0.0);
        let committed = metric(&text, "gridwatch_messages_committed_total").unwrap_or(0.0);
        if received > 0.0 && received == committed && received == previous {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "readings still in flight: {text}"
        );
        previous = received;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Hourly readings of a flat 6.5 kW load (two mining rigs) on `meter` in region `south`, for
/// `hours` from `first_hour`.
pub fn flat_load(meter: &str, first_hour: i64, hours: i64) -> Vec<(String, Vec<u8>)> {
    let start_ms = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    (first_hour..first_hour + hours)
        .map(|h| {
            let ts = start_ms + h * 3_600_000;
            let register = 5_000.0 + h as f64 * 6.5;
            (
                format!("meters/south/{meter}/telemetry"),
                format!(r#"{{"ts":{ts},"energy_import_kwh":{register:.3}}}"#).into_bytes(),
            )
        })
        .collect()
}

/// Returns the number of stored mining alerts.
pub async fn mining_alerts(daemon: &Daemon) -> usize {
    let alerts = get_json(&format!("{}/api/alerts", daemon.http)).await;
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "mining")
        .count()
}

/// Builds the shipped detectors and the fixture plugins for `wasm32-wasip2` once per test run,
/// in `target/plugins`, and returns the component's path: `mining`, `tamper`, `abnormal-load`
/// `theft` or `energy-balance` for a shipped detector, otherwise the fixture's name (an example of
/// `tests/plugins`).
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let root = repo_root();
        let target = root.join("target/plugins");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
            ])
            .args([
                "-p",
                "gridwatch-plugin-mining",
                "-p",
                "gridwatch-plugin-tamper",
                "-p",
                "gridwatch-plugin-abnormal-load",
                "-p",
                "gridwatch-plugin-theft",
                "-p",
                "gridwatch-plugin-energy-balance",
                "-p",
                "gridwatch-test-plugins",
            ])
            .args(["--lib", "--examples", "--target-dir"])
            .arg(&target)
            .output()
            .expect("failed to run cargo build for the plugins");
        assert!(
            output.status.success(),
            "building the plugins failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-wasip2/release")
    });
    match name {
        "mining" => out.join("gridwatch_plugin_mining.wasm"),
        "tamper" => out.join("gridwatch_plugin_tamper.wasm"),
        "abnormal-load" => out.join("gridwatch_plugin_abnormal_load.wasm"),
        "theft" => out.join("gridwatch_plugin_theft.wasm"),
        "energy-balance" => out.join("gridwatch_plugin_energy_balance.wasm"),
        _ => out.join("examples").join(format!("{name}.wasm")),
    }
}

/// Returns the alerts the daemon has stored.
pub async fn alerts(daemon: &Daemon) -> Vec<serde_json::Value> {
    let alerts = get_json(&format!("{}/api/alerts?limit=1000", daemon.http)).await;
    alerts["alerts"].as_array().expect("alerts array").clone()
}

/// Returns the number of messages held in the broker's message store, from its retained
/// `$SYS/broker/store/messages/count` topic. The count includes retained messages (such as the
/// `$SYS` topics themselves), so compare it with a baseline. Mosquitto updates the topic every
/// `sys_interval` seconds.
pub async fn broker_stored_messages(port: u16) -> u64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    const TOPIC: &str = "$SYS/broker/store/messages/count";
    let options = MqttOptions::new(format!("test-sys-{}", free_port()), "127.0.0.1", port);
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(TOPIC, QoS::AtMostOnce).await.unwrap();
    let count = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == TOPIC => {
                    let text = String::from_utf8_lossy(&publish.payload).into_owned();
                    return text
                        .trim()
                        .parse::<u64>()
                        .unwrap_or_else(|error| panic!("invalid {TOPIC} value {text:?}: {error}"));
                }
                Ok(_) => {}
                Err(error) => panic!("connection for {TOPIC} failed: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {TOPIC} message within 20 s; is sys_interval set?"));
    let _ = client.disconnect().await;
    count
}
