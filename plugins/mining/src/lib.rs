//! Crypto-mining detector.
//!
//! A mining rig draws 1.4 to 4.8 kW day and night, so a meter that gets rigs shows a step up
//! in its base load: every hour of the day rises by about the same multiple of one rig's draw.
//! The detector finds that step in the meter's hourly history once the recent window (24 h by
//! default) lies wholly after it. The added load is each recent hour less the earlier median
//! of the same hour of the day, and the step is its median. It must:
//!
//! - reach `min_step_kw`, and stand `min_step_z` times above the earlier hours' spread;
//! - hold day and night: its low quantile at least `min_floor_share` of the median, and on
//!   hourly readings its spread at most `max_added_spread` of the median;
//! - lift the base load to `min_level_ratio` times the meter's earlier median, and the mean to
//!   `min_peer_ratio` times the region's typical premises (`peer_mean_kw`);
//! - leave the recent window's load factor and night/day ratio at their thresholds.
//!
//! Benign look-alikes fail one of these. EV charging and electric heating run only part of the
//! day, so the low quantile does not rise. A heat pump adds less than one rig, and more at
//! night than by day. PV export and a holiday home lower the import.
//!
//! Daily readings show no hours of the day. There a step under `coarse_quick_step_kw` waits
//! until it has held for `coarse_confirm_hours`. One under `heating_max_kw` in the heating
//! season also waits until the season ends, because electric heating spread over a day looks
//! like one rig.
//!
//! Some meters show no earlier, lower level: rigs from the first reading, or a step older than
//! the history and not kept in state. Those are judged on the long window alone, as flat, high
//! and round-the-clock by `min_base_kw`, `min_load_factor` and `min_night_day_ratio`.
//! Daily readings always look flat, so there this path reports a score but no alert.
//!
//! The detector judges a meter only on a reading that completes an hour and whose recent
//! window's base load reaches half of `min_step_kw` or `min_base_kw`, so the common path reads
//! no history or state and allocates nothing. It reports a score-only finding when the score
//! moves by `score_step` from the last reported one, and an alert finding on each judged
//! reading while the score is at or above `alert_score`. The onset and earlier level of a step
//! that scores 0.5 or more are kept in plugin state, so the step is still judged
//! once it is older than the history.

mod settings;
mod step;

use std::fmt::Write as _;

use gridwatch_plugin_sdk::prelude::*;

use settings::Thresholds;
pub use settings::settings;
use step::{Added, Before};

/// The mining detector.
pub struct Mining;

const KIND: &str = "mining";
const MS_PER_HOUR: i64 = 3_600_000;
/// Plugin state key of the step's onset and earlier level.
const STEP_KEY: &str = "step";
/// Highest score of a step that waits (for the end of the heating season or for confirmation),
/// and the lowest whose onset is kept in state.
const HELD_SCORE: f64 = 0.5;

