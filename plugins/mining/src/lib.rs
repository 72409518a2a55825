//! Flat-load crypto-mining detector.
//!
//! A mining rig draws a few kW day and night, so a meter with rigs shows a high base load, a
//! load factor near 1 and a night/day ratio near 1 over days. The detector scores each of these
//! against the region's thresholds and takes the weakest as the meter's score: a meter must be
//! high, flat and round-the-clock to score high.
//!
//! It reports a score-only finding when a meter's score moves by `score_step` or more from the
//! last one it reported, and an alert finding on every reading while the score is at or above
//! `alert_score`. The last reported score comes with the batch, as the daemon keeps it. The estimated
//! rig count is the base load divided by one rig's draw. The onset is the first reading that
//! reached the alert score, kept in plugin state with the step in mean power around it.

use gridwatch_plugin_sdk::prelude::*;

/// The flat-load mining detector.
pub struct Mining;

const KIND: &str = "mining";

impl Detector for Mining {
    fn describe() -> Info {
        Info {
            name: "mining".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Flat, high, round-the-clock load typical of crypto-mining rigs".into(),
            kinds: vec![KIND.into()],
            settings: settings(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        detect_with(&mut WasmHost, &batch)
    }
}

export_detector!(Mining);

/// Runs the detector on a batch with the given host; the plugin passes the daemon's, native
/// tests and benchmarks pass a [`MemoryHost`].
pub fn detect_with(host: &mut impl Host, batch: &Batch) -> Vec<Finding> {
    // Settings are read once per region and batch, not once per reading.
    let mut regions: Vec<Option<Thresholds>> = Vec::new();
    regions.resize_with(batch.regions.len(), || None);
    // The last reported score per meter, updated as this batch reports new ones.
    let mut last_scores = batch.last_score.clone();
    let mut findings = Vec::new();
    for reading in batch.readings() {
        let meter = reading.meter();
        let region = batch.meter_region[meter.index() as usize] as usize;
        let limits =
            regions[region].get_or_insert_with(|| Thresholds::for_region(host, meter.region()));
        let last = &mut last_scores[meter.index() as usize];
        findings.extend(examine(host, limits, reading, last));
    }
    findings
}

/// Returns the settings the detector declares, with their defaults.
pub fn settings() -> Vec<SettingSpec> {
    vec![
        setting_spec(
            "window",
            Value::Text("7d".into()),
            "Rolling window to judge, by name",
        ),
        setting_spec(
            "min_hours_with_data",
            Value::Number(120.0),
            "Hours of the window that must have readings",
        ),
        setting_spec(
            "min_base_kw",
            Value::Number(2.0),
            "Base load (lowest hourly mean) that scores fully, kW",
        ),
        setting_spec(
            "min_load_factor",
            Value::Number(0.35),
            "Load factor (mean over hourly peak) that scores fully",
        ),
        setting_spec(
            "min_night_day_ratio",
            Value::Number(0.8),
            "Night over day mean power that scores fully",
        ),
        setting_spec(
            "rig_kw",
            Value::Number(3.25),
            "Draw of one rig, kW, for the rig estimate",
        ),
        setting_spec(
            "alert_score",
            Value::Number(0.99),
            "Score from which a finding raises an alert",
        ),
        setting_spec(
            "high_rigs",
            Value::Integer(3),
            "Estimated rigs from which the alert is high",
        ),
        setting_spec(
            "score_step",
            Value::Number(0.05),
            "Score change that reports a new score-only finding",
        ),
    ]
}

/// Thresholds of one region.
struct Thresholds {
    window: String,
    min_hours: f64,
    min_base_kw: f64,
    min_load_factor: f64,
    min_night_day_ratio: f64,
    rig_kw: f64,
    alert_score: f64,
    high_rigs: f64,
    score_step: f64,
}

impl Thresholds {
    fn for_region(host: &mut impl Host, region: &str) -> Thresholds {
        Thresholds {
            window: host.setting_text(region, "window"),
            min_hours: host.setting_f64(region, "min_hours_with_data"),
            min_base_kw: host.setting_f64(region, "min_base_kw"),
            min_load_factor: host.setting_f64(region, "min_load_factor"),
            min_night_day_ratio: host.setting_f64(region, "min_night_day_ratio"),
            rig_kw: host.setting_f64(region, "rig_kw"),
            alert_score: host.setting_f64(region, "alert_score"),
            high_rigs: host.setting_f64(region, "high_rigs"),
            score_step: host.setting_f64(region, "score_step"),
        }
    }
}

/// Scores one reading and returns a finding when there is something to report.
///
/// `last_score` is the meter's last reported score, NaN when there is none; it is updated
/// when the reading reports a new one.
fn examine(
    host: &mut impl Host,
    limits: &Thresholds,
    reading: Reading<'_>,
    last_score: &mut f64,
) -> Option<Finding> {
    let window = reading.window(&limits.window)?;
    let score = score(&window, limits);

    let last = if last_score.is_nan() {
        0.0
    } else {
        *last_score
    };
    let alerting = score >= limits.alert_score;
    if !alerting && (score - last).abs() < limits.score_step {
        return None;
    }
    *last_score = score;

    let onset = onset(host, reading.meter(), alerting, reading.timestamp_ms());
    let rigs = (window.base_kw / limits.rig_kw).round().max(1.0);
    let severity = match (alerting, rigs >= limits.high_rigs) {
        (false, _) => Severity::Info,
        (true, false) => Severity::Medium,
        (true, true) => Severity::High,
    };
    Some(Finding {
        reading: reading.index(),
        kind: KIND.into(),
        severity,
        score,
        message: format!(
            "flat load of {:.1} kW mean, {:.1} kW base over {} h, about {rigs} rig(s)",
            window.mean_kw, window.base_kw, window.hours
        ),
        evidence: evidence(&window, rigs, onset),
    })
}

/// Returns the weakest of the level, flatness, night and coverage scores, each from 0 to 1.
fn score(window: &Window<'_>, limits: &Thresholds) -> f64 {
    [
        ramp(window.hours_with_data, limits.min_hours),
        ramp(window.base_kw, limits.min_base_kw),
        ramp(window.load_factor, limits.min_load_factor),
        ramp(window.night_day_ratio, limits.min_night_day_ratio),
    ]
    .into_iter()
    .fold(1.0, f64::min)
}

/// Rises linearly from 0 at half of `full` to 1 at `full`.
fn ramp(value: f64, full: f64) -> f64 {
    if full.is_nan() || full <= 0.0 || !value.is_finite() {
        return 0.0;
    }
    ((value / full - 0.5) * 2.0).clamp(0.0, 1.0)
}

/// The first reading that reached the alert score, kept until the score drops.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Onset {
    /// Its time, Unix milliseconds.
    ts_ms: i64,
    /// Mean power of the 24 hours before it subtracted from that of the 24 hours up to it, kW:
    /// the size of the step the rigs added, when they were switched on within that span.
    step_kw: f64,
}

/// Returns the meter's onset, recording it on the first alerting reading.
fn onset(host: &mut impl Host, meter: Meter<'_>, alerting: bool, ts_ms: i64) -> Option<Onset> {
    if !alerting {
        host.delete_state(meter, "onset");
        return None;
    }
    let stored = host.get_state(meter, "onset").and_then(|bytes| {
        let ts: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let step: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        Some(Onset {
            ts_ms: i64::from_le_bytes(ts),
            step_kw: f64::from_le_bytes(step),
        })
    });
    if let Some(onset) = stored {
        return Some(onset);
    }
    let onset = Onset {
        ts_ms,
        step_kw: step_kw(host, meter),
    };
    let mut bytes = onset.ts_ms.to_le_bytes().to_vec();
    bytes.extend_from_slice(&onset.step_kw.to_le_bytes());
    host.set_state(meter, "onset", &bytes);
    Some(onset)
}

/// Mean power of the newest 24 hours minus that of the 24 before, from the meter's history.
fn step_kw(host: &mut impl Host, meter: Meter<'_>) -> f64 {
    let hours = host.history(meter, 48);
    if hours.len() < 48 {
        return 0.0;
    }
    let (before, after) = hours.split_at(24);
    let mean = |h: &[Hour]| h.iter().map(|h| h.energy_kwh).sum::<f64>() / h.len() as f64;
    mean(after) - mean(before)
}

fn evidence(window: &Window<'_>, rigs: f64, onset: Option<Onset>) -> Vec<Entry> {
    // Seven entries, and two more with an onset.
    let mut evidence = Vec::with_capacity(9);
    evidence.extend([
        entry("window", Value::Text(window.name.to_owned())),
        entry("mean_kw", Value::Number(window.mean_kw)),
        entry("base_kw", Value::Number(window.base_kw)),
        entry("load_factor", Value::Number(window.load_factor)),
        entry("night_day_ratio", Value::Number(window.night_day_ratio)),
        entry("hours_with_data", Value::Number(window.hours_with_data)),
        entry("estimated_rigs", Value::Integer(rigs as i64)),
    ]);
    if let Some(onset) = onset {
        evidence.push(entry("onset_ms", Value::Integer(onset.ts_ms)));
        evidence.push(entry("step_kw", Value::Number(onset.step_kw)));
    }
    evidence
}

#[cfg(test)]
mod tests {
    use gridwatch_plugin_sdk::prelude::*;

