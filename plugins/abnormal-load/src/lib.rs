//! Abnormal-load detector.
//!
//! Each complete hour of a meter's energy is compared with the same hour of the week in the
//! meter's earlier weeks, taken from the daemon's hourly history. The comparison is the robust
//! z-score: the hour's energy minus the median of those weeks, divided by 1.4826 times their
//! median absolute deviation (MAD), which makes it comparable to a z-score for normally
//! distributed data. A meter whose hours stay beyond `z_threshold` in the same direction for
//! `min_consecutive_hours` hours raises an `abnormal_load` alert. An hour in which more than
//! `max_peer_share` of the region's meters in the same call are abnormal in the same direction
//! counts as normal, because the whole region changed, not the meter.
//!
//! The history reaches back as far as the longest `[state]` window, so the daemon needs a
//! window of at least `history_weeks + 1` weeks. The default windows of 24 hours and 7 days
//! give no earlier week, and the detector then reports nothing. Windows are at most 28 days
//! long, which allows three earlier weeks.

mod baseline;

use std::sync::atomic::{AtomicBool, Ordering};

use gridwatch_plugin_sdk::prelude::*;

use std::collections::HashMap;

pub use baseline::{Judged, Limits, Peers, Run, robust_z};

/// The abnormal-load detector.
pub struct AbnormalLoad;

const KIND: &str = "abnormal_load";

impl Detector for AbnormalLoad {
    fn describe() -> Info {
        Info {
            name: "abnormal-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Hours of energy far from the meter's own hour-of-week baseline, by \
                          median and MAD"
                .into(),
            kinds: vec![KIND.into()],
            settings: settings(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        let outcome = detect_with(&mut WasmHost, &batch);
        // Once per instance: the cause is the daemon's config, which every call would repeat.
        static WARNED: AtomicBool = AtomicBool::new(false);
        if let Some((got, needed)) = outcome.short_history
            && !WARNED.swap(true, Ordering::Relaxed)
        {
            log(
                Level::Warn,
                &format!(
                    "history holds {got} hours, fewer than the {needed} hours that history_weeks \
                     needs; add a longer [state] window"
                ),
            );
        }
        outcome.findings
    }
}

export_detector!(AbnormalLoad);

/// Findings and history shortfall of one call.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Findings of the call.
    pub findings: Vec<Finding>,
    /// Hours of history returned and hours requested, when the daemon keeps less history than
    /// the settings need.
    pub short_history: Option<(usize, usize)>,
}

/// Runs the detector on a batch with the given host; the plugin passes the daemon's, native
/// tests pass a [`MemoryHost`].
pub fn detect_with(host: &mut impl Host, batch: &Batch) -> Outcome {
    // Settings are read once per region and batch, and meter state once per meter and batch.
    let mut regions: Vec<Option<Limits>> = Vec::new();
    regions.resize_with(batch.regions.len(), || None);
    let mut runs: Vec<Option<Run>> = vec![None; batch.meter_count()];
    let mut outcome = Outcome::default();

    // Every reading's hours are judged first, so that each hour can be compared with the same
    // hour of the region's other meters in the call.
    let mut judged: Vec<Vec<Option<Judged>>> = Vec::with_capacity(batch.len());
    let mut peers: HashMap<(u32, i64), (u32, u32, u32)> = HashMap::new();
    for reading in batch.readings() {
        let meter = reading.meter();
        let region = batch.meter_region[meter.index() as usize];
        let limits = regions[region as usize]
            .get_or_insert_with(|| Limits::for_region(host, meter.region()));
        let run = runs[meter.index() as usize].get_or_insert_with(|| Run::load(host, meter));
        let judgement = baseline::judge_hours(host, limits, reading, run);
        if let Some(short) = judgement.short_history {
            outcome.short_history = Some(short);
        }
        for hour in judgement.hours.iter().flatten() {
            let counts = peers.entry((region, hour.hour)).or_default();
            counts.0 += 1;
            match hour.sign {
                1 => counts.1 += 1,
                -1 => counts.2 += 1,
                _ => {}
            }
        }
        judged.push(judgement.hours);
    }

    for (reading, hours) in batch.readings().zip(&judged) {
        let meter = reading.meter();
        let region = batch.meter_region[meter.index() as usize];
        let Some(limits) = regions[region as usize].as_ref() else {
            continue;
        };
        let Some(run) = runs[meter.index() as usize].as_mut() else {
            continue;
        };
        let crowd = |hour: i64, sign: i8| {
            let (judged, above, below) = peers.get(&(region, hour)).copied().unwrap_or_default();
            let abnormal = match sign {
                1 => above,
                -1 => below,
                _ => 0,
            };
            Peers { judged, abnormal }
        };
        outcome
            .findings
            .extend(baseline::advance(limits, reading, run, hours, crowd));
    }

    for (index, run) in runs.iter().enumerate() {
        if let Some(run) = run {
            run.store(host, batch.meter_at(index));
        }
    }
    outcome
}

/// Returns the settings the detector declares, with their defaults.
pub fn settings() -> Vec<SettingSpec> {
    vec![
        setting_spec(
            "history_weeks",
            Value::Integer(3),
            "Earlier weeks whose same hour of the week form the baseline",
        ),
        setting_spec(
            "min_weeks",
            Value::Integer(3),
            "Earlier weeks with data that an hour needs before it is judged",
        ),
        setting_spec(
            "min_hour_coverage",
            Value::Number(0.75),
            "Share of an hour that readings must cover for the hour to count",
        ),
        setting_spec(
            "z_threshold",
            Value::Number(3.5),
            "Robust z-score (deviation over 1.4826 MAD) from which an hour is abnormal",
        ),
        setting_spec(
            "high_z",
            Value::Number(7.0),
            "Robust z-score that every hour of a run must reach for a high alert",
        ),
        setting_spec(
            "min_consecutive_hours",
            Value::Integer(3),
            "Abnormal hours in a row, in the same direction, that raise an alert",
        ),
        setting_spec(
            "min_spread_kwh",
            Value::Number(0.05),
            "Smallest spread (1.4826 MAD) used for the z-score, kWh, so a constant baseline \
             does not make every small change abnormal",
        ),
        setting_spec(
            "min_spread_fraction",
            Value::Number(0.1),
            "Smallest spread used for the z-score, as a share of the baseline median",
        ),
        setting_spec(
            "direction",
            Value::Text("both".into()),
            "Deviations to report: above, below or both",
        ),
        setting_spec(
            "min_peers",
            Value::Integer(5),
            "Meters of the region judged for the same hour in one call before peers are compared",
        ),
        setting_spec(
            "max_peer_share",
            Value::Number(0.5),
            "Share of those meters abnormal in the same direction above which the hour counts as \
             a region-wide change, not the meter's",
        ),
        setting_spec(
            "max_catch_up_hours",
            Value::Integer(168),
            "Most complete hours judged for one reading after a gap in the meter's readings",
        ),
    ]
}

#[cfg(test)]
mod tests;