impl Detector for Mining {
    fn describe() -> Info {
        Info {
            name: "mining".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Step up to a flat, high, round-the-clock load typical of crypto-mining rigs".into(),
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

/// Result of judging one reading.
struct Judgement<'a> {
    score: f64,
    /// The window judged: the recent window after a step, the long window without one.
    window: Window<'a>,
    /// The step, when the history or plugin state showed one.
    step: Option<StepFound>,
}

/// A step up in the meter's base load.
#[derive(Debug, Clone, Copy)]
struct StepFound {
    before: Before,
    /// Median load the step added, kW.
    step_kw: f64,
    /// Low quantile of the load the step added, kW.
    floor_kw: f64,
    /// The step over the earlier hours' robust spread.
    step_z: f64,
    /// High quantile of the load the step added, kW.
    high_kw: f64,
    rigs: u32,
    /// Whether the step waits for the end of the heating season.
    held_for_season: bool,
    /// Whether the step waits until it has held for `coarse_confirm_hours`.
    held_for_confirmation: bool,
    /// Hours from the newest back that stay above halfway up the step.
    run_hours: f64,
    /// Whether the readings are too coarse to show the hours of a day.
    coarse: bool,
}

/// Judges one reading and returns a finding when there is something to report.
///
/// `last_score` is the meter's last reported score, NaN when there is none; it is updated
/// when the reading reports a new one.
fn examine(
    host: &mut impl Host,
    limits: &Thresholds,
    reading: Reading<'_>,
    last_score: &mut f64,
) -> Option<Finding> {
    let Some(recent) = reading.window(&limits.recent_window) else {
        // Without the recent window no step can be found, but the long window's statistics
        // still judge a flat load, without reading history or state.
        return report(limits, reading, judge_flat(limits, reading), last_score);
    };
    let interval = reading.interval();
    if interval.end_ms.div_euclid(MS_PER_HOUR) <= interval.start_ms.div_euclid(MS_PER_HOUR) {
        // Judged once per completed hour: the history changes by the hour.
        return None;
    }
    // A NaN base load (no full hour in the window) fails the gate too.
    let gate_kw = limits.min_step_kw.min(limits.min_base_kw) / 2.0;
    let passes_gate = recent.base_kw >= gate_kw;
    if !passes_gate {
        if last_score.is_nan() || *last_score < limits.score_step {
            return None;
        }
        // The load fell: report the score of 0 once and forget the step.
        host.delete_state(reading.meter(), STEP_KEY);
        *last_score = 0.0;
        return Some(finding(reading, limits, 0.0, &recent, None));
    }

    let judgement = judge(host, limits, reading, recent)?;
    report(limits, reading, judgement, last_score)
}

/// Returns a finding for a judgement that alerts or moves the score by `score_step` or more
/// from `last_score`, which it then updates.
fn report(
    limits: &Thresholds,
    reading: Reading<'_>,
    judgement: Judgement<'_>,
    last_score: &mut f64,
) -> Option<Finding> {
    let last = if last_score.is_nan() {
        0.0
    } else {
        *last_score
    };
    let alerting = judgement.score >= limits.alert_score;
    if !alerting && (judgement.score - last).abs() < limits.score_step {
        return None;
    }
    *last_score = judgement.score;
    Some(finding(
        reading,
        limits,
        judgement.score,
        &judgement.window,
        judgement.step,
    ))
}

/// Judges a reading that passed the gate, from the meter's history and plugin state.
fn judge<'a>(
    host: &mut impl Host,
    limits: &Thresholds,
    reading: Reading<'a>,
    recent: Window<'a>,
) -> Option<Judgement<'a>> {
    let meter = reading.meter();
    let hours = step::hourly_kw(&host.history(meter, limits.history_hours));
    let stored = host
        .get_state(meter, STEP_KEY)
        .and_then(|bytes| Before::from_bytes(&bytes));
    let found = step::find_before(
        &hours,
        recent.hours,
        recent.base_kw,
        limits.low_quantile,
        limits.min_before_hours,
    );
    // The history's own step, unless the stored one is older: a farm whose onset has left the
    // history, or one whose rigs stopped for a while, keeps its first onset and earlier level.
    // A level found in the history that is not clearly lower, as in a flat load with some
    // noise, is no step: such a meter is judged on the long window.
    let found = found.filter(|b| recent.base_kw - b.low_kw >= limits.min_step_kw / 2.0);
    let before = match (found, stored) {
        (Some(found), Some(stored)) if stored.onset_ms <= found.onset_ms => Some(stored),
        (Some(found), _) => Some(found),
        (None, stored) => stored,
    };
    let Some(before) = before else {
        return Some(judge_flat(limits, reading));
    };

    let recent_from_ms =
        hours.last().map_or(0, |h| h.start_ms) - (i64::from(recent.hours) - 1) * MS_PER_HOUR;
    let added = step::added_load(&hours, before, recent_from_ms, limits.low_quantile)?;
    let run_hours = step::run_hours(&hours, (before.low_kw + recent.base_kw) / 2.0);
    let step = step_of(limits, reading, before, added, run_hours as f64);
    let score = step_score(limits, &recent, &step);
    // Only a step that scores at least as much as a held one is kept, so a passing rise does
    // not leave an old level behind that later rises would be measured against.
    if score >= HELD_SCORE && stored != Some(before) {
        host.set_state(meter, STEP_KEY, &before.to_bytes());
    } else if score < HELD_SCORE && stored.is_some() {
        host.delete_state(meter, STEP_KEY);
    }
    Some(Judgement {
        score,
        window: recent,
        step: Some(step),
    })
}

