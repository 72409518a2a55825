//! WebAssembly plugins in the running daemon, fed through real Mosquitto: hostile plugins are
//! contained, a plugin swapped under load keeps its state, rules read plugin scores, and the
//! `gridwatch plugin` tools inspect and test a plugin. One test runs a plugin bank directly, to
//! check that a batch split into several calls passes scores from call to call.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{
    Daemon, Mosquitto, alerts, copy_dir, flat_load, get_text, metric, plugin_wasm, publish_all,
    repo_root, wait_until_processed,
};

/// Hostile fixtures and the metric cause each must be counted under.
const HOSTILE: [(&str, &str, &str); 5] = [
    ("endless_loop", "endless-loop", "fuel"),
    ("memory_hog", "memory-hog", "memory"),
    ("deep_recursion", "deep-recursion", "stack"),
    ("huge_output", "huge-output", "output"),
    ("always_trap", "always-trap", "trap"),
];

/// Copies the shipped rules without `mining.rhai`, so every mining alert comes from the plugin.
fn rules_without_mining(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    copy_dir(&repo_root().join("rules"), &rules);
    std::fs::remove_file(rules.join("common/mining.rhai")).unwrap();
    rules
}

fn install(plugins: &Path, fixture: &str, file: &str) {
    std::fs::create_dir_all(plugins).unwrap();
    // Copy then rename, so the watcher never reads a half-written file.
    let partial = plugins.join(format!(".{file}.partial"));
    std::fs::copy(plugin_wasm(fixture), &partial).unwrap();
    std::fs::rename(&partial, plugins.join(file)).unwrap();
}

