//! The three checks, each run when a reading completes an hour or a day of a meter's profile.

use gridwatch_plugin_sdk::prelude::*;

use crate::profile::{Check, DAY_MS, Day, HOUR_MS, Hour, MIN_HOUR_COVERAGE, Profile};

/// Longest `baseline_days` or `recent_days`, so a profile stays far below the daemon's limit
/// of 64 KiB per state value (each day takes 22 bytes).
const MAX_WINDOW_DAYS: f64 = 366.0;

/// Settings of one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Hourly energy at or below which an hour counts as zero, kWh.
    pub zero_max_kwh: f64,
    /// Minimum zero hours in a row that make a qualifying run.
    pub min_zero_hours: u32,
    /// Maximum zero hours in a row that make a qualifying run.
    pub max_zero_hours: u32,
    /// Qualifying runs in a row, over the same hours of the day, that raise a finding.
    pub min_zero_days: u32,
    /// Maximum time from the end of one qualifying run to the start of the next for the two
    /// to count as a pattern, hours.
    pub max_pattern_gap_hours: f64,
    /// Mean hourly energy the meter must have had before a zero run, kWh.
    pub min_load_kwh: f64,
    /// Coefficient of variation of a day's hours at or below which the day is flat.
    pub max_flat_variation: f64,
    /// Median coefficient of variation of the baseline days from which a flat day is suspect.
    pub min_baseline_variation: f64,
    /// Flat days in a row that raise a finding.
    pub min_flat_days: usize,
    /// Baseline days with resolved hours that the flat-profile check needs.
    pub min_flat_baseline_days: usize,
    /// Maximum flat days in the baseline. A meter whose history already has flat days, such as
    /// estimated readings, gives no evidence by flat days.
    pub max_baseline_flat_days: usize,
    /// Lowest energy of the flat days as a share of the baseline days' median.
    pub min_flat_level_ratio: f64,
    /// Highest energy of the flat days as a share of the baseline days' median.
    pub max_flat_level_ratio: f64,
    /// Share of a day's 24 hours that readings must cover for the day to count.
    pub min_day_coverage: f64,
    /// Days before the recent window that form the baseline.
    pub baseline_days: usize,
    /// Complete days the baseline needs before the level-drop check runs.
    pub min_baseline_days: usize,
    /// Days whose median energy is compared with the baseline.
    pub recent_days: usize,
    /// Newest days of the recent window whose median must also lie in the theft band.
    pub confirm_days: usize,
    /// Highest share of the baseline's median daily energy that counts as a drop.
    pub drop_ratio: f64,
    /// Share of the baseline below which a drop counts as a vacant home, not theft.
    pub vacancy_ratio: f64,
    /// Median daily energy of the baseline below which no drop is judged, kWh.
    pub min_baseline_kwh: f64,
    /// Lowest ratio of the smaller to the larger median of the baseline's two halves. A
    /// baseline that changed more than this contains a step of its own and is not judged.
    pub min_baseline_stability: f64,
    /// Hours after a finding of one check before the same check raises another.
    pub realert_hours: f64,
}

impl Limits {
    /// Reads the region's settings.
    pub fn for_region(host: &mut impl Host, region: &str) -> Limits {
        let mut number = |name: &str| host.setting_f64(region, name);
        let count = |value: f64| value.max(1.0) as usize;
        Limits {
            zero_max_kwh: number("zero_max_kwh"),
            min_zero_hours: count(number("min_zero_hours")) as u32,
            max_zero_hours: count(number("max_zero_hours")) as u32,
            min_zero_days: count(number("min_zero_days")) as u32,
            max_pattern_gap_hours: number("max_pattern_gap_hours"),
            min_load_kwh: number("min_load_kwh"),
            max_flat_variation: number("max_flat_variation"),
            min_baseline_variation: number("min_baseline_variation"),
            min_flat_days: count(number("min_flat_days")),
            min_flat_baseline_days: count(number("min_flat_baseline_days")),
            max_baseline_flat_days: number("max_baseline_flat_days").max(0.0) as usize,
            min_flat_level_ratio: number("min_flat_level_ratio"),
            max_flat_level_ratio: number("max_flat_level_ratio"),
            min_day_coverage: number("min_day_coverage"),
            baseline_days: count(number("baseline_days").min(MAX_WINDOW_DAYS)),
            min_baseline_days: count(number("min_baseline_days")),
            recent_days: count(number("recent_days").min(MAX_WINDOW_DAYS)),
            confirm_days: count(number("confirm_days")),
            drop_ratio: number("drop_ratio"),
            vacancy_ratio: number("vacancy_ratio"),
            min_baseline_kwh: number("min_baseline_kwh"),
            min_baseline_stability: number("min_baseline_stability"),
            realert_hours: number("realert_hours"),
        }
    }

