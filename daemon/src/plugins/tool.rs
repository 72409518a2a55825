//! `gridwatch plugin inspect` and `gridwatch plugin test`.
//!
//! `test` runs one plugin on recorded messages without a broker or store: each input line is
//! `{"topic": ..., "payload": {...}}`, decoded and applied to meter state exactly as the daemon
//! does, then passed to the plugin in batches. Its findings are compared with the expected
//! lines; an expected line names only the fields it checks.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value as Json};

use super::bank::{MeterRef, PluginBank};
use super::host::HistorySource;
use super::load::{PluginHost, inspect};
use super::state::PluginStates;
use super::{PluginEngine, PluginError};
use crate::config::Config;
use crate::decode::{Decoder, Reading};
use crate::metrics::Metrics;
use crate::state::{IntervalKind, MeterSnapshot, MeterState, RecentHours, StateModel};

/// Command-line options of `gridwatch plugin`.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum PluginCommand {
    /// Prints a plugin's name, version, alert kinds, interface version and settings.
    Inspect {
        /// The plugin's `.wasm` file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Runs a plugin on recorded messages and compares its findings with the expected ones;
    /// exits with 1 and prints a diff on mismatch.
    Test {
        /// The plugin's `.wasm` file.
        file: PathBuf,
        /// Messages, one JSON object per line: {"topic": "meters/<region>/<meter_id>/telemetry",
        /// "payload": {...}}.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Expected findings, one JSON object per line with any of region, meter, kind,
        /// severity, score (compared to 4 decimals), message and evidence (numbers compared to
        /// 6 decimals).
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Configuration for decoding bounds, state windows, sandbox limits and the plugin's
        /// settings; built-in defaults when absent.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Errors of a plugin command; a mismatch in `test` is a result, not an error.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The plugin did not load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A file could not be read or written.
    #[error("failed to read or write '{}': {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error. It is part of the message, so it is not also the error's source,
        /// which would print it twice in a chain.
        error: std::io::Error,
    },
    /// An input or expected line is not what was expected.
    #[error("{}:{line}: {detail}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// Description of the problem.
        detail: String,
    },
    /// A plugin call failed, so there are no findings to compare.
    #[error("plugin '{plugin}' failed ({cause}): {message}")]
    CallFailed {
        /// Plugin name.
        plugin: String,
        /// Short cause, as in the `plugin_failures_total` metric.
        cause: &'static str,
        /// What happened.
        message: String,
    },
}

/// Runs a `gridwatch plugin` command. Returns false when `test` found a mismatch.
///
/// # Errors
/// Returns an error when the plugin, the configuration or a file cannot be loaded.
pub fn run(args: &PluginArgs, out: &mut dyn Write) -> Result<bool, ToolError> {
    match &args.command {
        PluginCommand::Inspect { file, json } => {
            let engine = PluginEngine::new(&uncached(&Config::default()))?;
            let info = inspect(&engine, file)?;
            let text = if *json {
                serde_json::to_string_pretty(&info).unwrap_or_default()
            } else {
                describe(&info)
            };
            writeln!(out, "{text}").map_err(|source| io_error(Path::new("stdout"), source))?;
            Ok(true)
        }
        PluginCommand::Test {
            file,
            input,
            expect,
            config,
        } => test(file, input, expect.as_deref(), config.as_deref(), out),
    }
}

fn describe(info: &super::PluginInfo) -> String {
    let mut text = format!(
        "name:        {}\nversion:     {}\ninterface:   {}\nkinds:       {}\ndescription: {}\nsettings:",
        info.name,
        info.version,
        info.interface,
        info.kinds.join(", "),
        info.description
    );
    if info.settings.is_empty() {
        text.push_str(" none");
    }
    for setting in &info.settings {
        text.push_str(&format!(
            "\n  {} ({}, default {}): {}",
            setting.name, setting.kind, setting.default, setting.description
        ));
    }
    text
}

/// Returns the plugin settings with the compile cache off, so the tools write no files.
fn uncached(config: &Config) -> crate::config::PluginsConfig {
    crate::config::PluginsConfig {
        cache_dir: PathBuf::new(),
        ..config.plugins.clone()
    }
}

fn io_error(path: &Path, error: std::io::Error) -> ToolError {
    ToolError::Io {
        path: path.to_owned(),
        error,
    }
}

