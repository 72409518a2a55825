//! The shipped tamper, abnormal-load, theft and energy-balance detectors: their fixtures through
//! `gridwatch plugin test`, and their alerts through real Mosquitto and the running daemon.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    Daemon, Mosquitto, alerts, copy_dir, plugin_wasm, publish_all, repo_root, wait_until_processed,
};

/// Runs `gridwatch` with `args` and returns success, stdout and stderr.
fn gridwatch(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(args)
        .output()
        .expect("failed to run gridwatch");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `gridwatch plugin test` on a shipped plugin with its fixture readings, its fixture
/// config when it has one, and `expect` as the expected findings.
fn fixture_test(plugin: &str, expect: &Path) -> (bool, String, String) {
    let wasm = plugin_wasm(plugin);
    let folder = repo_root().join("plugins").join(plugin).join("tests");
    let input = folder.join("readings.jsonl");
    let config = folder.join("gridwatch.toml");
    let mut args = vec![
        "plugin".to_owned(),
        "test".to_owned(),
        wasm.display().to_string(),
        "--input".to_owned(),
        input.display().to_string(),
        "--expect".to_owned(),
        expect.display().to_string(),
    ];
    if config.exists() {
        args.push("--config".to_owned());
        args.push(config.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    gridwatch(&args)
}

#[test]
fn detector_fixtures_pass_plugin_test() {
    for (plugin, kinds, findings, severity) in [
        (
            "tamper",
            "kinds:       tamper, meter_exchange",
            8,
            "\"high\"",
        ),
        ("abnormal-load", "kinds:       abnormal_load", 7, "\"high\""),
        ("theft", "kinds:       theft", 3, "\"medium\""),
        ("energy-balance", "kinds:       bypass", 22, "\"high\""),
    ] {
        let wasm = plugin_wasm(plugin);
        let (ok, out, err) = gridwatch(&["plugin", "inspect", wasm.to_str().unwrap()]);
        assert!(ok, "inspect {plugin}: {err}");
        assert!(out.contains(&format!("name:        {plugin}")), "{out}");
        assert!(out.contains(kinds), "{out}");

        let expect = repo_root()
            .join("plugins")
            .join(plugin)
            .join("tests/findings.jsonl");
        let (ok, out, err) = fixture_test(plugin, &expect);
        assert!(ok, "{plugin}: {out}{err}");
        assert!(
            out.contains(&format!("ok: {findings} findings match")),
            "{plugin}: {out}"
        );

        // A changed severity must make the same run fail.
        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("findings.jsonl");
        let text = std::fs::read_to_string(&expect).unwrap();
        std::fs::write(&wrong, text.replacen(severity, "\"critical\"", 1)).unwrap();
        let (ok, out, _) = fixture_test(plugin, &wrong);
        assert!(!ok, "{plugin}: a changed expectation must fail:\n{out}");
        assert!(out.contains("\"severity\":\"critical\""), "{plugin}: {out}");
    }
}

/// Copies the shipped rules without `tamper.rhai`, so every tamper alert comes from the plugin.
fn rules_without_tamper(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    std::fs::remove_file(rules.join("common/tamper.rhai")).unwrap();
    rules
}

/// Copies a shipped plugin into the daemon's plugins folder under a temporary name first, so
/// the watcher never reads a half-written file.
fn install(plugins: &Path, plugin: &str) {
    std::fs::create_dir_all(plugins).unwrap();
    let partial = plugins.join(format!(".{plugin}.partial"));
    std::fs::copy(plugin_wasm(plugin), &partial).unwrap();
    std::fs::rename(&partial, plugins.join(format!("{plugin}.wasm"))).unwrap();
}

/// Starts the daemon in `dir` with the plugin loaded for every region and `extra` config.
fn start_daemon(broker: &Mosquitto, dir: &Path, plugin: &str, extra: &str) -> Daemon {
    install(&dir.join("plugins"), plugin);
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-{plugin}\"\n\n[rules]\ndir = \"{}\"\n\n\
         [plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n\n\
         [plugins.detectors.{plugin}]\nregions = [\"*\"]\n{extra}",
        broker.url(),
        rules_without_tamper(dir).display(),
    );
    Daemon::start(dir, &config)
}

/// Builds hourly messages of `meter` in region `east` from `(hour, register kWh, extra JSON
/// fields)`.
fn hourly(meter: &str, readings: &[(i64, f64, &str)]) -> Vec<(String, Vec<u8>)> {
    let start_ms = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    readings
        .iter()
        .map(|(hour, register, extra)| {
            let ts = start_ms + hour * 3_600_000;
            let payload = format!(r#"{{"ts":{ts},"energy_import_kwh":{register:.3}{extra}}}"#);
            (
                format!("meters/east/{meter}/telemetry"),
                payload.into_bytes(),
            )
        })
        .collect()
}

/// Returns the stored alerts as `(meter, kind, severity, source)`, sorted.
async fn alert_summary(daemon: &Daemon) -> Vec<(String, String, String, String)> {
    let mut summary: Vec<_> = alerts(daemon)
        .await
        .iter()
        .map(|a| {
            (
                a["meter"].as_str().unwrap_or_default().to_owned(),
                a["kind"].as_str().unwrap_or_default().to_owned(),
                a["severity"].as_str().unwrap_or_default().to_owned(),
                a["source"]["rule"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    summary.sort();
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_plugin_alerts_through_broker() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&broker, dir.path(), "tamper", "");

    let normal = |base: f64| -> Vec<(i64, f64, &'static str)> {
        (0..6).map(|h| (h, base + 0.4 * h as f64, "")).collect()
    };
    let mut reversed = normal(1_000.0);
    // The register is set back by 150 kWh at hour 4 and counts on from there.
    reversed[4].1 -= 150.0;
    reversed[5].1 -= 150.0;
    let mut opened = normal(300.0);
    opened[3].2 = r#","events":["cover_open"]"#;
    let exchanged = [
        (0, 5_000.0, ""),
        (1, 5_000.5, ""),
        (2, 0.2, ""),
        (3, 0.7, ""),
        (4, 1.1, ""),
    ];
    let mut clean = normal(2_000.0);
    clean[2].2 = r#","voltage_v":230.5,"events":["power_failure"]"#;

    let mut messages = hourly("reversed", &reversed);
    messages.extend(hourly("opened", &opened));
    messages.extend(hourly("exchanged", &exchanged));
    messages.extend(hourly("clean", &clean));
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let source = "plugin:tamper@1.0.0".to_owned();
    let expected = vec![
        (
            "exchanged".to_owned(),
            "meter_exchange".to_owned(),
            "low".to_owned(),
            source.clone(),
        ),
        (
            "opened".to_owned(),
            "tamper".to_owned(),
            "high".to_owned(),
            source.clone(),
        ),
        (
            "reversed".to_owned(),
            "tamper".to_owned(),
            "high".to_owned(),
            source.clone(),
        ),
    ];
    let summary = alert_summary(&daemon).await;
    assert_eq!(summary, expected, "log:\n{}", daemon.log());
    assert!(
        !summary.iter().any(|(meter, ..)| meter == "clean"),
        "the clean meter has alerts: {summary:?}"
    );

    let stored = alerts(&daemon).await;
    let reversal = stored
        .iter()
        .find(|a| a["meter"] == "reversed")
        .expect("reversal alert");
    // Hour 3 read 1,001.2 kWh and hour 4 read 851.6 kWh.
    let drop_kwh = reversal["evidence"]["drop_kwh"].as_f64().unwrap();
    assert!((drop_kwh - 149.6).abs() < 1e-9, "{reversal}");
    assert_eq!(reversal["evidence"]["causes"], "register_reversal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abnormal_load_plugin_alerts_through_broker() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // The fixture config's four-week window, given to the running daemon.
    let fixture = repo_root().join("plugins/abnormal-load/tests");
    let extra = std::fs::read_to_string(fixture.join("gridwatch.toml")).unwrap();
    let daemon = start_daemon(&broker, dir.path(), "abnormal-load", &extra);

    // Three weeks of a daily pattern and two more days, in which `surge` draws 3 kW more from
    // 01:00 to 07:00 and `bypassed` records a tenth of its evening load.
    let readings = std::fs::read_to_string(fixture.join("readings.jsonl")).unwrap();
    let messages: Vec<(String, Vec<u8>)> = readings
        .lines()
        .map(|line| {
            let message: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                message["topic"].as_str().unwrap().to_owned(),
                message["payload"].to_string().into_bytes(),
            )
        })
        .collect();
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let source = "plugin:abnormal-load@1.0.0".to_owned();
    let expected = vec![
        (
            "bypassed".to_owned(),
            "abnormal_load".to_owned(),
            "high".to_owned(),
            source.clone(),
        ),
        (
            "surge".to_owned(),
            "abnormal_load".to_owned(),
            "high".to_owned(),
            source.clone(),
        ),
    ];
    let summary = alert_summary(&daemon).await;
    assert_eq!(summary, expected, "log:\n{}", daemon.log());
    assert!(
        !summary.iter().any(|(meter, ..)| meter == "steady"),
        "the steady meter has alerts: {summary:?}"
    );

    let stored = alerts(&daemon).await;
    let bypassed = stored
        .iter()
        .find(|a| a["meter"] == "bypassed")
        .expect("bypassed alert");
    assert_eq!(bypassed["evidence"]["direction"], "below", "{bypassed}");
    let surge = stored
        .iter()
        .find(|a| a["meter"] == "surge")
        .expect("surge alert");
    assert_eq!(surge["evidence"]["direction"], "above", "{surge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theft_plugin_alerts_through_broker() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // The fixture config's short level-drop windows, given to the running daemon.
    let fixture = repo_root().join("plugins/theft/tests");
    let config = std::fs::read_to_string(fixture.join("gridwatch.toml")).unwrap();
    let settings = config
        .lines()
        .find(|line| line.starts_with("settings = "))
        .expect("settings line in the fixture config");
    let daemon = start_daemon(&broker, dir.path(), "theft", settings);

    // Two weeks of hourly readings of six meters, of which `steady` does not change. From day
    // 8, `zeroed` reads zero from 02:00 to 10:00 and `flattened` reads each day's mean.
    // `scaled` reads 30 %, `holiday` 5 %, and `solar` exports at midday.
    let readings = std::fs::read_to_string(fixture.join("readings.jsonl")).unwrap();
    let messages: Vec<(String, Vec<u8>)> = readings
        .lines()
        .map(|line| {
            let message: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                message["topic"].as_str().unwrap().to_owned(),
                message["payload"].to_string().into_bytes(),
            )
        })
        .collect();
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let source = "plugin:theft@1.0.0".to_owned();
    let expected: Vec<(String, String, String, String)> = ["flattened", "scaled", "zeroed"]
        .iter()
        .map(|meter| {
            (
                (*meter).to_owned(),
                "theft".to_owned(),
                "medium".to_owned(),
                source.clone(),
            )
        })
        .collect();
    let summary = alert_summary(&daemon).await;
    assert_eq!(summary, expected, "log:\n{}", daemon.log());

    let stored = alerts(&daemon).await;
    for (meter, check) in [
        ("flattened", "flat_profile"),
        ("scaled", "level_drop"),
        ("zeroed", "zero_run"),
    ] {
        let alert = stored
            .iter()
            .find(|a| a["meter"] == meter)
            .unwrap_or_else(|| panic!("no alert for {meter}"));
        assert_eq!(alert["evidence"]["check"], check, "{alert}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_balance_plugin_names_bypassed_meter() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // The fixture's topology, next to the config so its relative path resolves there.
    let fixture = repo_root().join("plugins/energy-balance/tests");
    std::fs::copy(
        fixture.join("topology.csv"),
        dir.path().join("topology.csv"),
    )
    .unwrap();
    install(&dir.path().join("plugins"), "energy-balance");
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-energy-balance\"\n\n\
         [rules]\ndir = \"{}\"\n\n[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n\n\
         [plugins.detectors.energy-balance]\nregions = [\"east-tx\"]\nhistory_regions = [\"east\"]\n\
         settings = {{ topology = {{ file = \"topology.csv\" }} }}\n",
        broker.url(),
        rules_without_tamper(dir.path()).display(),
    );
    let daemon = Daemon::start(dir.path(), &config);

    // Three days of hourly readings of c1 to c4 in region east and of their transformer meter
    // tx1 in region east-tx, which records their load plus 3 % losses. From hour 48 on, 40 %
    // of c3's load bypasses its meter.
    let readings = std::fs::read_to_string(fixture.join("readings.jsonl")).unwrap();
    let messages: Vec<(String, Vec<u8>)> = readings
        .lines()
        .map(|line| {
            let message: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                message["topic"].as_str().unwrap().to_owned(),
                message["payload"].to_string().into_bytes(),
            )
        })
        .collect();
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let summary = alert_summary(&daemon).await;
    let expected = vec![(
        "tx1".to_owned(),
        "bypass".to_owned(),
        "high".to_owned(),
        "plugin:energy-balance@1.0.0".to_owned(),
    )];
    assert_eq!(summary, expected, "log:\n{}", daemon.log());

    let stored = alerts(&daemon).await;
    let alert = &stored[0];
    assert_eq!(alert["region"], "east-tx", "{alert}");
    assert_eq!(alert["evidence"]["suspect_1"], "c3", "{alert}");
    assert_eq!(alert["evidence"]["suspect_1_region"], "east", "{alert}");
    let onset_ms = alert["evidence"]["onset_ms"].as_i64().unwrap();
    assert_eq!(onset_ms, 1_741_737_600_000 + 48 * 3_600_000, "{alert}");
}

/// Five weeks of hourly readings of meter `north/m`: 0.5 kWh an hour, 0.8 kWh from 17:00 to
/// 22:00, and 3.5 kWh from 06:00 to 12:00 on day 24.
fn five_weeks_with_surge() -> String {
    const START_MS: i64 = 1_740_960_000_000; // 2025-03-03T00:00:00Z
    let mut register_kwh = 1_000.0;
    let mut lines = String::new();
    for hour in 0..=35 * 24 {
        let ts_ms = START_MS + hour * 3_600_000;
        lines.push_str(&format!(
            "{{\"topic\":\"meters/north/m/telemetry\",\"payload\":{{\"ts\":{ts_ms},\
             \"energy_import_kwh\":{register_kwh:.3}}}}}\n"
        ));
        let hour_of_day = hour % 24;
        register_kwh += if (24 * 24 + 6..24 * 24 + 12).contains(&hour) {
            3.5
        } else if (17..22).contains(&hour_of_day) {
            0.8
        } else {
            0.5
        };
    }
    lines
}

#[test]
fn replay_alerts_do_not_depend_on_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        plugin_wasm("abnormal-load"),
        plugins.join("abnormal-load.wasm"),
    )
    .unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let input = dir.path().join("messages.jsonl");
    std::fs::write(&input, five_weeks_with_surge()).unwrap();
    // The fixture's four-week window: the surge on day 24 is judged against days 3, 10 and 17.
    let state =
        std::fs::read_to_string(repo_root().join("plugins/abnormal-load/tests/gridwatch.toml"))
            .unwrap();

    let mut runs = Vec::new();
    for commit in [1, 5_000] {
        let config = dir.path().join(format!("gridwatch-{commit}.toml"));
        std::fs::write(
            &config,
            format!(
                "{state}\n[store]\ncommit_max_readings = {commit}\n\n[plugins]\n\
                 dir = \"{}\"\ncache_dir = \"{}\"\n\n[plugins.detectors.abnormal-load]\n\
                 regions = [\"*\"]\n",
                plugins.display(),
                dir.path().join("cache").display(),
            ),
        )
        .unwrap();
        let alerts = dir.path().join(format!("alerts-{commit}.jsonl"));
        let (ok, out, err) = gridwatch(&[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--alerts",
            alerts.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(ok, "replay with batches of {commit}: {out}{err}");
        let found: Vec<(String, i64, String)> = std::fs::read_to_string(&alerts)
            .unwrap()
            .lines()
            .map(|line| {
                let alert: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    alert["meter"].as_str().unwrap().to_owned(),
                    alert["evidence"]["hour_start_ms"].as_i64().unwrap(),
                    alert["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        runs.push(found);
    }

    // With 5,000 readings in one batch, the day-24 readings were once judged on a history
    // that had already moved on to day 35 and lost the first earlier week.
    assert_eq!(
        runs[0].len(),
        1,
        "one alert with batches of 1: {:?}",
        runs[0]
    );
    assert_eq!(runs[0][0].0, "m");
    assert_eq!(runs[1], runs[0], "batches of 5,000 against batches of 1");
}
