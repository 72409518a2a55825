//! Setup shared by the plugin benchmarks: the batch, the plugins and the native run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use gridwatch::alerts::{AlertDraft, AlertSource, Severity};
use gridwatch::config::PluginsConfig;
use gridwatch::decode::Reading;
use gridwatch::metrics::Metrics;
use gridwatch::plugins::{HistorySource, MeterRef, PluginBank, PluginHost, PluginStates};
use gridwatch::state::{Interval, IntervalKind, MeterSnapshot, RecentHours, WindowStats};
use gridwatch::store::AlertWrite;
use gridwatch_plugin_sdk::prelude as sdk;

pub const BATCH: usize = 1_024;
const START_MS: i64 = 1_750_000_000_000;

/// Builds the mining plugin and the test fixtures for wasm32-wasip2 and returns the output folder.
pub fn build_plugins() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let target = root.join("target/plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
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
            "gridwatch-test-plugins",
        ])
        .args(["--lib", "--examples", "--target-dir"])
        .arg(&target)
        .status()
        .expect("failed to run cargo build for the plugins");
    assert!(status.success(), "building the plugins failed");
    target.join("wasm32-wasip2/release")
}

fn stats(base_kw: f64, load_factor: f64, hours: u32) -> WindowStats {
    WindowStats {
        hours,
        hours_with_data: f64::from(hours),
        energy_kwh: base_kw * 1.05 * f64::from(hours),
        mean_kw: base_kw * 1.05,
        peak_kw: base_kw * 1.05 / load_factor,
        base_kw,
        load_factor,
        night_day_ratio: 0.95,
        cv: 0.1,
    }
}

/// Builds one batch: even meters carry a flat 6.5 kW load, odd ones a household load.
pub fn batch() -> Vec<(Reading, MeterSnapshot)> {
    (0..BATCH)
        .map(|i| {
            let meter = format!("m-{i}");
            let (base_kw, load_factor) = if i % 2 == 0 { (6.5, 0.9) } else { (0.2, 0.3) };
            // The score the daemon keeps after the first batch: 1 for the flat loads, none
            // for the households, which never get a finding.
            let scores = if i % 2 == 0 {
                vec![("mining".to_owned(), 1.0)]
            } else {
                Vec::new()
            };
            let reading = Reading::new("north", &meter, START_MS, 5_000.0 + i as f64);
            let snapshot = MeterSnapshot {
                region: "north".into(),
                meter_id: meter,
                register_kwh: reading.energy_import_kwh,
                interval: Interval {
                    kind: IntervalKind::Normal,
                    start_ms: START_MS - 1_800_000,
                    end_ms: START_MS,
                    energy_kwh: base_kw / 2.0,
                },
                windows: vec![
                    ("24h".into(), stats(base_kw, load_factor, 24)),
                    ("7d".into(), stats(base_kw, load_factor, 168)),
                ],
                register_reversals: 0,
                readings: 336,
                scores,
            };
            (reading, snapshot)
        })
        .collect()
}

/// Converts the batch to the SDK's columns for the native run.
pub fn sdk_batch(batch: &[(Reading, MeterSnapshot)]) -> sdk::Batch {
    let mut builder = sdk::BatchBuilder::new();
    let mut windows = Vec::new();
    for (reading, snapshot) in batch {
        windows.clear();
        windows.extend(snapshot.windows.iter().map(|(name, w)| sdk::Window {
            name,
            hours: w.hours,
            hours_with_data: w.hours_with_data,
            energy_kwh: w.energy_kwh,
            mean_kw: w.mean_kw,
            peak_kw: w.peak_kw,
            base_kw: w.base_kw,
            load_factor: w.load_factor,
            night_day_ratio: w.night_day_ratio,
            cv: w.cv,
        }));
        let last_score = snapshot
            .scores
            .iter()
            .find(|(name, _)| name == "mining")
            .map(|(_, score)| *score);
        builder.push(&sdk::NewReading {
            region: &reading.region,
            meter: &reading.meter_id,
            last_score,
            timestamp_ms: reading.ts_ms,
            energy_import_kwh: reading.energy_import_kwh,
            energy_export_kwh: reading.energy_export_kwh,
            power_w: reading.power_w,
            voltage_v: &reading.voltage_v,
            current_a: &reading.current_a,
            events: &reading.events,
            register_kwh: snapshot.register_kwh,
            interval: sdk::Interval {
                kind: sdk::IntervalKind::Normal,
                start_ms: snapshot.interval.start_ms,
                end_ms: snapshot.interval.end_ms,
                energy_kwh: snapshot.interval.energy_kwh,
            },
            windows: &windows,
            register_reversals: snapshot.register_reversals,
            meter_readings: snapshot.readings,
        });
    }
    builder.build()
}

