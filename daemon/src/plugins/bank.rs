//! The pipeline's plugin runners: kept in step with the loaded set and run on each batch.
//!
//! The bank checks the set's generation at the start of every batch, so a swap takes effect
//! between two batches: every reading goes either to the old version or to the new one.

use std::sync::Arc;
use std::time::Instant;

use super::bindings::gridwatch::detector::types::{Findings, Severity, Value};
use super::convert;
use super::host::{HistorySource, PluginContext};
use super::load::{PluginHost, runs_in};
use super::runner::{Failure, Runner};
use super::state::PluginStates;
use crate::alerts::{AlertDraft, AlertSource};
use crate::decode::Reading;
use crate::metrics::Metrics;
use crate::state::MeterSnapshot;
use crate::store::AlertWrite;

/// One reading of the batch as plugins see it.
pub struct MeterRef<'a> {
    /// Position of the reading's message in the batch.
    pub index: usize,
    /// The reading.
    pub reading: &'a Reading,
    /// Its meter's state after the reading.
    pub snapshot: &'a MeterSnapshot,
}

impl<'a> MeterRef<'a> {
    /// Returns the plugins' view of readings and their meters' state, each at its position.
    pub fn list(applied: &'a [(Reading, MeterSnapshot)]) -> Vec<MeterRef<'a>> {
        applied
            .iter()
            .enumerate()
            .map(|(index, (reading, snapshot))| MeterRef {
                index,
                reading,
                snapshot,
            })
            .collect()
    }
}

/// Findings of one batch.
#[derive(Debug, Default)]
pub struct BatchFindings {
    /// Latest score per meter key (`region/meter_id`) and plugin name.
    pub scores: Vec<(String, String, f64)>,
    /// Alerts raised by findings, each with the batch position of its meter's reading.
    pub alerts: Vec<(usize, AlertWrite)>,
    /// Every accepted finding as JSON, kept only by [`PluginBank::run_detailed`].
    pub recorded: Vec<serde_json::Value>,
    /// Failed calls, by plugin name.
    pub failures: Vec<(String, Failure)>,
}

/// The runners of every loaded plugin.
pub struct PluginBank {
    host: Arc<PluginHost>,
    states: Arc<PluginStates>,
    history: Arc<dyn HistorySource>,
    metrics: Arc<Metrics>,
    generation: Option<u64>,
    runners: Vec<Runner>,
    record: bool,
}

impl PluginBank {
    /// Creates a bank over the host's set, with the given state and history.
    pub fn new(
        host: Arc<PluginHost>,
        states: Arc<PluginStates>,
        history: Arc<dyn HistorySource>,
        metrics: Arc<Metrics>,
    ) -> PluginBank {
        PluginBank {
            host,
            states,
            history,
            metrics,
            generation: None,
            runners: Vec::new(),
            record: false,
        }
    }

    /// Returns the plugin state writes made since the last call, for the batch commit.
    pub fn take_state(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.states.take_pending()
    }

    /// Returns true when no plugin is loaded.
    pub fn is_empty(&mut self) -> bool {
        self.sync();
        self.runners.is_empty()
    }

    /// Rebuilds the runner list when the loaded set changed, keeping the runners (and live
    /// instances) of plugins that did not change.
    fn sync(&mut self) {
        let set = self.host.set();
        if self.generation == Some(set.generation) {
            return;
        }
        let mut old: Vec<Runner> = std::mem::take(&mut self.runners);
        for plugin in &set.plugins {
            let kept = old.iter().position(|r| Arc::ptr_eq(&r.plugin, plugin));
            let runner = match kept {
                Some(position) => old.swap_remove(position),
                None => {
                    let config = self.host.config().detectors.get(&plugin.info.name);
                    let settings = plugin.settings(config).unwrap_or_default();
                    let context = Arc::new(PluginContext {
                        name: plugin.info.name.clone(),
                        settings,
                        states: self.states.clone(),
                        history: self.history.clone(),
                        fuel: config
                            .map_or((None, None), |c| (c.fuel_per_call, c.fuel_per_reading)),
                        log_budget: Default::default(),
                        history_regions: config
                            .map(|c| [c.regions.as_slice(), &c.history_regions].concat())
                            .unwrap_or_default(),
                    });
                    Runner::new(plugin.clone(), context)
                }
            };
            self.runners.push(runner);
        }
        self.generation = Some(set.generation);
    }

