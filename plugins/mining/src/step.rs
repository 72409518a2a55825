//! The step in a meter's hourly history: its onset, the level before it and the rig count
//! that fits its size.

use gridwatch_plugin_sdk::prelude::Hour;

const MS_PER_HOUR: i64 = 3_600_000;

/// An hour counts once readings cover at least half of it, as in the daemon's window statistics.
const MIN_COVERED_SECS: u32 = 1_800;

/// Mean power of one hour, kW.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HourKw {
    /// Start of the hour, Unix milliseconds.
    pub start_ms: i64,
    /// Mean power over the covered part of the hour, kW.
    pub kw: f64,
}

/// Returns the mean power of each hour that readings cover at least half of, oldest first.
pub(crate) fn hourly_kw(hours: &[Hour]) -> Vec<HourKw> {
    hours
        .iter()
        .filter(|h| h.covered_secs >= MIN_COVERED_SECS)
        .map(|h| HourKw {
            start_ms: h.start_ms,
            kw: h.energy_kwh * 3_600.0 / f64::from(h.covered_secs),
        })
        .collect()
}

/// The meter's level before a step up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Before {
    /// Start of the first hour of the step, Unix milliseconds.
    pub onset_ms: i64,
    /// Low quantile of the hourly power before the onset, kW: the base load the rigs add to.
    pub low_kw: f64,
    /// Median hourly power before the onset, kW.
    pub median_kw: f64,
}

impl Before {
    /// Encodes the level for plugin state: onset, low and median, little-endian.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut bytes = [0; 24];
        bytes[..8].copy_from_slice(&self.onset_ms.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.low_kw.to_le_bytes());
        bytes[16..].copy_from_slice(&self.median_kw.to_le_bytes());
        bytes
    }

    /// Decodes [`Before::to_bytes`], or returns `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Before> {
        let bytes: &[u8; 24] = bytes.try_into().ok()?;
        let word = |at: usize| -> [u8; 8] { bytes[at..at + 8].try_into().unwrap_or([0; 8]) };
        Some(Before {
            onset_ms: i64::from_le_bytes(word(0)),
            low_kw: f64::from_le_bytes(word(8)),
            median_kw: f64::from_le_bytes(word(16)),
        })
    }
}

/// Finds the onset of the run of high hours that ends with the newest hour, and the level of
/// the hours before it.
///
/// `recent_hours` is the span of the window whose base load is `base_kw`. The threshold
/// between "before" and "after" is halfway from the low quantile of the hours older than that
/// window to `base_kw`. Returns `None` when fewer than `min_before_hours` hours with data lie
/// before the onset, as when the step is older than the history.
pub(crate) fn find_before(
    hours: &[HourKw],
    recent_hours: u32,
    base_kw: f64,
    low_quantile: f64,
    min_before_hours: f64,
) -> Option<Before> {
    let newest = hours.last()?;
    let recent_from_ms = newest.start_ms - (i64::from(recent_hours) - 1) * MS_PER_HOUR;
    let older = hours.partition_point(|h| h.start_ms < recent_from_ms);
    if (older as f64) < min_before_hours {
        return None;
    }
    let older_low = quantile(&hours[..older], low_quantile);
    let threshold = (older_low + base_kw) / 2.0;

    let run = run_hours(hours, threshold);
    let onset = hours.len() - run;
    if (onset as f64) < min_before_hours {
        return None;
    }
    let before = &hours[..onset];
    Some(Before {
        onset_ms: hours.get(onset).map_or(newest.start_ms, |h| h.start_ms),
        low_kw: quantile(before, low_quantile),
        median_kw: quantile(before, 0.5),
    })
}

/// The load the step added in the recent window: each recent hour after the onset less the
/// earlier median of the same hour of the day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Added {
    /// Median added power, kW: the step's size.
    pub median_kw: f64,
    /// Low quantile of the added power, kW: what the step adds in nearly every hour.
    pub low_kw: f64,
    /// High quantile of the added power (one minus the low quantile), kW.
    pub high_kw: f64,
    /// Robust spread of the earlier hours around their hour-of-day medians, kW: 1.4826 times
    /// their median absolute deviation. 0 when the earlier hours have left the history.
    pub before_spread_kw: f64,
}

