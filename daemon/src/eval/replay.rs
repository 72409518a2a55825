//! `gridwatch replay`: the daemon's pipeline run offline over recorded messages.
//!
//! Messages go through the same decoders, meter state, plugins, rules and alert store as in the
//! daemon, in batches of `store.commit_max_readings`, as fast as the machine allows. No broker,
//! webhook or HTTP endpoint is involved. The alerts in the store at the end are written as JSON
//! lines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::backtest::{self, Backtest};
use crate::alerts::Alert;
use crate::config::Config;
use crate::decode::Decoders;
use crate::ingest::Message;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::plugins::PluginHost;
use crate::rules::RuleEngine;
use crate::state::StateModel;
use crate::store::Store;

/// Command-line options of `gridwatch replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Messages, one JSON object per line: {"topic": "...", "payload": {...} or "text"}, in the
    /// order they are to be processed, as `gridwatch scenario` writes them.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// File to write the alerts to, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub alerts: PathBuf,
    /// Configuration for decoders, state, rules and plugins; built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rules folder, in place of the configuration's `rules.dir`.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Store file to write; must not exist yet. A temporary file when absent.
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// Candidate rules folder to backtest. The input is replayed a second time with these
    /// rules, and the alerts that differ from the current rules' are printed.
    #[arg(long, value_name = "DIR")]
    pub candidate_rules: Option<PathBuf>,
    /// File to write the candidate rules' alerts to, one JSON object per line.
    #[arg(long, value_name = "FILE", requires = "candidate_rules")]
    pub candidate_alerts: Option<PathBuf>,
    /// File to write the differences to, one JSON object per line.
    #[arg(long, value_name = "FILE", requires = "candidate_rules")]
    pub diff: Option<PathBuf>,
    /// Print no progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Counts of a finished replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Messages read from the input.
    pub messages: u64,
    /// Readings accepted.
    pub accepted: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Alerts in the store at the end.
    pub alerts: u64,
    /// Failed plugin calls, whose findings are missing from the alerts; both runs of a
    /// backtest count.
    pub plugin_failures: u64,
    /// Comparison with the candidate rules, when they were given.
    pub backtest: Option<Backtest>,
}

/// Errors of `gridwatch replay`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A component could not start: rules, decoders, plugins or the store.
    #[error("failed to start the pipeline: {0}")]
    Start(String),
    /// The candidate rules do not compile.
    #[error("invalid candidate rules in '{}': {problems}", dir.display())]
    Candidate {
        /// The candidate rules folder.
        dir: PathBuf,
        /// Every problem, each with its file.
        problems: String,
    },
    /// The store file exists already.
    #[error("store '{}' exists already, expected a new file", .0.display())]
    StoreExists(PathBuf),
    /// A batch could not be committed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A file could not be read or written.
    #[error("failed to read or write '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An input line is not `{"topic": ..., "payload": ...}`.
    #[error("invalid message at '{}' line {line}: {problem}", path.display())]
    Input {
        /// The input file.
        path: PathBuf,
        /// Line number, starting at 1.
        line: u64,
        /// The problem with the line.
        problem: String,
    },
}

/// Replays the input and writes the alerts.
///
/// # Errors
/// Returns an error when a component does not start, a line of the input is invalid, a batch
/// does not commit or a file cannot be read or written.
pub fn run(args: &ReplayArgs) -> Result<ReplaySummary, ReplayError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(rules) = &args.rules {
        config.rules.dir = rules.clone();
    }
    let scratch = tempfile::tempdir().map_err(|source| ReplayError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let store_path = match &args.store {
        Some(path) if path.exists() => return Err(ReplayError::StoreExists(path.clone())),
        Some(path) => path.clone(),
        None => scratch.path().join("replay.redb"),
    };
    // The candidate is checked first, so that a broken one fails before the long replay.
    let candidate = match &args.candidate_rules {
        Some(dir) => {
            let mut candidate = config.clone();
            candidate.rules.dir = dir.clone();
            let problems = crate::rules::check(&candidate.rules);
            if !problems.is_empty() {
                return Err(ReplayError::Candidate {
                    dir: dir.clone(),
                    problems: problems.join("; "),
                });
            }
            Some(candidate)
        }
        None => None,
    };
    let (summary, alerts, rule_errors) = replay(args, &config, &store_path)?;
    write_alerts(&args.alerts, &alerts)?;
    let mut summary = ReplaySummary {
        alerts: alerts.len() as u64,
        ..summary
    };
    if let Some(candidate) = candidate {
        let store_path = scratch.path().join("candidate.redb");
        let (candidate_summary, candidate_alerts, candidate_errors) =
            replay(args, &candidate, &store_path)?;
        summary.plugin_failures += candidate_summary.plugin_failures;
        if let Some(path) = &args.candidate_alerts {
            write_alerts(path, &candidate_alerts)?;
        }
        let mut backtest = backtest::compare(&alerts, &candidate_alerts);
        backtest.current_rule_errors = rule_errors;
        backtest.candidate_rule_errors = candidate_errors;
        if let Some(path) = &args.diff {
            write_lines(path, &backtest.differences)?;
        }
        summary.backtest = Some(backtest);
    }
    Ok(summary)
}

