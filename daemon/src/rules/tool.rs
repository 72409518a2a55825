//! `gridwatch rules test`: unit tests for rules, in the spirit of Prometheus rule tests.
//!
//! A test file is TOML named `*.test.toml`, kept in the rules folder beside the rules it tests
//! (the rule loader reads only `*.rhai` and `params.toml`). Each `[[case]]` feeds readings
//! through the real pipeline (decoding, meter state, the whole rule set of the folder, the
//! alert store) and compares the alerts open at the end with `expect`:
//!
//! ```toml
//! [[case]]
//! name = "two rigs in the south raise one medium alert"
//! region = "south"
//!
//! # Hourly readings of a constant load: the register grows by load_kw × step.
//! [[case.series]]
//! meter = "rig-1"
//! start = "2025-06-01T00:00:00Z"
//! step_minutes = 60
//! count = 170
//! start_kwh = 5000.0
//! load_kw = 6.5
//!
//! # Single readings, with any field of the telemetry schema.
//! [[case.readings]]
//! meter = "m-2"
//! ts = "2025-06-01T00:00:00Z"
//! energy_import_kwh = 100.0
//! events = ["cover_open"]
//!
//! [[case.expect]]
//! meter = "rig-1"
//! kind = "mining"
//! severity = "medium"
//! message = "flat load"        # optional: a substring of the alert's message
//! ```
//!
//! Alerts are matched exactly: every open alert must be expected and every expectation met. A
//! case without `expect` expects no alert.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::alerts::Alert;
use crate::config::Config;
use crate::decode::Decoders;
use crate::ingest::Message;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::rules::RuleEngine;
use crate::state::StateModel;
use crate::store::Store;

/// Suffix of rule test files.
const TEST_SUFFIX: &str = ".test.toml";

/// Command-line options of `gridwatch rules`.
#[derive(Debug, Clone, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum RulesCommand {
    /// Runs rule test files (`*.test.toml`) against the rules folder and prints a diff of the
    /// alerts for each failing case; exits with 1 when a case fails.
    Test {
        /// Test files; every `*.test.toml` under the rules folder when none are given.
        files: Vec<PathBuf>,
        /// Configuration for the rules folder, state windows and decoding bounds; built-in
        /// defaults when absent.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Rules folder, in place of the configuration's `rules.dir`.
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
    },
}

/// One test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    case: Vec<Case>,
}

/// One case: readings in, alerts expected out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    readings: Vec<Map<String, Value>>,
    #[serde(default)]
    expect: Vec<Expected>,
}

fn default_region() -> String {
    "default".into()
}

/// Readings of a constant load at a fixed step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Series {
    meter: String,
    start: String,
    #[serde(default = "default_step")]
    step_minutes: u32,
    count: u32,
    #[serde(default)]
    start_kwh: f64,
    load_kw: f64,
    /// Other schema fields sent with every reading, such as `voltage_v`.
    #[serde(default)]
    fields: Map<String, Value>,
}

fn default_step() -> u32 {
    60
}

/// An alert that must be open at the end of the case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    meter: String,
    kind: String,
    severity: String,
    #[serde(default)]
    message: Option<String>,
}

/// Errors of `gridwatch rules test`; a failing case is a result, not an error.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The rules folder did not load.
    #[error(transparent)]
    Rules(#[from] super::RuleSetError),
    /// A test file is invalid.
    #[error("invalid rule test file '{}': {problem}", path.display())]
    TestFile {
        /// The file.
        path: PathBuf,
        /// The problem, with its key or line.
        problem: String,
    },
    /// The store or a file could not be used.
    #[error("failed to run the case: {0}")]
    Run(String),
}

/// Runs the test files and prints one line per case and a diff per failure. Returns
/// `Ok(false)` when a case failed.
///
/// # Errors
/// Returns an error when the configuration, the rules or a test file cannot be read.
pub fn run(args: &RulesArgs, out: &mut dyn Write) -> Result<bool, ToolError> {
    let RulesCommand::Test {
        files,
        config,
        rules,
    } = &args.command;
    let mut config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(rules) = rules {
        config.rules.dir = rules.clone();
    }
    let files = if files.is_empty() {
        find_test_files(&config.rules.dir)
    } else {
        files.clone()
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let test = read_test_file(file)?;
        for case in &test.case {
            let failure = run_case(&config, case)?;
            print_case(out, file, case, failure.as_deref())
                .map_err(|e| ToolError::Run(e.to_string()))?;
            if failure.is_some() {
                failed += 1;
            } else {
                passed += 1;
            }
        }
    }
    let summary = format!("{passed} passed, {failed} failed, in {} files", files.len());
    writeln!(out, "{summary}").map_err(|e| ToolError::Run(e.to_string()))?;
    Ok(failed == 0)
}

fn print_case(
    out: &mut dyn Write,
    file: &Path,
    case: &Case,
    failure: Option<&str>,
) -> std::io::Result<()> {
    match failure {
        None => writeln!(out, "PASS {}: {}", file.display(), case.name),
        Some(diff) => {
            writeln!(out, "FAIL {}: {}", file.display(), case.name)?;
            write!(out, "{diff}")
        }
    }
}

/// Returns every `*.test.toml` file under `dir`, sorted.
fn find_test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .map(|entry| entry.into_path())
        .filter(|path| path.to_string_lossy().ends_with(TEST_SUFFIX))
        .collect();
    files.sort();
    files
}

fn read_test_file(path: &Path) -> Result<TestFile, ToolError> {
    let fail = |problem: String| ToolError::TestFile {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("failed to read: {e}")))?;
    toml::from_str(&text).map_err(|e| fail(e.to_string().trim().to_owned()))
}