    /// Runs the plugins like [`PluginBank::run`], also keeping every accepted finding as
    /// JSON in [`BatchFindings::recorded`].
    pub fn run_detailed(&mut self, items: &[MeterRef<'_>]) -> BatchFindings {
        self.record = true;
        let found = self.run(items);
        self.record = false;
        found
    }

    /// Runs every plugin on the readings of the regions it is enabled for.
    pub fn run(&mut self, items: &[MeterRef<'_>]) -> BatchFindings {
        self.sync();
        let mut found = BatchFindings::default();
        if self.runners.is_empty() || items.is_empty() {
            return found;
        }
        let now = Instant::now();
        let host = self.host.clone();
        for runner in &mut self.runners {
            if runner.is_quarantined(&self.metrics, now) {
                continue;
            }
            let config = host.config();
            let selected: Vec<usize> = (0..items.len())
                .filter(|&i| runs_in(config, runner.name(), &items[i].reading.region))
                .collect();
            if selected.is_empty() {
                continue;
            }
            let chunk = config.max_readings_per_call;
            let mut earlier = convert::EarlierScores::default();
            for part_positions in selected.chunks(chunk) {
                let labels = vec![("plugin", runner.name().to_owned())];
                self.metrics
                    .plugin_readings
                    .get_or_create(&labels)
                    .inc_by(part_positions.len() as u64);
                let started = Instant::now();
                let batch = convert::batch(items, part_positions, runner.name(), &earlier);
                let result = runner.detect(&host.engine, &self.metrics, batch);
                self.metrics
                    .plugin_call_seconds
                    .get_or_create(&labels)
                    .inc_by(started.elapsed().as_secs_f64());
                let findings = match result {
                    Ok(findings) => findings,
                    Err(failure) => {
                        found.failures.push((runner.name().to_owned(), failure));
                        // A failed call can leave a quarantine behind; later parts wait for it.
                        if runner.is_quarantined(&self.metrics, Instant::now()) {
                            break;
                        }
                        continue;
                    }
                };
                self.metrics
                    .plugin_findings
                    .get_or_create(&labels)
                    .inc_by(findings.reading.len() as u64);
                // Later calls of the batch see this call's scores as their meters' latest.
                let later = (part_positions.len() < selected.len()).then_some(&mut earlier);
                let call = Call {
                    runner,
                    items,
                    positions: part_positions,
                    record: self.record,
                };
                accept(&call, findings, &self.metrics, later, &mut found);
            }
        }
        found
    }
}

/// One call of a plugin on part of a batch.
struct Call<'c, 'a> {
    runner: &'c Runner,
    items: &'c [MeterRef<'a>],
    /// Positions in `items` of the call's readings.
    positions: &'c [usize],
    /// Whether to keep every accepted finding as JSON.
    record: bool,
}

/// Checks each finding and turns it into a score and, unless it is `info`, an alert. The
/// scores also go to `later` when it is given.
fn accept<'a>(
    call: &Call<'_, 'a>,
    findings: Findings,
    metrics: &Metrics,
    mut later: Option<&mut convert::EarlierScores<'a>>,
    found: &mut BatchFindings,
) {
    let Call {
        runner,
        items,
        positions,
        record,
    } = *call;
    let info = &runner.plugin.info;
    let rule = format!("plugin:{}@{}", info.name, info.version);
    let mut rejected = Rejected::default();
    // The runner checked that the columns agree, so every index below is in range.
    let Findings {
        names,
        reading: readings,
        kind: kinds,
        severity: severities,
        score: scores,
        messages,
        message_ends,
        entry_ends,
        entry_name,
        mut entry_value,
    } = findings;
    // One finding per reading and kind: further ones would only repeat the alert, and each
    // costs the host far more memory than the output cap counts for it.
    let mut reported = foldhash::HashSet::<(u32, &str)>::default();
    let mut message_start = 0;
    let mut entry_start = 0;
    for (i, &position) in readings.iter().enumerate() {
        let message = message_start..message_ends[i] as usize;
        let entries = entry_start..entry_ends[i] as usize;
        message_start = message.end;
        entry_start = entries.end;
        let Some(&item) = positions.get(position as usize) else {
            rejected.add(|| {
                format!(
                    "reading index {position} is out of range; expected below {}, the readings \
                     in the call",
                    positions.len()
                )
            });
            continue;
        };
        let kind = match names.get(kinds[i] as usize) {
            Some(kind) if info.kinds.contains(kind) => kind,
            Some(kind) => {
                rejected.add(|| format!("kind {} is not declared", quoted(kind)));
                continue;
            }
            None => {
                rejected.add(|| name_out_of_range("kind", kinds[i], names.len()));
                continue;
            }
        };
        let entry_names = &entry_name[entries.clone()];
        if let Some(&name) = entry_names
            .iter()
            .find(|&&name| name as usize >= names.len())
        {
            rejected.add(|| name_out_of_range("evidence name", name, names.len()));
            continue;
        }
        let score = scores[i];
        if !(0.0..=1.0).contains(&score) {
            rejected.add(|| format!("score {score} is outside 0 to 1"));
            continue;
        }
        if !reported.insert((position, kind.as_str())) {
            rejected.add(|| {
                format!(
                    "reading index {position} has a finding of kind {} already; expected one \
                     per reading and kind",
                    quoted(kind)
                )
            });
            continue;
        }
        let reading = items[item].reading;
        if let Some(later) = later.as_deref_mut() {
            later.insert((&reading.region, &reading.meter_id), score);
        }
        let meter_key = format!("{}/{}", reading.region, reading.meter_id);
        found.scores.push((meter_key, info.name.clone(), score));
        let severity = severities[i];
        let alerting = severity != Severity::Info;
        if !alerting && !record {
            continue;
        }
        let message = messages[message].to_owned();
        // Text values move out of the column; each entry belongs to one finding.
        let values = entry_value[entries]
            .iter_mut()
            .map(|value| std::mem::replace(value, Value::Flag(false)));
        let evidence = convert::evidence(entry_names, values, &names, score, &info.name);
        if record {
            found.recorded.push(record_json(
                reading, kind, severity, score, &message, &evidence,
            ));
        }
        if !alerting {
            continue;
        }
        let alert = AlertWrite {
            region: reading.region.clone(),
            meter: reading.meter_id.clone(),
            ts_ms: reading.ts_ms,
            draft: AlertDraft {
                kind: kind.clone(),
                severity: convert::severity(severity),
                evidence,
                message,
                source: AlertSource {
                    rule: rule.clone(),
                    content_hash: runner.plugin.hash.clone(),
                },
            },
        };
        found.alerts.push((items[item].index, alert));
    }
    if let Some(first) = rejected.first {
        metrics
            .plugin_findings_dropped
            .get_or_create(&vec![("plugin", info.name.clone())])
            .inc_by(rejected.count as u64);
        tracing::warn!(plugin = %info.name, dropped = rejected.count, error = %first, "plugin findings dropped");
    }
}

/// The findings of a call that were dropped: how many, and why the first was.
#[derive(Default)]
struct Rejected {
    count: usize,
    first: Option<String>,
}

impl Rejected {
    /// Counts a dropped finding. Only the first one's message is built, since a plugin can
    /// return millions of findings and only the first is logged.
    fn add(&mut self, message: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(message());
        }
    }
}