/// Measures the step of the recent window over the earlier level.
///
/// On daily readings a step smaller than `coarse_quick_step_kw` waits until it has held for
/// `coarse_confirm_hours`, because households' own rises of a few kW over some days look the
/// same there. One smaller than `heating_max_kw` also waits for the end of the heating season.
fn step_of(
    limits: &Thresholds,
    reading: Reading<'_>,
    before: Before,
    added: Added,
    run_hours: f64,
) -> StepFound {
    let step_kw = added.median_kw;
    let interval = reading.interval();
    let coarse = interval.end_ms - interval.start_ms >= limits.coarse_interval_ms;
    let month = step::month_of(reading.timestamp_ms());
    let heating = step::in_season(month, limits.heating_first_month, limits.heating_last_month);
    let unconfirmed =
        step_kw < limits.coarse_quick_step_kw && run_hours < limits.coarse_confirm_hours;
    StepFound {
        before,
        step_kw,
        floor_kw: added.low_kw,
        high_kw: added.high_kw,
        step_z: step_kw / added.before_spread_kw.max(limits.min_spread_kw),
        rigs: step::fit_rigs(step_kw, limits.rig_kw, limits.min_rig_kw, limits.max_rig_kw),
        held_for_season: coarse && heating && step_kw < limits.heating_max_kw,
        held_for_confirmation: coarse && unconfirmed,
        run_hours,
        coarse,
    }
}

/// Returns the weakest of the step's scores, each from 0 to 1. A held step scores at most
/// [`HELD_SCORE`].
fn step_score(limits: &Thresholds, recent: &Window<'_>, step: &StepFound) -> f64 {
    let coverage = limits.min_recent_coverage * f64::from(recent.hours);
    let level_ratio = recent.base_kw / step.before.median_kw.max(0.01);
    let score = [
        ramp(recent.hours_with_data, coverage),
        ramp(step.step_kw, limits.min_step_kw),
        ramp(step.floor_kw / step.step_kw, limits.min_floor_share),
        ramp(step.step_z, limits.min_step_z),
        flatness_score(limits, step),
        ramp(level_ratio, limits.min_level_ratio),
        ramp(recent.mean_kw / limits.peer_mean_kw, limits.min_peer_ratio),
        ramp(recent.load_factor, limits.min_load_factor),
        ramp(
            symmetric(recent.night_day_ratio),
            limits.min_night_day_ratio,
        ),
    ]
    .into_iter()
    .fold(1.0, f64::min);
    if step.held_for_season || step.held_for_confirmation {
        score.min(HELD_SCORE)
    } else {
        score
    }
}

/// Scores how evenly the step adds its load over the hours: 1 while the spread from its low
/// to its high quantile is at most `max_added_spread` of its median, 0 from twice that. Daily
/// readings show no hours of the day, so they score 1.
fn flatness_score(limits: &Thresholds, step: &StepFound) -> f64 {
    if step.coarse {
        return 1.0;
    }
    let spread = (step.high_kw - step.floor_kw) / step.step_kw;
    if spread <= 0.0 {
        return 1.0;
    }
    ramp(limits.max_added_spread / spread, 1.0)
}

/// Judges a meter without an earlier, lower level on the long window: flat, high and
/// round-the-clock, and above its peers.
fn judge_flat<'a>(limits: &Thresholds, reading: Reading<'a>) -> Judgement<'a> {
    let window = reading.window(&limits.window);
    let score = match window {
        Some(w) => [
            ramp(w.hours_with_data, limits.min_hours),
            ramp(w.base_kw, limits.min_base_kw),
            ramp(w.mean_kw / limits.peer_mean_kw, limits.min_peer_ratio),
            ramp(w.load_factor, limits.min_load_factor),
            ramp(symmetric(w.night_day_ratio), limits.min_night_day_ratio),
        ]
        .into_iter()
        .fold(1.0, f64::min),
        None => 0.0,
    };
    // Daily readings spread each day evenly over its hours, so they look flat whatever the
    // load. Without a step they cannot raise an alert.
    let interval = reading.interval();
    let coarse = interval.end_ms - interval.start_ms >= limits.coarse_interval_ms;
    let score = if coarse { score.min(HELD_SCORE) } else { score };
    Judgement {
        score,
        window: window.unwrap_or(
            reading
                .window(&limits.recent_window)
                .unwrap_or(EMPTY_WINDOW),
        ),
        step: None,
    }
}

const EMPTY_WINDOW: Window<'static> = Window {
    name: "",
    hours: 0,
    hours_with_data: 0.0,
    energy_kwh: 0.0,
    mean_kw: 0.0,
    peak_kw: 0.0,
    base_kw: 0.0,
    load_factor: f64::NAN,
    night_day_ratio: f64::NAN,
    cv: f64::NAN,
};

/// Returns a ratio or its inverse, whichever is at most 1, so a load heavier by night and one
/// heavier by day score alike. A window without night or without day hours, such as a 6-hour
/// one, has no ratio and returns 1, so the criterion is skipped.
fn symmetric(ratio: f64) -> f64 {
    if ratio.is_nan() {
        1.0
    } else if ratio > 1.0 {
        1.0 / ratio
    } else {
        ratio
    }
}