/// Runs the pipeline with `config` over the input into a new store and returns its alerts and
/// the number of failed rule calls. The summary counts the failed plugin calls.
fn replay(
    args: &ReplayArgs,
    config: &Config,
    store_path: &Path,
) -> Result<(ReplaySummary, Vec<Alert>, u64), ReplayError> {
    let store = Arc::new(Store::open(store_path).map_err(|e| ReplayError::Start(e.to_string()))?);
    let metrics = Arc::new(Metrics::new());
    let mut pipeline = build_pipeline(config, store.clone(), metrics.clone())?;
    let mut summary = feed(args, config, &mut pipeline)?;
    let alerts = store.list_alerts(usize::MAX)?;
    let text = metrics.encode();
    summary.plugin_failures = counter_total(&text, "gridwatch_plugin_failures_total{");
    let rule_errors = counter_total(&text, "gridwatch_rule_errors_total{");
    Ok((summary, alerts, rule_errors))
}

/// Adds up a counter over its labels in the metrics text; `prefix` is its name and the opening
/// brace.
fn counter_total(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn build_pipeline(
    config: &Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) -> Result<Pipeline, ReplayError> {
    let start = |e: &dyn std::fmt::Display| ReplayError::Start(e.to_string());
    let rules = RuleEngine::load(config.rules.clone(), metrics.clone()).map_err(|e| start(&e))?;
    let scripts = crate::decode::load_scripts(config, metrics.clone()).map_err(|e| start(&e))?;
    let decoders = Decoders::from_config(config, scripts).map_err(|e| start(&e))?;
    let model = StateModel::new(&config.state, config.decode.max_power_kw);
    let settings = PipelineSettings::from_config(config);
    let pipeline = Pipeline::new(
        decoders,
        model,
        Arc::new(rules),
        store,
        metrics.clone(),
        settings,
    );
    if !config.plugins.dir.is_dir() {
        return Ok(pipeline);
    }
    let host = PluginHost::start(&config.plugins, metrics).map_err(|e| start(&e))?;
    Ok(pipeline.with_plugins(Arc::new(host)))
}

/// Reads the input in batches and processes each; readings without a time in their payload get
/// the time of the latest reading that had one.
fn feed(
    args: &ReplayArgs,
    config: &Config,
    pipeline: &mut Pipeline,
) -> Result<ReplaySummary, ReplayError> {
    let path = &args.input;
    let io = |source| ReplayError::Io {
        path: path.clone(),
        source,
    };
    let total = count_lines(path).map_err(io)?;
    let progress = progress_bar(total, args.quiet);
    let file = std::fs::File::open(path).map_err(io)?;
    let batch_size = config.store.commit_max_readings.max(1);
    let mut summary = ReplaySummary::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut clock_ms = 0_i64;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let (topic, payload, ts_ms) = parse_line(&line).map_err(|problem| ReplayError::Input {
            path: path.clone(),
            line: index as u64 + 1,
            problem,
        })?;
        clock_ms = ts_ms.unwrap_or(clock_ms).max(clock_ms);
        batch.push(Message::offline(&topic, payload, clock_ms));
        if batch.len() == batch_size {
            process(pipeline, &mut batch, clock_ms, &mut summary)?;
            progress.set_position(summary.messages);
        }
    }
    process(pipeline, &mut batch, clock_ms, &mut summary)?;
    progress.finish_and_clear();
    Ok(summary)
}

fn process(
    pipeline: &mut Pipeline,
    batch: &mut Vec<Message>,
    clock_ms: i64,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    if batch.is_empty() {
        return Ok(());
    }
    // Readings must not lie in the future of the batch's clock; the real clock is later still.
    let now_ms = chrono::Utc::now().timestamp_millis().max(clock_ms);
    let outcome = pipeline.process_batch(batch, now_ms)?;
    summary.messages += batch.len() as u64;
    summary.accepted += outcome.accepted as u64;
    summary.rejected += outcome.rejected as u64;
    batch.clear();
    Ok(())
}

/// Splits an input line into topic, payload bytes and the payload's `ts` when it is a number.
fn parse_line(line: &str) -> Result<(String, Vec<u8>, Option<i64>), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let topic = value
        .get("topic")
        .and_then(Value::as_str)
        .ok_or("missing string field 'topic'")?;
    let (payload, ts_ms) = match value.get("payload") {
        Some(Value::String(text)) => (text.clone().into_bytes(), None),
        Some(other) => (
            other.to_string().into_bytes(),
            other.get("ts").and_then(Value::as_i64),
        ),
        None => return Err("missing field 'payload'".into()),
    };
    Ok((topic.to_owned(), payload, ts_ms))
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut count = 0;
    for line in std::io::BufReader::new(file).lines() {
        if !line?.trim().is_empty() {
            count += 1;
        }
    }
    Ok(count)
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = "{elapsed_precise} [{bar:40}] {pos}/{len} messages ({per_sec}, {eta} left)";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_alerts(path: &Path, alerts: &[Alert]) -> Result<(), ReplayError> {
    write_lines(path, alerts)
}

/// Writes one JSON object per line.
fn write_lines<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for row in rows {
        let line = serde_json::to_string(row).unwrap_or_default();
        writeln!(file, "{line}").map_err(io)?;
    }
    file.flush().map_err(io)
}