fn detectors(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("[plugins.detectors.{name}]\nregions = [\"*\"]\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tamper_messages(meter: &str, count: i64) -> Vec<(String, Vec<u8>)> {
    let start_ms = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    (0..count)
        .map(|h| {
            let ts = start_ms + h * 3_600_000;
            let payload = format!(
                r#"{{"ts":{ts},"energy_import_kwh":{:.1},"events":["cover_open"]}}"#,
                100.0 + h as f64
            );
            (
                format!("meters/south/{meter}/telemetry"),
                payload.into_bytes(),
            )
        })
        .collect()
}

fn failures(text: &str, plugin: &str, cause: &str) -> f64 {
    let name = format!("gridwatch_plugin_failures_total{{plugin=\"{plugin}\",cause=\"{cause}\"}}");
    metric(text, &name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_contained_rules_still_alert() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(&plugins, "mining", "mining.wasm");
    for (fixture, _, _) in HOSTILE {
        install(&plugins, fixture, &format!("{fixture}.wasm"));
    }
    install(&plugins, "wrong_version", "wrong_version.wasm");
    std::fs::write(plugins.join("noise.wasm"), rand_bytes(4096)).unwrap();

    let mut names: Vec<&str> = HOSTILE.iter().map(|h| h.1).collect();
    names.push("mining");
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-hostile\"\n\n[rules]\ndir = \"{}\"\n\n\
         [plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\nmax_memory_bytes = 33554432\n\
         quarantine_after_failures = 2\nquarantine_initial_secs = 1\nquarantine_max_secs = 2\n\n{}",
        broker.url(),
        rules_without_mining(dir.path()).display(),
        detectors(&names)
    );
    let daemon = Daemon::start(dir.path(), &config);

    // Several rounds, so each hostile plugin fails, is quarantined and is called again.
    let port = broker.port;
    for round in 0..4 {
        let mut messages = flat_load("rig-1", round * 50, 50);
        messages.extend(tamper_messages(&format!("tampered-{round}"), 3));
        publish_all(port, messages).await;
        wait_until_processed(&daemon).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }

    let log = daemon.log();
    for hidden in ['\r', '\u{1b}', '\u{2028}', '\u{202e}'] {
        assert!(
            !log.contains(hidden),
            "log contains {hidden:?} from a plugin:\n{log}"
        );
    }
    for expected in [
        "fuel budget of",
        "memory limit of 33554432 bytes reached",
        "wasm stack of 524288 bytes overflowed",
        "is over the limit of 1048576 bytes",
        "always-trap fails on every call",
        "declares interface gridwatch:detector/detector@4.0.0",
        "noise.wasm' is not a WebAssembly component",
        "plugin quarantined after repeated failures",
    ] {
        assert!(log.contains(expected), "log lacks '{expected}':\n{log}");
    }

    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    for (_, plugin, cause) in HOSTILE {
        assert!(
            failures(&text, plugin, cause) >= 2.0,
            "{plugin} has fewer than 2 '{cause}' failures:\n{text}"
        );
        let quarantines = format!("gridwatch_plugin_quarantines_total{{plugin=\"{plugin}\"}}");
        assert!(
            metric(&text, &quarantines).unwrap_or(0.0) >= 1.0,
            "{plugin} was never quarantined:\n{text}"
        );
    }
    assert_eq!(
        metric(&text, "gridwatch_plugins_loaded"),
        Some(6.0),
        "{text}"
    );

    let stored = alerts(&daemon).await;
    let mining: Vec<_> = stored.iter().filter(|a| a["kind"] == "mining").collect();
    assert_eq!(mining.len(), 1, "mining alerts: {mining:?}");
    assert_eq!(mining[0]["meter"], "rig-1");
    assert_eq!(mining[0]["source"]["rule"], "plugin:mining@1.0.0");
    let tampered = stored.iter().filter(|a| a["kind"] == "tamper").count();
    assert_eq!(tampered, 4, "one tamper alert per round: {stored:?}");

    let cached = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
    // Six loaded plugins and wrong_version, which compiles before its interface is checked.
    assert_eq!(cached, 7, "one compiled file per component that compiled");

    // The repaired release of always-trap replaces the failing one and gets readings again.
    install(&plugins, "always_trap_fixed", "always_trap.wasm");
    daemon.wait_for_log("version=1.0.1", Duration::from_secs(20));
    let quarantined = "gridwatch_plugin_quarantined{plugin=\"always-trap\"}";
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    assert_eq!(metric(&text, quarantined), Some(0.0), "{text}");
    let traps_before = failures(&text, "always-trap", "trap");
    let readings_metric = "gridwatch_plugin_readings_total{plugin=\"always-trap\"}";
    let readings_before = metric(&text, readings_metric).unwrap_or(0.0);

    publish_all(port, flat_load("rig-1", 200, 20)).await;
    wait_until_processed(&daemon).await;
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    assert_eq!(
        failures(&text, "always-trap", "trap"),
        traps_before,
        "{text}"
    );
    assert_eq!(
        metric(&text, readings_metric).unwrap_or(0.0),
        readings_before + 20.0,
        "{text}"
    );
}

fn rand_bytes(len: usize) -> Vec<u8> {
    // A fixed xorshift sequence: random-looking bytes that are the same on every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Readings for `meters` meters, `per_meter` each, in time order, half-hourly.
fn stream(meters: usize, from: i64, per_meter: i64) -> Vec<(String, Vec<u8>)> {
    let start_ms = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    let mut messages = Vec::new();
    for step in from..from + per_meter {
        for m in 0..meters {
            let ts = start_ms + step * 1_800_000;
            let payload = format!(
                r#"{{"ts":{ts},"energy_import_kwh":{:.2}}}"#,
                1_000.0 + step as f64 * 0.3
            );
            messages.push((format!("meters/west/c{m}/telemetry"), payload.into_bytes()));
        }
    }
    messages
}

async fn counts(daemon: &Daemon) -> HashMap<String, (i64, String)> {
    alerts(daemon)
        .await
        .iter()
        .filter(|a| a["kind"] == "count")
        .map(|a| {
            let evidence = &a["evidence"];
            let count = evidence["count"].as_i64().expect("count evidence");
            let version = evidence["version"].as_str().expect("version evidence");
            (
                a["meter"].as_str().unwrap().to_owned(),
                (count, version.to_owned()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_plugin_keeps_state() {
    const METERS: usize = 20;
    const PER_METER: i64 = 120;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(&plugins, "counter_v1", "counter.wasm");
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-swap\"\n\n[rules]\ndir = \"{}\"\n\n\
         [plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\nreload_debounce_ms = 50\n\n{}",
        broker.url(),
        repo_root().join("rules").display(),
        detectors(&["counter"])
    );
    let mut daemon = Daemon::start(dir.path(), &config);

    // Publish in slices while the plugin file is replaced after the first third. The rest is
    // published once the new version has loaded, so it counts every meter's last readings even
    // when the daemon has caught up with the first slices before the reload.
    let port = broker.port;
    let all = stream(METERS, 0, PER_METER);
    let slices: Vec<_> = all.chunks(all.len() / 12).map(<[_]>::to_vec).collect();
    let mut swapped = false;
    for (i, slice) in slices.into_iter().enumerate() {
        publish_all(port, slice).await;
        if i == 4 && !swapped {
            install(&plugins, "counter_v2", "counter.wasm");
            daemon.wait_for_log("version=2.0.0", Duration::from_secs(20));
            swapped = true;
        }
    }
    wait_until_processed(&daemon).await;

    let log = daemon.log();
    assert!(!log.contains("plugin call failed"), "{log}");
    assert_eq!(
        log.matches("gridwatch started").count(),
        1,
        "the daemon restarted"
    );
    let counted = counts(&daemon).await;
    assert_eq!(counted.len(), METERS, "{counted:?}");
    for (meter, (count, version)) in &counted {
        assert_eq!(*count, PER_METER, "readings counted for {meter}");
        assert_eq!(version, "2.0.0", "version that counted last for {meter}");
    }

    // The counts survive a restart: one more reading per meter continues from them.
    assert!(daemon.stop_with("TERM", Duration::from_secs(15)).is_some());
    let daemon = Daemon::start(dir.path(), &config_text(dir.path()));
    publish_all(port, stream(METERS, PER_METER, 1)).await;
    wait_until_processed(&daemon).await;
    let counted = counts(&daemon).await;
    for (meter, (count, _)) in &counted {
        assert_eq!(
            *count,
            PER_METER + 1,
            "readings counted for {meter} after restart"
        );
    }
}

/// Returns the configuration a [`Daemon`] wrote, without the sections it adds itself.
fn config_text(dir: &Path) -> String {
    let full = std::fs::read_to_string(dir.join("gridwatch.toml")).unwrap();
    full.split("\n[http]").next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_read_regional_scores() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(&plugins, "scorer", "scorer.wasm");
    let rules = dir.path().join("rules/common");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("scored.rhai"),
        "fn on_reading(reading, meter) {\n\
         \x20   if \"scorer\" in meter.scores && meter.scores[\"scorer\"] >= 0.8 {\n\
         \x20       alert(\"scored\", \"high\", `score ${meter.scores[\"scorer\"]}`, #{});\n\
         \x20   }\n}\n",
    )
    .unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-scores\"\n\n[rules]\ndir = \"rules\"\n\n\
         [plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n\n\
         [plugins.detectors.scorer]\nregions = [\"north\", \"south\"]\nsettings = {{ score = 0.25 }}\n\
         region_settings.north = {{ score = 0.9 }}\n",
        broker.url()
    );
    let daemon = Daemon::start(dir.path(), &config);

    let mut messages = Vec::new();
    for (region, meter) in [("north", "n1"), ("south", "s1"), ("east", "e1")] {
        for h in 0..3i64 {
            let ts = 1_750_000_000_000i64 + h * 3_600_000;
            let payload = format!(r#"{{"ts":{ts},"energy_import_kwh":{}}}"#, 10 + h);
            messages.push((
                format!("meters/{region}/{meter}/telemetry"),
                payload.into_bytes(),
            ));
        }
    }
    publish_all(broker.port, messages).await;
    wait_until_processed(&daemon).await;

    let stored = alerts(&daemon).await;
    let scored: Vec<_> = stored.iter().filter(|a| a["kind"] == "scored").collect();
    assert_eq!(scored.len(), 1, "{stored:?}");
    assert_eq!(scored[0]["meter"], "n1");
    assert_eq!(scored[0]["message"], "score 0.9");
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let readings = metric(&text, "gridwatch_plugin_readings_total{plugin=\"scorer\"}");
    assert_eq!(readings, Some(6.0), "east is not enabled: {text}");
    let seconds = metric(
        &text,
        "gridwatch_plugin_call_seconds_total{plugin=\"scorer\"}",
    );
    assert!(seconds.is_some_and(|s| s > 0.0), "call time: {text}");
}

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

/// Runs `gridwatch plugin test` on `wasm` with the mining fixture readings and `extra`
/// arguments, returning success, stdout and stderr.
fn plugin_test(wasm: &Path, extra: &[&str]) -> (bool, String, String) {
    let input = repo_root().join("plugins/mining/tests/readings.jsonl");
    let mut args = vec![
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    gridwatch(&args)
}

#[test]
fn tools_inspect_and_test_mining() {
    let wasm_path = plugin_wasm("mining");
    let wasm = wasm_path.to_str().unwrap();
    let (ok, out, err) = gridwatch(&["plugin", "inspect", wasm]);
    assert!(ok, "{err}");
    for expected in [
        "name:        mining",
        "version:     1.0.0",
        "interface:   gridwatch:detector/detector@3.0.0",
        "kinds:       mining",
        "min_base_kw (number, default 2.0)",
    ] {
        assert!(out.contains(expected), "inspect lacks '{expected}':\n{out}");
    }

    let expect = repo_root().join("plugins/mining/tests/findings.jsonl");
    let (ok, out, err) = plugin_test(&wasm_path, &["--expect", expect.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 68 findings match"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("findings.jsonl");
    let text = std::fs::read_to_string(&expect).unwrap();
    std::fs::write(&wrong, text.replacen("\"medium\"", "\"critical\"", 1)).unwrap();
    let (ok, out, _) = plugin_test(&wasm_path, &["--expect", wrong.to_str().unwrap()]);
    assert!(!ok, "a changed expectation must fail:\n{out}");
    assert!(out.contains("-{\"kind\":\"mining\""), "{out}");
    assert!(out.contains("\"severity\":\"critical\""), "{out}");
    assert!(out.contains("+{\"kind\":\"mining\""), "{out}");

    // A mistake in the expected file is reported as one, with its line, not as a difference.
    for (line, problem) in [
        (
            "{\"score\": \"high\"}",
            "field 'score' is \"high\", expected a number from 0 to 1",
        ),
        (
            "{\"knd\": \"mining\"}",
            "unknown field 'knd', expected one of region, meter",
        ),
        (
            "{\"severity\": \"urgent\"}",
            "field 'severity' is \"urgent\", expected one of info",
        ),
        ("[]", "expected a JSON object with any of region"),
    ] {
        std::fs::write(&wrong, format!("# a comment\n{line}\n")).unwrap();
        let (ok, out, err) = plugin_test(&wasm_path, &["--expect", wrong.to_str().unwrap()]);
        assert!(!ok, "{out}");
        assert!(
            err.contains(&format!("findings.jsonl:2: {problem}")),
            "{err}"
        );
    }

    // Three readings are too few for a finding: standard output stays empty, and standard
    // error says so.
    let input = repo_root().join("plugins/mining/tests/readings.jsonl");
    let text = std::fs::read_to_string(&input).unwrap();
    let first = dir.path().join("first.jsonl");
    let lines: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&first, lines.join("\n")).unwrap();
    let (ok, out, err) = gridwatch(&["plugin", "test", wasm, "--input", first.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("no findings from the 3 messages of"), "{err}");
}

#[test]
fn invalid_findings_are_dropped() {
    let wasm = plugin_wasm("bad_findings");
    let (ok, out, err) = plugin_test(&wasm, &[]);
    assert!(ok, "{out}{err}");
    // Every call returns the same seven findings about its first reading, so each call keeps
    // one.
    let findings: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(!findings.is_empty(), "{err}");
    for finding in &findings {
        assert_eq!(finding["kind"], "odd", "{finding}");
        assert_eq!(finding["message"], "reading 0, kind 0, score 0.5, name 1");
        assert_eq!(finding["evidence"]["count"], 1, "{finding}");
    }
    // The log names the first cause of each call: the reading outside the call.
    assert!(err.contains("dropped=6"), "{err}");
    assert!(err.contains("is out of range; expected below"), "{err}");
    assert!(err.contains("the readings in the call"), "{err}");
    assert_eq!(
        err.matches("plugin findings dropped").count(),
        findings.len(),
        "one warning per call: {err}"
    );
}

#[test]
fn output_limit_counts_each_use_of_a_name() {
    let wasm = plugin_wasm("repeated_names");
    let (ok, out, err) = plugin_test(&wasm, &[]);
    assert!(!ok, "{out}");
    // Each of the 20 findings counts 64 bytes plus 100,000 for its kind, and the listed name
    // counts 100,000 plus 8 once.
    let expected = "output of 2101288 bytes in 20 findings is over the limit of 1048576 bytes";
    assert!(err.contains(expected), "{err}");
}

#[test]
fn output_past_copy_limit_fails_as_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gridwatch.toml");
    // A copy limit of 2 × 256 KiB + 1 MiB, below the 2 MB of messages the plugin returns.
    std::fs::write(&config, "[plugins]\nmax_output_bytes = 262144\n").unwrap();
    let (ok, out, err) = plugin_test(
        &plugin_wasm("huge_output"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    let expected = "failed (output): the plugin passed more than 1572864 bytes to the host in \
                    one transfer";
    assert!(err.contains(expected), "{err}");
}

#[test]
fn findings_columns_that_disagree_fail_the_call() {
    let wasm = plugin_wasm("torn_columns");
    let (ok, out, err) = plugin_test(&wasm, &[]);
    assert!(!ok, "{out}");
    let expected = "findings column severity has 1 elements; expected 2, the length of reading";
    assert!(err.contains(expected), "{err}");
    assert!(err.contains("invalid_output"), "{err}");
}

#[test]
fn replay_with_failing_plugin_exits_with_error() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin_wasm("always_trap"), plugins.join("always_trap.wasm")).unwrap();
    let config = dir.path().join("gridwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\ncache_dir = \"{}\"\n\n\
             [plugins.detectors.always-trap]\nregions = [\"*\"]\n",
            plugins.display(),
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let input = dir.path().join("messages.jsonl");
    let lines: String = (0..3)
        .map(|hour| {
            let ts_ms = 1_740_960_000_000_i64 + hour * 3_600_000;
            let kwh = 1_000 + hour;
            format!(
                "{{\"topic\":\"meters/north/m/telemetry\",\"payload\":{{\"ts\":{ts_ms},\
                 \"energy_import_kwh\":{kwh}}}}}\n"
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let (ok, out, err) = gridwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--alerts",
        alerts.to_str().unwrap(),
        "--rules",
        repo_root().join("rules").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        !ok,
        "a replay whose plugin failed must not exit 0: {out}{err}"
    );
    assert!(
        out.contains("replayed 3 messages: 3 readings accepted"),
        "{out}"
    );
    assert!(
        err.contains("plugin calls failed, so their findings are missing from the alerts"),
        "{err}"
    );
    assert!(alerts.exists(), "the alerts are written all the same");
}

#[test]
fn inspect_and_check_name_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.wasm");
    std::fs::write(&noise, rand_bytes(64)).unwrap();
    let (ok, _, err) = gridwatch(&["plugin", "inspect", noise.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is not a WebAssembly component"), "{err}");

    let wrong = plugin_wasm("wrong_version");
    let (ok, _, err) = gridwatch(&["plugin", "inspect", wrong.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("gridwatch:detector/detector@4.0.0"), "{err}");

    // `gridwatch check` loads the plugins folder and reports the same problems.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wrong, plugins.join("wrong_version.wasm")).unwrap();
    std::fs::copy(&noise, plugins.join("noise.wasm")).unwrap();
    let config = dir.path().join("gridwatch.toml");
    let rules = repo_root().join("rules");
    std::fs::write(
        &config,
        format!(
            "[rules]\ndir = \"{}\"\n\n[plugins]\ndir = \"plugins\"\n",
            rules.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = gridwatch(&["check", "--config", config.to_str().unwrap()]);
    assert!(!ok, "check must fail on bad plugins");
    assert!(err.contains("2 plugin problem(s)"), "{err}");
}

#[test]
fn plugin_test_reports_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gridwatch.toml");
    std::fs::write(
        &config,
        "[plugins]\nfuel_per_call = 1000000000000000\ncall_timeout_ms = 100\n",
    )
    .unwrap();
    let wasm = plugin_wasm("endless_loop");
    let (ok, _, err) = plugin_test(&wasm, &["--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("failed (deadline): call ran past its deadline of 100 ms"),
        "{err}"
    );
}

#[test]
fn detector_fuel_replaces_engine_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gridwatch.toml");
    std::fs::write(
        &config,
        "[plugins.detectors.mining]\nfuel_per_call = 1000\nfuel_per_reading = 10\n",
    )
    .unwrap();
    let wasm = plugin_wasm("mining");
    let (ok, _, err) = plugin_test(&wasm, &["--config", config.to_str().unwrap()]);
    assert!(!ok, "1,000 fuel and 10 per reading cannot run the detector");
    assert!(err.contains("failed (fuel): fuel budget of "), "{err}");

    // The engine's default fuel runs the same input.
    let (ok, out, err) = plugin_test(&wasm, &[]);
    assert!(ok, "{out}{err}");
}

#[test]
fn python_detector_finds_flat_load() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("py-flat-load.wasm");
    let plugin = repo_root().join("plugins/python-flat-load");
    let build = Command::new("bash")
        .arg(plugin.join("build.sh"))
        .arg(&wasm)
        .output()
        .expect("failed to run build.sh");
    assert!(
        build.status.success(),
        "componentize-py build failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );

    let (ok, out, err) = gridwatch(&["plugin", "inspect", wasm.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("name:        py-flat-load"), "{out}");
    assert!(
        out.contains("interface:   gridwatch:detector/detector@3.0.0"),
        "{out}"
    );

    let input = plugin.join("tests/readings.jsonl");
    let expect = plugin.join("tests/findings.jsonl");
    let (ok, out, err) = gridwatch(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--expect",
        expect.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 49 findings match"), "{out}");
}

#[test]
fn sandbox_hides_files_env_clock_network() {
    let (ok, out, err) = plugin_test(&plugin_wasm("snoop"), &[]);
    assert!(ok, "{err}");
    let finding: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("one finding")).unwrap();
    let evidence = &finding["evidence"];
    assert_eq!(evidence["env_vars"], 0, "{evidence}");
    assert_eq!(evidence["args"], 0, "{evidence}");
    assert_eq!(evidence["root_listed"], false, "{evidence}");
    assert_eq!(evidence["passwd_read"], false, "{evidence}");
    assert_eq!(evidence["wall_clock_ms"], 0, "{evidence}");
    assert_eq!(evidence["tcp_connected"], false, "{evidence}");
}

#[test]
fn oversized_state_fails_call() {
    let (ok, _, err) = plugin_test(&plugin_wasm("state_hog"), &[]);
    assert!(!ok, "a 128 KiB state value must fail the call");
    assert!(
        err.contains(
            "failed (state): state value of 131072 bytes is over the limit of 65536 bytes"
        ),
        "{err}"
    );
}

/// Runs the plugin `name` on two readings of one meter, one reading per call, and returns the
/// findings and the metrics' text. The meter's `7d` window scores 0.5 in the mining plugin.
fn two_calls_of(name: &str) -> (gridwatch::plugins::BatchFindings, String) {
    use std::sync::Arc;

    use gridwatch::config::PluginsConfig;
    use gridwatch::decode::Reading;
    use gridwatch::metrics::Metrics;
    use gridwatch::plugins::{MeterRef, NoHistory, PluginBank, PluginHost, PluginStates};
    use gridwatch::state::{Interval, IntervalKind, MeterSnapshot, WindowStats};

    let config = PluginsConfig {
        cache_dir: std::path::PathBuf::new(),
        max_readings_per_call: 1,
        ..PluginsConfig::default()
    };
    // 90 of the 120 hours the mining detector needs: coverage, and so the score, is 0.5.
    let stats = WindowStats {
        hours: 168,
        hours_with_data: 90.0,
        energy_kwh: 600.0,
        mean_kw: 6.8,
        peak_kw: 7.5,
        base_kw: 6.5,
        load_factor: 0.9,
        night_day_ratio: 0.95,
        cv: 0.1,
    };
    let readings: Vec<(Reading, MeterSnapshot)> = [1_000, 2_000]
        .into_iter()
        .map(|ts_ms| {
            let reading = Reading::new("north", "m-1", ts_ms, 5_000.0);
            let snapshot = MeterSnapshot {
                region: "north".into(),
                meter_id: "m-1".into(),
                register_kwh: 5_000.0,
                interval: Interval {
                    kind: IntervalKind::Normal,
                    start_ms: ts_ms - 1_000,
                    end_ms: ts_ms,
                    energy_kwh: 1.0,
                },
                windows: vec![("7d".into(), stats)],
                register_reversals: 0,
                readings: 300,
                scores: Vec::new(),
            };
            (reading, snapshot)
        })
        .collect();
    let items = MeterRef::list(&readings);

    let metrics = Arc::new(Metrics::new());
    let host = PluginHost::single(&config, metrics.clone(), &plugin_wasm(name)).unwrap();
    let mut bank = PluginBank::new(
        Arc::new(host),
        Arc::new(PluginStates::in_memory()),
        Arc::new(NoHistory),
        metrics.clone(),
    );
    let found = bank.run(&items);
    (found, metrics.encode())
}

#[test]
fn dropped_findings_and_invalid_output_are_counted() {
    let (found, metrics) = two_calls_of("bad_findings");
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    assert_eq!(found.scores.len(), 2, "one valid finding per call");
    let dropped = "gridwatch_plugin_findings_dropped_total{plugin=\"bad-findings\"} 12";
    assert!(metrics.contains(dropped), "{metrics}");
    assert!(!metrics.contains("invalid_finding"), "{metrics}");

    let (found, metrics) = two_calls_of("torn_columns");
    assert_eq!(found.failures.len(), 2, "{:?}", found.failures);
    assert_eq!(found.failures[0].1.cause, "invalid_output");
    let failed =
        "gridwatch_plugin_failures_total{plugin=\"torn-columns\",cause=\"invalid_output\"} 2";
    assert!(metrics.contains(failed), "{metrics}");
}

#[test]
fn later_call_sees_earlier_call_score() {
    let (found, _) = two_calls_of("mining");
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    // The second call gets 0.5 as the meter's last score, so an unchanged score is not reported
    // again.
    assert_eq!(found.scores.len(), 1, "{:?}", found.scores);
    assert_eq!(found.scores[0].2, 0.5);
}