fn test(
    file: &Path,
    input: &Path,
    expect: Option<&Path>,
    config: Option<&Path>,
    out: &mut dyn Write,
) -> Result<bool, ToolError> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let messages = read_lines(input)?;
    let actual = run_plugin(&config, file, input, &messages)?;

    let write = |out: &mut dyn Write, text: &str| {
        writeln!(out, "{text}").map_err(|source| io_error(Path::new("stdout"), source))
    };
    let Some(expect) = expect else {
        // Standard output carries only findings, so that it can become an `--expect` file.
        if actual.is_empty() {
            eprintln!(
                "no findings from the {} messages of {}",
                messages.len(),
                input.display()
            );
        }
        for finding in &actual {
            write(out, &finding.to_string())?;
        }
        return Ok(true);
    };

    let expected = read_lines(expect)?;
    for (line, value) in &expected {
        check_expected(value).map_err(|detail| ToolError::Line {
            path: expect.to_owned(),
            line: *line,
            detail,
        })?;
    }
    let (want, got) = project(&expected, &actual);
    if want == got {
        write(
            out,
            &format!("ok: {} findings match {}", actual.len(), expect.display()),
        )?;
        return Ok(true);
    }

    let diff = similar::TextDiff::from_lines(&want, &got);
    write(
        out,
        &format!(
            "findings differ from {} (- expected, + actual):",
            expect.display()
        ),
    )?;
    let text = diff.unified_diff().header("expected", "actual").to_string();
    write(out, text.trim_end())?;
    Ok(false)
}

/// Reads a JSON Lines file; blank lines and lines starting with `#` are skipped.
fn read_lines(path: &Path) -> Result<Vec<(usize, Json)>, ToolError> {
    let file = std::fs::File::open(path).map_err(|source| io_error(path, source))?;
    let mut values = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| io_error(path, source))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let value = serde_json::from_str(trimmed).map_err(|e| ToolError::Line {
            path: path.to_owned(),
            line: i + 1,
            detail: format!("invalid JSON: {e}"),
        })?;
        values.push((i + 1, value));
    }
    Ok(values)
}

/// Meter states of the test run, also serving the history import.
#[derive(Default)]
struct Meters(RwLock<HashMap<String, MeterState>>);

impl HistorySource for Meters {
    fn history(&self, key: &str, hours: u32) -> RecentHours {
        self.0
            .read()
            .get(key)
            .map(|state| state.history.recent(hours))
            .unwrap_or_default()
    }
}

fn run_plugin(
    config: &Config,
    file: &Path,
    input: &Path,
    messages: &[(usize, Json)],
) -> Result<Vec<Json>, ToolError> {
    let metrics = Arc::new(Metrics::new());
    let host = Arc::new(PluginHost::single(
        &uncached(config),
        metrics.clone(),
        file,
    )?);
    let meters = Arc::new(Meters::default());
    let mut bank = PluginBank::new(
        host,
        Arc::new(PluginStates::in_memory()),
        meters.clone(),
        metrics.clone(),
    );
    let decoder = Decoder::new(
        &config.mqtt.topic_layout,
        config.decode.clone(),
        config.mqtt.max_payload_bytes,
    )
    .map_err(|detail| ToolError::Line {
        path: input.to_owned(),
        line: 0,
        detail,
    })?;
    let model = StateModel::new(&config.state, config.decode.max_power_kw);

    let mut readings = Vec::with_capacity(messages.len());
    for (line, message) in messages {
        readings.push(decode_line(&decoder, input, *line, message)?);
    }

    let mut findings = Vec::new();
    // Latest plugin scores by `region/meter_id`, carried from call to call as the pipeline
    // carries them in meter state.
    let mut scores: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    let mut readings = readings.into_iter().peekable();
    while readings.peek().is_some() {
        // Like the daemon, a call has at most one reading of each meter, so the history
        // import shows each meter as it was after the reading the plugin examines.
        let mut applied: Vec<(Reading, MeterSnapshot)> = Vec::new();
        let mut keys = HashSet::new();
        while applied.len() < config.plugins.max_readings_per_call {
            let Some(next) = readings.peek() else { break };
            let key = format!("{}/{}", next.region, next.meter_id);
            if keys.contains(&key) {
                break;
            }
            let reading = readings.next().expect("peeked above");
            let mut states = meters.0.write();
            let state = states
                .entry(key.clone())
                .or_insert_with(|| model.new_state());
            let interval = model.apply(state, &reading);
            if !matches!(interval.kind, IntervalKind::Duplicate | IntervalKind::Late) {
                let mut snapshot = model.snapshot(state, &reading, interval);
                snapshot.scores = scores.get(&key).cloned().unwrap_or_default();
                applied.push((reading, snapshot));
            }
            keys.insert(key);
        }
        let items = MeterRef::list(&applied);
        let found = bank.run_detailed(&items);
        if let Some((plugin, failure)) = found.failures.into_iter().next() {
            return Err(ToolError::CallFailed {
                plugin,
                cause: failure.cause,
                message: failure.message,
            });
        }
        findings.extend(found.recorded);
        for (key, plugin, score) in found.scores {
            let meter = scores.entry(key).or_default();
            match meter.iter_mut().find(|(name, _)| *name == plugin) {
                Some(entry) => entry.1 = score,
                None => meter.push((plugin, score)),
            }
        }
    }
    Ok(findings)
}

