use std::path::{Path, PathBuf};

use serde_json::json;

use super::backtest::Change;
use super::replay::{ReplayArgs, run as replay};
use super::scenario::{Label, ScenarioArgs, run as scenario};
use super::score::score;
use crate::alerts::{Alert, AlertSource, AlertStatus, Severity};
use crate::publish::dataset::DatasetKind;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn scenario_args(out: &Path, seed: u64) -> ScenarioArgs {
    ScenarioArgs {
        dataset: DatasetKind::EemeterUk,
        data_dir: Some(repo_root().join("datasets/eemeter-uk")),
        out: out.to_owned(),
        seed,
        region: "eval".into(),
        mining_share: 0.4,
        theft_share: 0.3,
        tamper_share: 0.2,
        benign_share: 0.1,
        max_meters: None,
    }
}

#[test]
fn scenario_is_reproducible_from_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let first = scenario(&scenario_args(&dir.path().join("a"), 3)).unwrap();
    let again = scenario(&scenario_args(&dir.path().join("b"), 3)).unwrap();
    assert_eq!(first, again);
    let read = |name: &str| std::fs::read(dir.path().join(name).join("messages.jsonl")).unwrap();
    assert_eq!(read("a"), read("b"));

    let other = scenario(&scenario_args(&dir.path().join("c"), 4)).unwrap();
    assert_ne!(first, other, "another seed gives another scenario");
}