/// Measures the load added in the hours from `recent_from_ms` on that lie at or after the
/// onset. An hour of the day with fewer than two earlier hours is compared with the earlier
/// median of all hours, as is every hour when the earlier hours have left the history.
pub(crate) fn added_load(
    hours: &[HourKw],
    before: Before,
    recent_from_ms: i64,
    low_quantile: f64,
) -> Option<Added> {
    let onset = hours.partition_point(|h| h.start_ms < before.onset_ms);
    let mut by_hour: [Vec<f64>; 24] = Default::default();
    for hour in &hours[..onset] {
        by_hour[hour_of_day(hour.start_ms)].push(hour.kw);
    }
    let profile: Vec<f64> = by_hour
        .iter_mut()
        .map(|values| {
            if values.len() < 2 {
                return before.median_kw;
            }
            values.sort_unstable_by(f64::total_cmp);
            values[(values.len() - 1) / 2]
        })
        .collect();
    let from = onset.max(hours.partition_point(|h| h.start_ms < recent_from_ms));
    let added: Vec<HourKw> = hours[from..]
        .iter()
        .map(|h| HourKw {
            start_ms: h.start_ms,
            kw: h.kw - profile[hour_of_day(h.start_ms)],
        })
        .collect();
    if added.is_empty() {
        return None;
    }
    let residuals: Vec<HourKw> = hours[..onset]
        .iter()
        .map(|h| HourKw {
            start_ms: h.start_ms,
            kw: h.kw - profile[hour_of_day(h.start_ms)],
        })
        .collect();
    Some(Added {
        median_kw: quantile(&added, 0.5),
        low_kw: quantile(&added, low_quantile),
        high_kw: quantile(&added, 1.0 - low_quantile),
        before_spread_kw: 1.4826 * median_absolute_deviation(&residuals),
    })
}

fn hour_of_day(start_ms: i64) -> usize {
    start_ms.div_euclid(MS_PER_HOUR).rem_euclid(24) as usize
}

/// Returns the median absolute deviation of the hours' power from their median; 0 for no hours.
fn median_absolute_deviation(hours: &[HourKw]) -> f64 {
    if hours.is_empty() {
        return 0.0;
    }
    let median = quantile(hours, 0.5);
    let deviations: Vec<HourKw> = hours
        .iter()
        .map(|h| HourKw {
            start_ms: h.start_ms,
            kw: (h.kw - median).abs(),
        })
        .collect();
    quantile(&deviations, 0.5)
}

/// Returns the number of hours with data, from the newest back, whose power stays at or above
/// `threshold_kw`.
pub(crate) fn run_hours(hours: &[HourKw], threshold_kw: f64) -> usize {
    hours
        .iter()
        .rev()
        .take_while(|h| h.kw >= threshold_kw)
        .count()
}

/// Returns the `q` quantile (0 to 1) of the hours' power, by the nearest rank below; NaN for
/// no hours.
pub(crate) fn quantile(hours: &[HourKw], q: f64) -> f64 {
    if hours.is_empty() {
        return f64::NAN;
    }
    let mut kw: Vec<f64> = hours.iter().map(|h| h.kw).collect();
    kw.sort_unstable_by(f64::total_cmp);
    let rank = ((kw.len() - 1) as f64 * q.clamp(0.0, 1.0)).floor() as usize;
    kw[rank]
}

/// Returns the whole number of rigs whose draw, each within `min_rig_kw..=max_rig_kw`, adds up
/// to `step_kw`, nearest to `step_kw / rig_kw`; at least 1.
pub(crate) fn fit_rigs(step_kw: f64, rig_kw: f64, min_rig_kw: f64, max_rig_kw: f64) -> u32 {
    if !(step_kw > 0.0 && rig_kw > 0.0 && min_rig_kw > 0.0 && max_rig_kw >= min_rig_kw) {
        return 1;
    }
    let min_rigs = (step_kw / max_rig_kw).ceil().max(1.0);
    let max_rigs = (step_kw / min_rig_kw).floor().max(min_rigs);
    (step_kw / rig_kw).round().clamp(min_rigs, max_rigs) as u32
}

/// Returns the month (1 to 12) of a Unix millisecond time, UTC.
pub(crate) fn month_of(ts_ms: i64) -> u32 {
    // Civil-from-days over 400-year eras of 146,097 days, shifted so a year starts on 1 March.
    let days = ts_ms.div_euclid(86_400_000) + 719_468;
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    month as u32
}

/// Returns whether `month` lies in the season from `first` to `last` (1 to 12), wrapping past
/// December when `first > last`. A `first` or `last` of 0 means no season.
pub(crate) fn in_season(month: u32, first: u32, last: u32) -> bool {
    if first == 0 || last == 0 {
        return false;
    }
    if first <= last {
        (first..=last).contains(&month)
    } else {
        month >= first || month <= last
    }
}