fn decode_line(
    decoder: &Decoder,
    input: &Path,
    line: usize,
    message: &Json,
) -> Result<Reading, ToolError> {
    let line_error = |detail: String| ToolError::Line {
        path: input.to_owned(),
        line,
        detail,
    };
    let topic = message
        .get("topic")
        .and_then(Json::as_str)
        .ok_or_else(|| line_error("missing string field 'topic'".into()))?;
    let payload = message
        .get("payload")
        .ok_or_else(|| line_error("missing field 'payload'".into()))?;
    let bytes = match payload {
        Json::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    decoder
        .decode(topic, &bytes, now_ms)
        .map_err(|rejection| line_error(format!("message rejected: {rejection}")))
}

/// Renders both sides as lines, reducing each actual finding to the fields its expected line
/// names, so a fixture checks only what it states. Numbers are compared to 6 decimals, which
/// also hides the last-digit differences of JSON float parsing.
/// Fields of a finding as `plugin test` prints it.
const FINDING_FIELDS: [&str; 7] = [
    "region", "meter", "kind", "severity", "score", "message", "evidence",
];

/// Checks that an expected finding is an object of finding fields with values of their types,
/// so that a mistake in the file is reported as such instead of as a difference.
fn check_expected(value: &Json) -> Result<(), String> {
    let Some(fields) = value.as_object() else {
        return Err(format!(
            "expected a JSON object with any of {}, found {value}",
            FINDING_FIELDS.join(", ")
        ));
    };
    for (name, field) in fields {
        let valid = match name.as_str() {
            "region" | "meter" | "kind" | "message" => field.is_string(),
            "severity" => field
                .as_str()
                .is_some_and(|text| crate::alerts::Severity::parse(text).is_ok()),
            "score" => field.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)),
            "evidence" => field.is_object(),
            _ => {
                return Err(format!(
                    "unknown field '{name}', expected one of {}",
                    FINDING_FIELDS.join(", ")
                ));
            }
        };
        if !valid {
            let expected = match name.as_str() {
                "severity" => "one of info, low, medium, high, critical",
                "score" => "a number from 0 to 1",
                "evidence" => "an object of evidence names and values",
                _ => "a string",
            };
            return Err(format!("field '{name}' is {field}, expected {expected}"));
        }
    }
    Ok(())
}

fn project(expected: &[(usize, Json)], actual: &[Json]) -> (String, String) {
    let mut want = String::new();
    let mut got = String::new();
    for (i, finding) in actual.iter().enumerate() {
        let shown = match expected.get(i).and_then(|(_, e)| e.as_object()) {
            Some(fields) => only(finding, fields),
            None => finding.clone(),
        };
        got.push_str(&normalise(&shown).to_string());
        got.push('\n');
    }
    for (_, value) in expected {
        want.push_str(&normalise(value).to_string());
        want.push('\n');
    }
    (want, got)
}

fn only(finding: &Json, fields: &Map<String, Json>) -> Json {
    let mut map = Map::new();
    for key in fields.keys() {
        if let Some(value) = finding.get(key) {
            map.insert(key.clone(), value.clone());
        }
    }
    Json::Object(map)
}

/// Rounds every float to 6 decimals, and the score to 4 so fixtures need not carry every digit.
fn normalise(value: &Json) -> Json {
    let mut value = round_floats(value);
    if let Some(score) = value.get("score").and_then(Json::as_f64) {
        value["score"] = round4(score);
    }
    value
}

fn round_floats(value: &Json) -> Json {
    match value {
        Json::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            serde_json::Number::from_f64((x * 1e6).round() / 1e6).map_or(Json::Null, Json::Number)
        }
        Json::Array(items) => Json::Array(items.iter().map(round_floats).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), round_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub(super) fn round4(score: f64) -> Json {
    serde_json::Number::from_f64((score * 10_000.0).round() / 10_000.0)
        .map_or(Json::Null, Json::Number)
}