    /// Returns the days of history the checks need.
    pub fn max_days(&self) -> usize {
        (self.baseline_days + self.recent_days)
            .max(self.min_flat_days + self.min_flat_baseline_days)
    }

    fn complete(&self, day: &Day) -> bool {
        f64::from(day.covered_hours) >= self.min_day_coverage * 24.0
    }

    fn resolved(&self, day: &Day) -> bool {
        f64::from(day.resolved_hours) >= self.min_day_coverage * 24.0 && !day.variation.is_nan()
    }
}

/// A check's result: what a finding reports.
#[derive(Debug, Clone)]
pub struct Signal {
    /// The check.
    pub check: Check,
    /// Time the signal refers to: the end of the hour or day that completed it, Unix ms.
    pub at_ms: i64,
    /// Score from 0 to 1.
    pub score: f64,
    /// Human-readable cause with its values.
    pub message: String,
    /// Values behind the message.
    pub evidence: Vec<Entry>,
}

/// Judges one completed hour for zero runs and updates the meter's run, pattern and load.
///
/// A run is judged when it ends: it qualifies with `min_zero_hours` to `max_zero_hours` hours
/// after a load of at least `min_load_kwh`. Longer runs are outages or vacancies. A finding
/// needs `min_zero_days` qualifying runs in a row, each within `max_pattern_gap_hours` of the
/// previous one and sharing an hour of the day with it, so the zeros recur daily.
pub fn judge_hour(limits: &Limits, profile: &mut Profile, hour: &Hour) -> Option<Signal> {
    if hour.covered < MIN_HOUR_COVERAGE || hour.exported {
        // Missing data or exported energy explain a zero hour, so the run is dropped.
        profile.zero_hours = 0;
        return None;
    }
    // The load is a 24-hour exponential moving average of all resolved hours, zero ones too,
    // so a meter that is nearly always at zero has almost none.
    let load_before_hour = profile.load_kwh;
    profile.load_kwh += (hour.energy_kwh - profile.load_kwh) / 24.0;

    if f64::from(hour.energy_kwh) <= limits.zero_max_kwh {
        if profile.zero_hours == 0 {
            profile.zero_start_ms = hour.start_ms;
            profile.load_before_zero_kwh = load_before_hour;
        }
        profile.zero_hours += 1;
        let single = limits.min_zero_days <= 1 && profile.zero_hours == limits.min_zero_hours;
        let load_kwh = f64::from(profile.load_before_zero_kwh);
        if single && load_kwh >= limits.min_load_kwh {
            // A single run is judged as soon as it is long enough, because data of a day or
            // less may end before the run does.
            profile.pattern_days = 1;
            profile.pattern_mask = day_hours_mask(profile.zero_start_ms, profile.zero_hours);
            profile.pattern_end_ms = hour.start_ms + HOUR_MS;
            return Some(zero_signal(profile, hour.start_ms + HOUR_MS, load_kwh));
        }
        return None;
    }

    let hours = std::mem::take(&mut profile.zero_hours);
    let load_kwh = f64::from(profile.load_before_zero_kwh);
    let qualifies = (limits.min_zero_hours..=limits.max_zero_hours).contains(&hours)
        && load_kwh >= limits.min_load_kwh;
    if !qualifies || limits.min_zero_days <= 1 {
        return None;
    }

    let mask = day_hours_mask(profile.zero_start_ms, hours);
    let gap_ms = profile.zero_start_ms - profile.pattern_end_ms;
    let recurs = profile.pattern_days > 0
        && mask & profile.pattern_mask != 0
        && (gap_ms as f64) <= limits.max_pattern_gap_hours * HOUR_MS as f64;
    profile.pattern_days = if recurs { profile.pattern_days + 1 } else { 1 };
    profile.pattern_mask = mask;
    profile.pattern_end_ms = hour.start_ms;
    if profile.pattern_days < limits.min_zero_days {
        return None;
    }

    Some(zero_signal(profile, hour.start_ms, load_kwh))
}