/// Returns a plugin's text for a log line: quoted, with control characters escaped, and cut to
/// its first 80 characters.
fn quoted(text: &str) -> String {
    const SHOWN_CHARS: usize = 80;
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

/// Describes a finding's index into the call's `names` that is out of range.
fn name_out_of_range(field: &str, index: u32, names: usize) -> String {
    format!("{field} index {index} is out of range; expected below {names}, the names in the call")
}

/// Builds the JSON record of an accepted finding that `gridwatch plugin test` compares.
fn record_json(
    reading: &Reading,
    kind: &str,
    severity: Severity,
    score: f64,
    message: &str,
    evidence: &serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "region": reading.region,
        "meter": reading.meter_id,
        "kind": kind,
        "severity": convert::severity(severity).as_str(),
        "score": super::tool::round4(score),
        "message": message,
        "evidence": evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoted_escapes_control_characters() {
        assert_eq!(quoted("a\nFORGED\u{1b}[31m"), r#""a\nFORGED\u{1b}[31m""#);
    }

    #[test]
    fn quoted_cuts_long_text() {
        let long = "x".repeat(1_000);
        let printed = quoted(&long);
        assert!(
            printed.starts_with(&format!("\"{}\"…", "x".repeat(80))),
            "{printed}"
        );
        assert!(printed.ends_with("(1000 bytes)"), "{printed}");
    }
}