    use super::{detect_with, ramp, settings};

    /// Builds a batch of one reading whose `7d` window has the given base load, load factor
    /// and hours, with the meter's last score.
    fn batch(meter: &str, ts_ms: i64, stats: (f64, f64, f64), last_score: Option<f64>) -> Batch {
        let (base_kw, load_factor, hours) = stats;
        let windows = [Window {
            name: "7d",
            hours: 168,
            hours_with_data: hours,
            energy_kwh: base_kw * hours,
            mean_kw: base_kw * 1.05,
            peak_kw: base_kw * 1.05 / load_factor,
            base_kw,
            load_factor,
            night_day_ratio: 1.0,
            cv: 0.05,
        }];
        let mut builder = BatchBuilder::new();
        builder.push(&NewReading {
            region: "north",
            meter,
            last_score,
            timestamp_ms: ts_ms,
            energy_import_kwh: 1_000.0,
            energy_export_kwh: None,
            power_w: None,
            voltage_v: &[],
            current_a: &[],
            events: &[],
            register_kwh: 1_000.0,
            interval: Interval {
                kind: IntervalKind::Normal,
                start_ms: ts_ms - 1_800_000,
                end_ms: ts_ms,
                energy_kwh: base_kw / 2.0,
            },
            windows: &windows,
            register_reversals: 0,
            meter_readings: 300,
        });
        builder.build()
    }

