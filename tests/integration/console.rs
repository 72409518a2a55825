//! The web console in Debian's Chromium, driven headless over WebDriver (chromedriver): load the
//! console, filter the alert list, open an alert, check that its load curve is drawn, and
//! acknowledge it. With `GRIDWATCH_SCREENSHOTS=DIR` the test also saves the alert page and the
//! status page as PNG files in DIR.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use gridwatch::delivery::receiver::{Behaviour, Receiver};
use serde_json::json;

use crate::support::{
    API_TOKEN, Daemon, Mosquitto, copy_dir, free_port, get_json, plugin_wasm, publish_all,
    repo_root, wait_until_processed,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} or {CHROMEDRIVER} not found: install Debian's chromium and chromium-driver \
             packages (.ci/run does)"
        );
        let port = free_port();
        // Its own process group, so that a failed test also stops the Chromium it started.
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("failed to start chromedriver");
        crate::support::wait_for("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
            }),
        );
        // Both ring and aws-lc-rs are in the tree, so rustls needs one chosen explicitly.
        gridwatch::ingest::install_crypto_provider();
        ClientBuilder::rustls()
            .expect("failed to build the WebDriver client")
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("failed to open a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Runs `script` in the page every 100 ms until it returns true.
async fn wait_in_page(browser: &Client, condition: &str, script: &str) {
    let start = Instant::now();
    loop {
        let value = browser.execute(script, vec![]).await.unwrap();
        if value.as_bool() == Some(true) {
            return;
        }
        let html = browser.source().await.unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {condition}; page:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the first element that `locator` finds.
async fn click(browser: &Client, locator: Locator<'_>) {
    let element = browser.find(locator).await.unwrap();
    element.click().await.unwrap();
}

async fn screenshot(browser: &Client, name: &str) {
    let Ok(dir) = std::env::var("GRIDWATCH_SCREENSHOTS") else {
        return;
    };
    let png = browser.screenshot().await.unwrap();
    std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
}

/// Hourly readings of `meter` in region `south` for 170 hours: a household's daily load (0.3 kW
/// at night, up to 1.8 kW in the evening) on top of two mining rigs drawing 6.5 kW.
fn household_with_rigs(meter: &str) -> Vec<(String, Vec<u8>)> {
    let start_ms = 1_750_000_000_000_i64 / 3_600_000 * 3_600_000;
    let mut register = 5_000.0;
    (0..170)
        .map(|h| {
            let hour_of_day = (start_ms / 3_600_000 + h) % 24;
            let household = match hour_of_day {
                0..=5 => 0.3,
                6..=8 => 0.9,
                17..=21 => 1.8,
                _ => 0.6,
            };
            register += 6.5 + household;
            let payload = json!({
                "ts": start_ms + (h + 1) * 3_600_000,
                "energy_import_kwh": register,
            });
            (
                format!("meters/south/{meter}/telemetry"),
                payload.to_string().into_bytes(),
            )
        })
        .collect()
}

/// Readings with a cover-open event on `meter`, which the shipped tamper rule alerts on.
fn cover_open(meter: &str) -> Vec<(String, Vec<u8>)> {
    let ts = 1_750_000_000_000_i64 / 3_600_000 * 3_600_000;
    (0..3)
        .map(|h| {
            let payload = json!({
                "ts": ts + h * 3_600_000,
                "energy_import_kwh": 100.0 + h as f64 * 0.4,
                "events": if h == 2 { json!(["cover_open"]) } else { json!([]) },
            });
            (
                format!("meters/north/{meter}/telemetry"),
                payload.to_string().into_bytes(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_filters_shows_curve_and_acknowledges() {
    let broker = Mosquitto::start();
    let (receiver_addr, _receiver) =
        Receiver::start("127.0.0.1:0".parse().unwrap(), SECRET, Behaviour::accept())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin_wasm("mining"), plugins.join("mining.wasm")).unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-console\"\n\n[rules]\ndir = \"{}\"\n\n\
         [plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n\n\
         [plugins.detectors.mining]\nregions = [\"*\"]\n\n\
         [[webhooks]]\nname = \"ops\"\nurl = \"http://{receiver_addr}/hook\"\nsecret = \"{SECRET}\"\n",
        broker.url(),
        rules.display()
    );
    let daemon = Daemon::start(dir.path(), &config);
    let mut messages = household_with_rigs("rig-7");
    messages.extend(cover_open("cover-3"));
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let driver = Driver::start();
    let browser = driver.browser().await;
    browser
        .goto(&format!("{}/console/", daemon.http))
        .await
        .unwrap();
    let token = browser.find(Locator::Id("token")).await.unwrap();
    token.send_keys(API_TOKEN).await.unwrap();
    click(&browser, Locator::Css("#token-form button")).await;
    wait_in_page(
        &browser,
        "two alert rows",
        "return document.querySelectorAll('tr.alert-row').length === 2;",
    )
    .await;

    // Filter by kind: only the mining alert stays.
    let kind = browser
        .find(Locator::Css("input[name=kind]"))
        .await
        .unwrap();
    kind.send_keys("mining").await.unwrap();
    click(&browser, Locator::Css("#filters button")).await;
    wait_in_page(
        &browser,
        "one mining row",
        "const rows = document.querySelectorAll('tr.alert-row'); \
         return rows.length === 1 && rows[0].textContent.includes('south/rig-7');",
    )
    .await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("kind=mining")
    );

    // Open the alert: the curve has a point per hour held, the baseline and the evidence show.
    click(&browser, Locator::Css("tr.alert-row")).await;
    wait_in_page(
        &browser,
        "the load curve",
        "const line = document.querySelector('#plot polyline.curve'); \
         return !!line && line.getAttribute('points').split(' ').length >= 100;",
    )
    .await;
    let baseline = browser.find(Locator::Css("#plot line.baseline")).await;
    assert!(baseline.is_ok(), "no baseline drawn");
    let evidence = browser
        .find(Locator::Id("evidence"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(evidence.contains("mean_kw"), "evidence: {evidence}");
    screenshot(&browser, "console-alert.png").await;

    // Acknowledge with a comment, through the button.
    let url = browser.current_url().await.unwrap();
    let id = url
        .fragment()
        .unwrap()
        .trim_start_matches("/alerts/")
        .to_owned();
    browser
        .find(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys("crew sent")
        .await
        .unwrap();
    click(&browser, Locator::Id("ack")).await;
    wait_in_page(
        &browser,
        "the acknowledged status",
        "const pill = document.querySelector('h1 .status-pill'); \
         return !!pill && pill.textContent === 'acknowledged';",
    )
    .await;
    let alert = get_json(&format!("{}/api/alerts/{id}", daemon.http)).await;
    assert_eq!(alert["status"], "acknowledged", "{alert}");
    let action = &alert["actions"][0];
    assert_eq!(action["action"], "acknowledge", "{alert}");
    assert_eq!(action["comment"], "crew sent", "{alert}");

    // Status page: broker, store, plugins and webhooks.
    browser
        .goto(&format!("{}/console/#/status", daemon.http))
        .await
        .unwrap();
    wait_in_page(
        &browser,
        "the status page",
        "const health = document.getElementById('health'); \
         const plugins = document.getElementById('plugins'); \
         const webhooks = document.getElementById('webhooks'); \
         return !!health && health.textContent.includes('connected') \
             && health.textContent.includes('healthy') \
             && !!plugins && plugins.textContent.includes('mining') \
             && !!webhooks && webhooks.textContent.includes('ops');",
    )
    .await;
    screenshot(&browser, "console-status.png").await;
    let status = get_json(&format!("{}/api/status", daemon.http)).await;
    let mining_rule = status["rules"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "common/mining.rhai")
        .cloned()
        .unwrap_or_default();
    assert_eq!(mining_rule["evaluations"], 173, "{status}");
    assert!(
        mining_rule["evaluation_seconds"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    let plugin = &status["plugins"]["loaded"][0];
    assert_eq!(plugin["readings"], 173, "{status}");
    assert!(plugin["call_seconds"].as_f64().unwrap() > 0.0, "{status}");
    browser.close().await.unwrap();
}
