//! The pipeline's plugin runners: kept in step with the loaded set and run on each batch.
//!
//! The bank checks the set's generation at the start of every batch, so a swap takes effect
//! between two batches: every reading goes either to the old version or to the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::bindings::gridwatch::detector::types::{Finding, Reading as WitReading, Severity};
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
        let readings: Vec<WitReading> = items
            .iter()
            .map(|item| convert::reading(item.reading, item.snapshot))
            .collect();
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
            let subset;
            let (batch, positions): (&[WitReading], Vec<usize>) = if selected.len() == items.len() {
                (&readings, selected)
            } else {
                subset = selected
                    .iter()
                    .map(|&i| readings[i].clone())
                    .collect::<Vec<_>>();
                (&subset, selected)
            };
            for (part, part_positions) in batch.chunks(chunk).zip(positions.chunks(chunk)) {
                let labels = vec![("plugin", runner.name().to_owned())];
                self.metrics
                    .plugin_readings
                    .get_or_create(&labels)
                    .inc_by(part.len() as u64);
                let findings = match runner.detect(&host.engine, &self.metrics, part) {
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
                    .inc_by(findings.len() as u64);
                let record = self.record;
                accept(
                    runner,
                    items,
                    part_positions,
                    findings,
                    &self.metrics,
                    record,
                    &mut found,
                );
            }
        }
        found
    }
}

/// Checks each finding and turns it into a score and, unless it is `info`, an alert.
fn accept(
    runner: &Runner,
    items: &[MeterRef<'_>],
    positions: &[usize],
    findings: Vec<Finding>,
    metrics: &Metrics,
    record: bool,
    found: &mut BatchFindings,
) {
    // The newest reading of each meter in the call, by `region/meter_id`.
    let mut meters: HashMap<(&str, &str), usize> = HashMap::new();
    for &i in positions {
        let reading = items[i].reading;
        meters.insert((reading.region.as_str(), reading.meter_id.as_str()), i);
    }
    let info = &runner.plugin.info;
    let mut rejected = Vec::new();
    for finding in findings {
        let key = (finding.meter.region.as_str(), finding.meter.meter.as_str());
        let Some(&item) = meters.get(&key) else {
            rejected.push(format!(
                "meter {}/{} is not in the batch",
                finding.meter.region, finding.meter.meter
            ));
            continue;
        };
        if !info.kinds.contains(&finding.kind) {
            rejected.push(format!("kind '{}' is not declared", finding.kind));
            continue;
        }
        if !(0.0..=1.0).contains(&finding.score) {
            rejected.push(format!("score {} is outside 0 to 1", finding.score));
            continue;
        }
        let reading = items[item].reading;
        let meter_key = format!("{}/{}", reading.region, reading.meter_id);
        found
            .scores
            .push((meter_key, info.name.clone(), finding.score));
        if record {
            found.recorded.push(record_json(&finding, &info.name));
        }
        if finding.severity == Severity::Info {
            continue;
        }
        let alert = AlertWrite {
            region: reading.region.clone(),
            meter: reading.meter_id.clone(),
            ts_ms: reading.ts_ms,
            draft: AlertDraft {
                kind: finding.kind.clone(),
                severity: convert::severity(finding.severity),
                evidence: convert::evidence(&finding, &info.name),
                message: finding.message,
                source: AlertSource {
                    rule: format!("plugin:{}@{}", info.name, info.version),
                    content_hash: runner.plugin.hash.clone(),
                },
            },
        };
        found.alerts.push((items[item].index, alert));
    }
    if let Some(first) = rejected.first() {
        let labels = vec![
            ("plugin", info.name.clone()),
            ("cause", "invalid_finding".to_owned()),
        ];
        metrics
            .plugin_failures
            .get_or_create(&labels)
            .inc_by(rejected.len() as u64);
        tracing::warn!(plugin = %info.name, dropped = rejected.len(), error = %first, "plugin findings dropped");
    }
}

fn record_json(finding: &Finding, plugin: &str) -> serde_json::Value {
    serde_json::json!({
        "region": finding.meter.region,
        "meter": finding.meter.meter,
        "kind": finding.kind,
        "severity": convert::severity(finding.severity).as_str(),
        "score": super::tool::round4(finding.score),
        "message": finding.message,
        "evidence": convert::evidence(finding, plugin),
    })
}