/// Runs one case on a fresh store and returns a diff when the alerts differ.
fn run_case(config: &Config, case: &Case) -> Result<Option<String>, ToolError> {
    let messages = case_messages(case).map_err(|problem| ToolError::TestFile {
        path: PathBuf::from(&case.name),
        problem,
    })?;
    let scratch = tempfile::tempdir().map_err(|e| ToolError::Run(e.to_string()))?;
    let store = Arc::new(
        Store::open(&scratch.path().join("case.redb"))
            .map_err(|e| ToolError::Run(e.to_string()))?,
    );
    let metrics = Arc::new(Metrics::new());
    let rules = Arc::new(RuleEngine::load(config.rules.clone(), metrics.clone())?);
    let decoders = Decoders::from_config(config, None).map_err(ToolError::Run)?;
    let model = StateModel::new(&config.state, config.decode.max_power_kw);
    let settings = PipelineSettings::from_config(config);
    let mut pipeline = Pipeline::new(decoders, model, rules, store.clone(), metrics, settings);
    let mut rejected = Vec::new();
    for chunk in messages.chunks(config.store.commit_max_readings.max(1)) {
        let clock_ms = chunk.iter().map(|m| m.received_ms).max().unwrap_or(0);
        let now_ms = chrono::Utc::now().timestamp_millis().max(clock_ms);
        let outcome = pipeline
            .process_batch(chunk, now_ms)
            .map_err(|e| ToolError::Run(e.to_string()))?;
        if outcome.rejected > 0 {
            rejected.push(outcome.rejected);
        }
    }
    let alerts = store
        .list_alerts(usize::MAX)
        .map_err(|e| ToolError::Run(e.to_string()))?;
    let mut failure = compare(&case.expect, &alerts);
    if !rejected.is_empty() {
        let list = store
            .list_rejected(5)
            .map_err(|e| ToolError::Run(e.to_string()))?;
        let details: Vec<String> = list
            .iter()
            .map(|r| format!("  rejected reading: {}\n", r.detail))
            .collect();
        failure = Some(failure.unwrap_or_default() + details.concat().as_str());
    }
    Ok(failure)
}

/// Builds the case's messages, ordered by reading time.
fn case_messages(case: &Case) -> Result<Vec<Message>, String> {
    let mut readings: Vec<(i64, String, Value)> = Vec::new();
    for series in &case.series {
        readings.extend(series_readings(series)?);
    }
    for reading in &case.readings {
        let mut payload = reading.clone();
        let meter = match payload.remove("meter") {
            Some(Value::String(meter)) => meter,
            _ => return Err("every [[case.readings]] entry needs meter = \"...\"".into()),
        };
        let ts_ms = reading_time(payload.get("ts"))?;
        readings.push((ts_ms, meter, Value::Object(payload)));
    }
    readings.sort_by_key(|(ts, _, _)| *ts);
    let messages = readings
        .into_iter()
        .map(|(ts_ms, meter, payload)| {
            let topic = format!("meters/{}/{meter}/telemetry", case.region);
            Message::offline(&topic, payload.to_string(), ts_ms)
        })
        .collect();
    Ok(messages)
}

fn series_readings(series: &Series) -> Result<Vec<(i64, String, Value)>, String> {
    let start_ms = reading_time(Some(&json!(series.start)))?;
    let step_ms = i64::from(series.step_minutes) * 60_000;
    let step_kwh = series.load_kw * f64::from(series.step_minutes) / 60.0;
    let readings = (0..series.count)
        .map(|i| {
            let ts_ms = start_ms + i64::from(i) * step_ms;
            let mut payload = series.fields.clone();
            payload.insert("ts".into(), json!(ts_ms));
            let register = series.start_kwh + f64::from(i) * step_kwh;
            payload.insert(
                "energy_import_kwh".into(),
                json!((register * 1000.0).round() / 1000.0),
            );
            (ts_ms, series.meter.clone(), Value::Object(payload))
        })
        .collect();
    Ok(readings)
}

fn reading_time(ts: Option<&Value>) -> Result<i64, String> {
    match ts {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("invalid ts {n}")),
        Some(Value::String(text)) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("invalid ts '{text}': {e}")),
        _ => Err("every reading needs ts, as RFC 3339 or Unix milliseconds".into()),
    }
}

/// Compares open alerts with expectations and returns a unified diff when they differ.
fn compare(expected: &[Expected], alerts: &[Alert]) -> Option<String> {
    let mut want: Vec<String> = expected.iter().map(expected_line).collect();
    let mut got: Vec<String> = alerts
        .iter()
        .map(|a| {
            let matching = expected.iter().find(|e| matches(e, a));
            match matching {
                // Show the expected line, so a message substring that matched gives no diff.
                Some(e) => expected_line(e),
                None => format!(
                    "{} {} {} \"{}\"",
                    a.meter,
                    a.kind,
                    a.severity.as_str(),
                    a.message
                ),
            }
        })
        .collect();
    want.sort();
    got.sort();
    if want == got {
        return None;
    }
    let want = want.join("\n") + "\n";
    let got = got.join("\n") + "\n";
    let diff = similar::TextDiff::from_lines(&want, &got)
        .unified_diff()
        .header("expected", "raised")
        .to_string();
    Some(diff)
}

fn expected_line(e: &Expected) -> String {
    match &e.message {
        Some(message) => format!("{} {} {} \"…{message}…\"", e.meter, e.kind, e.severity),
        None => format!("{} {} {}", e.meter, e.kind, e.severity),
    }
}

fn matches(e: &Expected, alert: &Alert) -> bool {
    e.meter == alert.meter
        && e.kind == alert.kind
        && e.severity == alert.severity.as_str()
        && e.message
            .as_ref()
            .is_none_or(|m| alert.message.contains(m.as_str()))
}