fn zero_signal(profile: &Profile, at_ms: i64, load_kwh: f64) -> Signal {
    let hours = (at_ms - profile.zero_start_ms) / HOUR_MS;
    let days = profile.pattern_days;
    let first_hour = profile.zero_start_ms.rem_euclid(DAY_MS) / HOUR_MS;
    Signal {
        check: Check::ZeroRun,
        at_ms,
        score: 0.9,
        message: format!(
            "no consumption for {hours} hours from {first_hour:02}:00 UTC on {days} day(s) in \
             a row, after a mean load of {load_kwh:.3} kWh per hour, with no energy exported"
        ),
        evidence: vec![
            entry("zero_hours", Value::Integer(hours)),
            entry("zero_since_ms", Value::Integer(profile.zero_start_ms)),
            entry("pattern_days", Value::Integer(i64::from(days))),
            entry("load_before_kwh", Value::Number(load_kwh)),
        ],
    }
}

/// Returns the hours of the day (UTC) that a run of `hours` hours from `start_ms` covers, one
/// bit per hour.
fn day_hours_mask(start_ms: i64, hours: u32) -> u32 {
    let first = (start_ms.rem_euclid(DAY_MS) / HOUR_MS) as u32;
    (0..hours.min(24)).fold(0, |mask, k| mask | 1 << ((first + k) % 24))
}

/// Judges the newest complete day for a flattened daily profile.
pub fn judge_flat_day(limits: &Limits, days: &[Day]) -> Option<Signal> {
    let flat_count = limits.min_flat_days;
    if days.len() < flat_count {
        return None;
    }
    let (earlier, flat) = days.split_at(days.len() - flat_count);
    let newest = flat.last()?;
    let consecutive = flat.first()?.day + flat_count as i64 - 1 == newest.day;
    let all_flat = flat.iter().all(|d| {
        limits.resolved(d) && f64::from(d.variation) <= limits.max_flat_variation && !d.exported
    });
    if !consecutive || !all_flat {
        return None;
    }

    let baseline: Vec<&Day> = earlier.iter().filter(|d| limits.resolved(d)).collect();
    let flat_before = baseline
        .iter()
        .filter(|d| f64::from(d.variation) <= limits.max_flat_variation)
        .count();
    if baseline.len() < limits.min_flat_baseline_days || flat_before > limits.max_baseline_flat_days
    {
        return None;
    }
    let baseline_variation = median(baseline.iter().map(|d| f64::from(d.variation)).collect())?;
    let baseline_kwh = median(baseline.iter().map(|d| f64::from(d.energy_kwh)).collect())?;
    let flat_kwh = flat.iter().map(|d| f64::from(d.energy_kwh)).sum::<f64>() / flat_count as f64;
    let level = flat_kwh / baseline_kwh;
    let variation = flat
        .iter()
        .map(|d| f64::from(d.variation))
        .fold(0.0, f64::max);
    let level_kept = (limits.min_flat_level_ratio..=limits.max_flat_level_ratio).contains(&level);
    if baseline_variation < limits.min_baseline_variation || !level_kept {
        return None;
    }
    Some(Signal {
        check: Check::FlatProfile,
        at_ms: (newest.day + 1) * DAY_MS,
        score: 0.9,
        message: format!(
            "hourly consumption flat for {flat_count} days (variation {variation:.3}, earlier \
             {baseline_variation:.3}) at {:.0} % of the usual daily energy",
            level * 100.0
        ),
        evidence: vec![
            entry("flat_days", Value::Integer(flat_count as i64)),
            entry("variation", Value::Number(variation)),
            entry("baseline_variation", Value::Number(baseline_variation)),
            entry("daily_kwh", Value::Number(flat_kwh)),
            entry("baseline_daily_kwh", Value::Number(baseline_kwh)),
            entry("baseline_days", Value::Integer(baseline.len() as i64)),
        ],
    })
}