/// 48 flat hours for every meter.
struct FlatHistory;

impl HistorySource for FlatHistory {
    fn history(&self, _key: &str, hours: u32) -> RecentHours {
        let count = hours.min(48) as usize;
        RecentHours {
            start_ms: START_MS - count as i64 * 3_600_000,
            energy_kwh: vec![6.5; count],
            covered_secs: vec![3_600; count],
        }
    }
}

pub fn bank(path: &Path) -> PluginBank {
    let config = PluginsConfig {
        cache_dir: PathBuf::new(),
        ..PluginsConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let host = PluginHost::single(&config, metrics.clone(), path).expect("plugin loads");
    PluginBank::new(
        Arc::new(host),
        Arc::new(PluginStates::in_memory()),
        Arc::new(FlatHistory),
        metrics,
    )
}

pub fn run_plugin(bank: &mut PluginBank, items: &[MeterRef<'_>]) -> usize {
    let found = bank.run(items);
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    // Committed state goes to the store in the daemon; here it is dropped.
    bank.take_state();
    found.scores.len()
}

/// Converts findings to scores and alert records with JSON evidence, as the plugin bank does.
fn native_alerts(
    batch: &sdk::Batch,
    findings: Vec<sdk::Finding>,
) -> (Vec<(String, f64)>, Vec<AlertWrite>) {
    let mut scores = Vec::with_capacity(findings.len());
    let mut alerts = Vec::with_capacity(findings.len());
    for finding in findings {
        let meter = batch.reading(finding.reading as usize).meter();
        scores.push((format!("{}/{}", meter.region(), meter.id()), finding.score));
        // Built like the plugin bank builds it: one bulk collect into the JSON object.
        let value = |value: &sdk::Value| match value {
            sdk::Value::Flag(b) => serde_json::Value::from(*b),
            sdk::Value::Integer(i) => serde_json::Value::from(*i),
            sdk::Value::Number(n) => serde_json::Value::from(*n),
            sdk::Value::Text(t) => serde_json::Value::from(t.as_str()),
        };
        let evidence = finding
            .evidence
            .into_iter()
            .map(|entry| (entry.name.into_owned(), value(&entry.value)))
            .chain([
                ("score".to_owned(), serde_json::Value::from(finding.score)),
                ("plugin".to_owned(), serde_json::Value::from("mining")),
            ])
            .collect::<serde_json::Map<String, serde_json::Value>>();
        alerts.push(AlertWrite {
            region: meter.region().to_owned(),
            meter: meter.id().to_owned(),
            ts_ms: START_MS,
            draft: AlertDraft {
                kind: finding.kind.into_owned(),
                severity: Severity::Medium,
                message: finding.message,
                evidence: serde_json::Value::Object(evidence),
                source: AlertSource {
                    rule: "native:mining".into(),
                    content_hash: String::new(),
                },
            },
        });
    }
    (scores, alerts)
}

/// Returns the in-memory host of the native runs, with the same 48 flat hours as
/// [`FlatHistory`].
pub fn native_host() -> sdk::MemoryHost {
    let mut host = sdk::MemoryHost::with_defaults(&gridwatch_plugin_mining::settings());
    for i in 0..BATCH {
        let hours = (0..48)
            .map(|h| sdk::Hour {
                start_ms: START_MS - (48 - h) * 3_600_000,
                energy_kwh: 6.5,
                covered_secs: 3_600,
            })
            .collect();
        host.history
            .insert(("north".into(), format!("m-{i}")), hours);
    }
    host
}

/// Runs the detector natively on the daemon's readings: builds the batch columns, detects,
/// and turns the findings into scores and alert records.
pub fn run_native(host: &mut sdk::MemoryHost, batch: &[(Reading, MeterSnapshot)]) -> usize {
    let records = sdk_batch(batch);
    let findings = gridwatch_plugin_mining::detect_with(host, &records);
    let (scores, alerts) = native_alerts(&records, findings);
    scores.len() + alerts.len()
}