/// Rises linearly from 0 at half of `full` to 1 at `full`.
fn ramp(value: f64, full: f64) -> f64 {
    if full.is_nan() || full <= 0.0 || !value.is_finite() {
        return 0.0;
    }
    ((value / full - 0.5) * 2.0).clamp(0.0, 1.0)
}

fn finding(
    reading: Reading<'_>,
    limits: &Thresholds,
    score: f64,
    window: &Window<'_>,
    step: Option<StepFound>,
) -> Finding {
    let alerting = score >= limits.alert_score;
    let rigs = match step {
        Some(step) => step.rigs,
        None => step::fit_rigs(
            window.base_kw,
            limits.rig_kw,
            limits.min_rig_kw,
            limits.max_rig_kw,
        ),
    };
    let severity = match (alerting, f64::from(rigs) >= limits.high_rigs) {
        (false, _) => Severity::Info,
        (true, false) => Severity::Medium,
        (true, true) => Severity::High,
    };
    // Built piece by piece: `format!` with `{:.1}` costs more than the rest of the finding,
    // and several times more in WebAssembly than natively.
    let mut message = String::with_capacity(80);
    match step {
        Some(step) => {
            message.push_str("base load up ");
            push_tenths(&mut message, step.step_kw);
            message.push_str(" kW to ");
        }
        None => {
            message.push_str("flat load of ");
            push_tenths(&mut message, window.mean_kw);
            message.push_str(" kW mean, ");
        }
    }
    push_tenths(&mut message, window.base_kw);
    message.push_str(if step.is_some() {
        " kW over "
    } else {
        " kW base over "
    });
    message.push_str(itoa::Buffer::new().format(window.hours));
    message.push_str(" h, about ");
    message.push_str(itoa::Buffer::new().format(rigs));
    message.push_str(" rig(s)");
    Finding {
        reading: reading.index(),
        kind: KIND.into(),
        severity,
        score,
        message,
        evidence: evidence(window, rigs, step),
    }
}

/// Appends `value` with one decimal, rounded half away from zero, as in "6.8". NaN, the
/// infinities and values of 10^14 or more are written by `{:.1}`.
fn push_tenths(out: &mut String, value: f64) {
    let tenths = (value * 10.0).round();
    if tenths.is_nan() || tenths.abs() >= 1e15 {
        // Writing to a `String` does not fail.
        let _ = write!(out, "{value:.1}");
        return;
    }
    // Exact: the magnitude is below 10^15.
    let tenths = tenths as i64;
    if tenths < 0 {
        out.push('-');
    }
    let tenths = tenths.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(tenths / 10));
    out.push('.');
    out.push(char::from(b'0' + (tenths % 10) as u8));
}

fn evidence(window: &Window<'_>, rigs: u32, step: Option<StepFound>) -> Vec<Entry> {
    // Seven entries, and ten more with a step.
    let mut evidence = Vec::with_capacity(17);
    evidence.extend([
        entry("window", Value::Text(window.name.to_owned())),
        entry("mean_kw", Value::Number(window.mean_kw)),
        entry("base_kw", Value::Number(window.base_kw)),
        entry("load_factor", Value::Number(window.load_factor)),
        entry("night_day_ratio", Value::Number(window.night_day_ratio)),
        entry("hours_with_data", Value::Number(window.hours_with_data)),
        entry("estimated_rigs", Value::Integer(i64::from(rigs))),
    ]);
    if let Some(step) = step {
        evidence.extend([
            entry("onset_ms", Value::Integer(step.before.onset_ms)),
            entry("step_kw", Value::Number(step.step_kw)),
            entry("floor_kw", Value::Number(step.floor_kw)),
            entry("step_z", Value::Number(step.step_z)),
            entry("high_kw", Value::Number(step.high_kw)),
            entry("rig_kw", Value::Number(step.step_kw / f64::from(rigs))),
            entry("before_base_kw", Value::Number(step.before.low_kw)),
            entry("before_median_kw", Value::Number(step.before.median_kw)),
            entry("run_hours", Value::Number(step.run_hours)),
            entry("held_for_heating_season", Value::Flag(step.held_for_season)),
            entry(
                "held_for_confirmation",
                Value::Flag(step.held_for_confirmation),
            ),
        ]);
    }
    evidence
}

#[cfg(test)]
mod tests;