/// Judges the newest complete day for a sustained drop of daily energy below the baseline.
pub fn judge_level(limits: &Limits, days: &[Day]) -> Option<Signal> {
    let newest = days.last()?;
    if !limits.complete(newest) {
        return None;
    }
    let recent_from = newest.day - limits.recent_days as i64;
    let baseline_from = recent_from - limits.baseline_days as i64;
    let complete = days.iter().filter(|d| limits.complete(d));
    let (recent, baseline): (Vec<&Day>, Vec<&Day>) = complete
        .filter(|d| d.day > baseline_from)
        .partition(|d| d.day > recent_from);
    let min_recent = (limits.recent_days * 7).div_ceil(10);
    if recent.len() < min_recent || baseline.len() < limits.min_baseline_days {
        return None;
    }
    if recent.iter().chain(&baseline).any(|d| d.exported) {
        // Exported energy means generation on site, which lowers the import on its own.
        return None;
    }

    let energy = |days: &[&Day]| median(days.iter().map(|d| f64::from(d.energy_kwh)).collect());
    let baseline_kwh = energy(&baseline)?;
    if baseline_kwh < limits.min_baseline_kwh {
        return None;
    }
    let (older, newer) = baseline.split_at(baseline.len() / 2);
    let (older_kwh, newer_kwh) = (energy(older)?, energy(newer)?);
    let stability = older_kwh.min(newer_kwh) / older_kwh.max(newer_kwh);
    if stability.is_nan() || stability < limits.min_baseline_stability {
        return None;
    }
    let ratio = energy(&recent)? / baseline_kwh;
    let confirm_from = recent.len().saturating_sub(limits.confirm_days);
    let confirm_ratio = energy(&recent[confirm_from..])? / baseline_kwh;
    let band = limits.vacancy_ratio..=limits.drop_ratio;
    if !band.contains(&ratio) || !band.contains(&confirm_ratio) {
        return None;
    }
    Some(Signal {
        check: Check::LevelDrop,
        at_ms: (newest.day + 1) * DAY_MS,
        score: (1.0 - ratio).clamp(0.0, 1.0),
        message: format!(
            "daily consumption at {:.0} % of the meter's baseline over {} days ({:.0} % over \
             the newest {}), from {baseline_kwh:.2} kWh a day",
            ratio * 100.0,
            recent.len(),
            confirm_ratio * 100.0,
            recent.len() - confirm_from
        ),
        evidence: vec![
            entry("ratio", Value::Number(ratio)),
            entry("confirm_ratio", Value::Number(confirm_ratio)),
            entry("baseline_daily_kwh", Value::Number(baseline_kwh)),
            entry("baseline_days", Value::Integer(baseline.len() as i64)),
            entry("baseline_stability", Value::Number(stability)),
            entry("recent_days", Value::Integer(recent.len() as i64)),
        ],
    })
}

/// Returns whether the check may raise a finding at `at_ms`, given its newest finding.
pub fn may_alert(limits: &Limits, profile: &Profile, check: Check, at_ms: i64) -> bool {
    profile.alerted_ms[check as usize]
        .is_none_or(|last| (at_ms - last) as f64 >= limits.realert_hours * HOUR_MS as f64)
}

/// Returns the median, or `None` for no values.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}