#[test]
fn scenario_onsets_inside_meter_spans() {
    let dir = tempfile::tempdir().unwrap();
    let labels = scenario(&scenario_args(dir.path(), 11)).unwrap();
    assert_eq!(labels.len(), 3);
    for label in &labels {
        if label.label == "clean" {
            assert_eq!(label.onset_ms, None);
            continue;
        }
        let onset = label.onset_ms.unwrap();
        assert!(
            (label.first_ms..label.last_ms).contains(&onset),
            "{label:?}"
        );
    }
    let lines = std::fs::read_to_string(dir.path().join("labels.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
}

#[test]
fn scenario_rejects_shares_above_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = scenario_args(dir.path(), 1);
    args.theft_share = 0.9;
    let error = scenario(&args).unwrap_err().to_string();
    assert!(error.contains("sum to at most 1"), "{error}");
}

fn label(meter: &str, label: &str, onset_ms: Option<i64>, rigs: u64) -> Label {
    let expected_kind = matches!(label, "mining" | "theft" | "tamper").then(|| label.to_owned());
    Label {
        region: "eval".into(),
        meter: meter.into(),
        label: label.into(),
        variant: String::new(),
        expected_kind,
        onset_ms,
        first_ms: 0,
        last_ms: 7 * 86_400_000,
        params: json!({ "rigs": rigs }),
    }
}

fn alert(meter: &str, kind: &str, first_seen_ms: i64, severity: Severity) -> Alert {
    Alert {
        id: ulid::Ulid::new(),
        kind: kind.into(),
        severity,
        meter: meter.into(),
        region: "eval".into(),
        message: String::new(),
        evidence: json!({}),
        source: AlertSource {
            rule: "common/mining.rhai".into(),
            content_hash: String::new(),
        },
        first_seen_ms,
        last_seen_ms: first_seen_ms,
        count: 1,
        status: AlertStatus::Open,
        actions: Vec::new(),
    }
}

#[test]
fn score_counts_meters_onsets_and_false_alerts() {
    let hour = 3_600_000;
    let labels = [
        label("m1", "mining", Some(10 * hour), 1),
        label("m2", "mining", Some(10 * hour), 4),
        label("m3", "mining", Some(10 * hour), 2),
        label("c1", "clean", None, 0),
        label("c2", "clean", None, 0),
    ];
    let alerts = [
        // Found 12 h after onset.
        alert("m1", "mining", 22 * hour, Severity::Medium),
        // Found 36 h after onset.
        alert("m2", "mining", 46 * hour, Severity::High),
        // Fired before the onset: false.
        alert("m3", "mining", 5 * hour, Severity::Medium),
        // A false mining alert on a clean meter.
        alert("c1", "mining", 30 * hour, Severity::Low),
    ];
    let report = score(&labels, &alerts);
    let mining = &report.kinds["mining"];
    assert_eq!(mining.positives, 3);
    assert_eq!(mining.found, 2);
    assert_eq!(mining.false_meters, 2, "m3 before its onset and c1");
    assert!((mining.precision - 0.5).abs() < 1e-9);
    assert!((mining.recall - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(mining.median_hours_to_detect, Some(36.0));
    assert_eq!(mining.recall_by_group["1 rig"], (1, 1));
    assert_eq!(mining.recall_by_group["2+ rigs"], (2, 1));
    assert!(
        (mining.false_positive_rate - 0.5).abs() < 1e-9,
        "c1 of c1, c2"
    );
    // Ranked: m2 (0.75), then m1 and m3 tied (0.5), then c1 (0.25).
    // Precision at m2 is 1, at the tie 3/3, so AP = (1 + 2 * 1) / 3.
    assert!((mining.pr_auc - 1.0).abs() < 1e-9, "{}", mining.pr_auc);
    // One alert on two clean meters of one week each.
    assert!((report.false_alerts_per_1000_meter_weeks_clean - 500.0).abs() < 1e-9);
}

#[test]
fn replay_runs_the_rules_and_writes_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("messages.jsonl");
    let start_ms: i64 = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    let lines: Vec<String> = (0..170)
        .map(|h| {
            let payload = json!({
                "ts": start_ms + h * 3_600_000,
                "energy_import_kwh": 5_000.0 + h as f64 * 6.5,
            });
            json!({ "topic": "meters/south/rig-1/telemetry", "payload": payload }).to_string()
        })
        .chain(std::iter::once(
            json!({ "topic": "meters/south", "payload": {} }).to_string(),
        ))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let args = ReplayArgs {
        input,
        alerts: dir.path().join("alerts.jsonl"),
        config: None,
        rules: Some(repo_root().join("rules")),
        store: None,
        candidate_rules: None,
        candidate_alerts: None,
        diff: None,
        quiet: true,
    };
    let summary = replay(&args).unwrap();
    assert_eq!(summary.backtest, None);
    assert_eq!(summary.messages, 171);
    assert_eq!(summary.accepted, 170);
    assert_eq!(summary.rejected, 1);
    let text = std::fs::read_to_string(&args.alerts).unwrap();
    let alerts: Vec<Alert> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{text}");
    assert_eq!(
        (alerts[0].meter.as_str(), alerts[0].kind.as_str()),
        ("rig-1", "mining")
    );
}

/// Copies the folder `from` and everything below it to `to`.
fn copy_dir(from: &Path, to: &Path) {
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

/// Returns replay input lines of a flat load of `kw` on `meter` for 170 hours.
fn flat_lines(meter: &str, kw: f64) -> Vec<String> {
    let start_ms: i64 = 1_750_000_000_000 / 3_600_000 * 3_600_000;
    (0..170)
        .map(|h| {
            let payload = json!({
                "ts": start_ms + h * 3_600_000,
                "energy_import_kwh": 5_000.0 + h as f64 * kw,
            });
            json!({ "topic": format!("meters/south/{meter}/telemetry"), "payload": payload })
                .to_string()
        })
        .collect()
}

#[test]
fn replay_backtests_candidate_rules() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("messages.jsonl");
    let lines: Vec<String> = flat_lines("rig-1", 6.5)
        .into_iter()
        .chain(flat_lines("rig-2", 12.0))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    // The candidate raises the base-load threshold above rig-1's 6.5 kW, moves "high" above
    // rig-2's 12 kW and adds a rule that fires on every reading.
    let candidate = dir.path().join("candidate");
    copy_dir(&repo_root().join("rules"), &candidate);
    let params_path = candidate.join("common/params.toml");
    let params = std::fs::read_to_string(&params_path).unwrap();
    let params = params
        .replace("mining_min_base_kw = 2.0", "mining_min_base_kw = 8.0")
        .replace("mining_high_mean_kw = 10.0", "mining_high_mean_kw = 20.0");
    std::fs::write(&params_path, params).unwrap();
    let probe =
        "fn on_reading(reading, meter) { alert(\"probe\", \"info\", \"every reading\"); }\n";
    std::fs::write(candidate.join("common/probe.rhai"), probe).unwrap();

    let args = ReplayArgs {
        input,
        alerts: dir.path().join("alerts.jsonl"),
        config: None,
        rules: Some(repo_root().join("rules")),
        store: None,
        candidate_rules: Some(candidate),
        candidate_alerts: Some(dir.path().join("candidate.jsonl")),
        diff: Some(dir.path().join("diff.jsonl")),
        quiet: true,
    };
    let summary = replay(&args).unwrap();
    let backtest = summary.backtest.expect("a backtest");
    assert_eq!(backtest.current_alerts, 2);
    assert_eq!(backtest.candidate_alerts, 3);
    let changes: Vec<(Change, &str, &str)> = backtest
        .differences
        .iter()
        .map(|d| (d.change, d.meter.as_str(), d.kind.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (Change::Added, "rig-1", "probe"),
            (Change::Added, "rig-2", "probe"),
            (Change::Removed, "rig-1", "mining"),
            (Change::Changed, "rig-2", "mining"),
        ]
    );
    let changed = &backtest.differences[3];
    assert_eq!(changed.current.as_ref().unwrap().severity, Severity::High);
    assert_eq!(
        changed.candidate.as_ref().unwrap().severity,
        Severity::Medium
    );

    let diff = std::fs::read_to_string(dir.path().join("diff.jsonl")).unwrap();
    assert_eq!(diff.lines().count(), 4, "{diff}");
    assert!(
        diff.lines().next().unwrap().contains(r#""change":"added""#),
        "{diff}"
    );
    let candidate_alerts = std::fs::read_to_string(dir.path().join("candidate.jsonl")).unwrap();
    assert_eq!(candidate_alerts.lines().count(), 3, "{candidate_alerts}");
}

#[test]
fn replay_rejects_broken_candidate_and_counts_failures() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("messages.jsonl");
    std::fs::write(&input, flat_lines("rig-1", 6.5).join("\n") + "\n").unwrap();
    let args = |candidate: &Path| ReplayArgs {
        input: input.clone(),
        alerts: dir.path().join("alerts.jsonl"),
        config: None,
        rules: Some(repo_root().join("rules")),
        store: None,
        candidate_rules: Some(candidate.to_owned()),
        candidate_alerts: None,
        diff: None,
        quiet: true,
    };

    // A syntax error is reported before anything is replayed, naming the candidate folder.
    let broken = dir.path().join("broken");
    copy_dir(&repo_root().join("rules"), &broken);
    std::fs::write(
        broken.join("common/bad.rhai"),
        "fn on_reading(reading, meter) {\n",
    )
    .unwrap();
    let error = replay(&args(&broken)).unwrap_err().to_string();
    assert!(error.contains("invalid candidate rules"), "{error}");
    assert!(error.contains("common/bad.rhai"), "{error}");
    assert!(
        !dir.path().join("alerts.jsonl").exists(),
        "replayed before the check"
    );

    // A rule that fails on every reading is counted in the comparison.
    let failing = dir.path().join("failing");
    copy_dir(&repo_root().join("rules"), &failing);
    std::fs::write(
        failing.join("common/spin.rhai"),
        "fn on_reading(reading, meter) { loop { } }\n",
    )
    .unwrap();
    let backtest = replay(&args(&failing)).unwrap().backtest.unwrap();
    assert_eq!(backtest.current_rule_errors, 0);
    assert_eq!(backtest.candidate_rule_errors, 170);
    assert!(backtest.to_string().contains("candidate 170"), "{backtest}");
}

#[test]
fn score_counts_one_kind_as_another() {
    let dir = tempfile::tempdir().unwrap();
    let labels = [
        label("t1", "theft", Some(3_600_000), 0),
        label("c1", "clean", None, 0),
    ];
    let alerts = [alert("t1", "abnormal_load", 7_200_000, Severity::High)];
    let write = |name: &str, lines: Vec<String>| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let args = |count_as: Vec<(String, String)>| super::score::ScoreArgs {
        labels: write(
            "labels.jsonl",
            labels
                .iter()
                .map(|l| serde_json::to_string(l).unwrap())
                .collect(),
        ),
        alerts: write(
            "alerts.jsonl",
            alerts
                .iter()
                .map(|a| serde_json::to_string(a).unwrap())
                .collect(),
        ),
        count_as,
        json: true,
    };

    let plain = super::score::run(&args(Vec::new()), &mut Vec::new()).unwrap();
    assert_eq!(plain.kinds["theft"].recall, 0.0);
    let mapped = vec![("abnormal_load".to_owned(), "theft".to_owned())];
    let counted = super::score::run(&args(mapped), &mut Vec::new()).unwrap();
    assert_eq!(counted.kinds["theft"].recall, 1.0);
    assert_eq!(counted.kinds["theft"].precision, 1.0);
}