    #[test]
    fn flat_high_load_raises_alert_with_onset() {
        let mut host = MemoryHost::with_defaults(&settings());
        let first = detect_with(&mut host, &batch("rig", 1_000, (9.8, 0.9, 150.0), None));
        let second = detect_with(
            &mut host,
            &batch("rig", 2_000, (9.8, 0.9, 151.0), Some(1.0)),
        );

        assert_eq!(first.len(), 1);
        assert_eq!(first[0].severity, Severity::High, "three rigs of 3.25 kW");
        assert_eq!(first[0].score, 1.0);
        let onset = second[0].evidence.iter().find(|e| e.name == "onset_ms");
        assert!(
            matches!(
                onset,
                Some(Entry {
                    value: Value::Integer(1_000),
                    ..
                })
            ),
            "onset is the first alerting reading: {onset:?}"
        );
    }

    #[test]
    fn household_load_reports_nothing() {
        let mut host = MemoryHost::with_defaults(&settings());
        let found = detect_with(&mut host, &batch("house", 1_000, (0.2, 0.3, 168.0), None));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn partial_score_is_reported_once_per_step() {
        let mut host = MemoryHost::with_defaults(&settings());
        // 90 of the 120 hours needed: coverage scores 0.5, so the meter scores 0.5.
        let first = detect_with(&mut host, &batch("rig", 1_000, (6.5, 0.9, 90.0), None));
        let same = detect_with(&mut host, &batch("rig", 2_000, (6.5, 0.9, 90.5), Some(0.5)));

        assert_eq!(first.len(), 1);
        assert_eq!(first[0].severity, Severity::Info);
        assert!((first[0].score - 0.5).abs() < 1e-9, "{}", first[0].score);
        assert!(
            same.is_empty(),
            "a change under score_step is not reported: {same:?}"
        );
    }

    #[test]
    fn ramp_scores_from_half_to_full() {
        assert_eq!(ramp(1.0, 2.0), 0.0);
        assert_eq!(ramp(1.5, 2.0), 0.5);
        assert_eq!(ramp(2.0, 2.0), 1.0);
        assert_eq!(ramp(9.0, 2.0), 1.0);
    }

    #[test]
    fn ramp_is_zero_for_unusable_values() {
        assert_eq!(ramp(f64::NAN, 2.0), 0.0);
        assert_eq!(ramp(5.0, 0.0), 0.0);
        assert_eq!(ramp(5.0, f64::NAN), 0.0);
    }
}
