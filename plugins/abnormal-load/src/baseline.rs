//! The hour-of-week baseline and the run of abnormal hours of one meter.

use gridwatch_plugin_sdk::prelude::*;

const HOUR_MS: i64 = 3_600_000;
const WEEK_HOURS: i64 = 168;

/// Scales the MAD to the standard deviation of normally distributed data (1 / 0.6745).
const MAD_TO_SIGMA: f64 = 1.4826;

/// Settings of one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    history_weeks: i64,
    min_weeks: usize,
    min_covered_secs: f64,
    z_threshold: f64,
    high_z: f64,
    min_consecutive_hours: u32,
    min_spread_kwh: f64,
    min_spread_fraction: f64,
    above: bool,
    below: bool,
    max_catch_up_hours: i64,
    min_peers: u32,
    max_peer_share: f64,
}

impl Limits {
    /// Reads the region's settings.
    pub fn for_region(host: &mut impl Host, region: &str) -> Limits {
        let direction = host.setting_text(region, "direction");
        Limits {
            history_weeks: host.setting_f64(region, "history_weeks").max(1.0) as i64,
            min_weeks: host.setting_f64(region, "min_weeks").max(1.0) as usize,
            min_covered_secs: host.setting_f64(region, "min_hour_coverage") * 3600.0,
            z_threshold: host.setting_f64(region, "z_threshold"),
            high_z: host.setting_f64(region, "high_z"),
            min_consecutive_hours: host.setting_f64(region, "min_consecutive_hours").max(1.0)
                as u32,
            min_spread_kwh: host.setting_f64(region, "min_spread_kwh"),
            min_spread_fraction: host.setting_f64(region, "min_spread_fraction"),
            above: direction != "below",
            below: direction != "above",
            max_catch_up_hours: host.setting_f64(region, "max_catch_up_hours").max(1.0) as i64,
            min_peers: host.setting_f64(region, "min_peers").max(1.0) as u32,
            max_peer_share: host.setting_f64(region, "max_peer_share"),
        }
    }
}

/// A meter's progress: the newest hour judged and the current run of abnormal hours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Unix hour of the newest hour judged.
    pub judged_hour: Option<i64>,
    /// Abnormal hours in a row; 0 when the newest judged hour was normal.
    pub hours: u32,
    /// +1 for hours above the baseline, -1 for hours below.
    pub sign: i8,
    /// Unix hour of the run's first hour.
    pub start_hour: i64,
    /// Smallest absolute robust z-score of the run's hours.
    pub weakest_z: f64,
    /// Energy of the run's hours, kWh.
    pub energy_kwh: f64,
    /// Sum of the baseline medians of the run's hours, kWh.
    pub median_kwh: f64,
}

const RUN_KEY: &str = "run";
const RUN_BYTES: usize = 45;

impl Run {
    /// Reads the meter's run; a missing or unreadable value starts a new one.
    pub fn load(host: &mut impl Host, meter: Meter<'_>) -> Run {
        host.get_state(meter, RUN_KEY)
            .and_then(|bytes| Run::decode(&bytes))
            .unwrap_or_default()
    }

    /// Writes the meter's run.
    pub fn store(&self, host: &mut impl Host, meter: Meter<'_>) {
        let Some(judged) = self.judged_hour else {
            return;
        };
        let mut bytes = Vec::with_capacity(RUN_BYTES);
        bytes.extend_from_slice(&judged.to_le_bytes());
        bytes.extend_from_slice(&self.hours.to_le_bytes());
        bytes.push(self.sign as u8);
        bytes.extend_from_slice(&self.start_hour.to_le_bytes());
        bytes.extend_from_slice(&self.weakest_z.to_le_bytes());
        bytes.extend_from_slice(&self.energy_kwh.to_le_bytes());
        bytes.extend_from_slice(&self.median_kwh.to_le_bytes());
        host.set_state(meter, RUN_KEY, &bytes);
    }

    fn decode(bytes: &[u8]) -> Option<Run> {
        if bytes.len() != RUN_BYTES {
            return None;
        }
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let f64_at = |at: usize| f64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        Some(Run {
            judged_hour: Some(i64_at(0)),
            hours: u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
            sign: bytes[12] as i8,
            start_hour: i64_at(13),
            weakest_z: f64_at(21),
            energy_kwh: f64_at(29),
            median_kwh: f64_at(37),
        })
    }

    fn reset(&mut self) {
        self.hours = 0;
        self.sign = 0;
    }

    /// Adds an abnormal hour, starting a new run when the direction changes.
    fn extend(&mut self, hour: i64, sign: i8, z: f64, energy_kwh: f64, median_kwh: f64) {
        if self.hours == 0 || self.sign != sign {
            self.hours = 0;
            self.sign = sign;
            self.start_hour = hour;
            self.weakest_z = f64::INFINITY;
            self.energy_kwh = 0.0;
            self.median_kwh = 0.0;
        }
        self.hours += 1;
        self.weakest_z = self.weakest_z.min(z.abs());
        self.energy_kwh += energy_kwh;
        self.median_kwh += median_kwh;
    }
}

/// One hour judged against its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// Unix hour.
    pub hour: i64,
    energy_kwh: f64,
    median_kwh: f64,
    mad_kwh: f64,
    z: f64,
    weeks: usize,
    /// +1 when abnormally high, -1 when abnormally low, 0 when normal.
    pub sign: i8,
}

/// The hours one reading completed, in order. `None` is an hour with fewer earlier weeks than
/// `min_weeks`, which ends a run without being judged.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Hours with enough coverage, oldest first.
    pub hours: Vec<Option<Judged>>,
    /// Hours of history returned and needed, when fewer came back than needed.
    pub short_history: Option<(usize, usize)>,
}

/// Abnormal share of a region's meters for one hour and direction in one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peers {
    /// Meters of the region with the hour judged, the meter itself included.
    pub judged: u32,
    /// Those of them abnormal in the same direction.
    pub abnormal: u32,
}

/// Judges the hours that the reading completed against the meter's hour-of-week baseline.
///
/// The reading completes every hour before its own. Later readings of the same batch add
/// energy only to their own hours and after, so those hours are final even though the history
/// already contains the whole batch.
///
/// NOTE: when one call carries more than a week of a meter's readings, the history of its
/// earlier readings lacks their oldest weeks, and those readings are judged on fewer weeks.
pub fn judge_hours(
    host: &mut impl Host,
    limits: &Limits,
    reading: Reading<'_>,
    run: &mut Run,
) -> Judgement {
    let mut judgement = Judgement::default();
    let current = reading.timestamp_ms().div_euclid(HOUR_MS);
    let newest_complete = current - 1;
    let first = match run.judged_hour {
        Some(judged) if judged >= newest_complete => return judgement,
        Some(judged) => (judged + 1).max(newest_complete - limits.max_catch_up_hours + 1),
        None => newest_complete,
    };
    run.judged_hour = Some(newest_complete);

    // The history ends with the meter's newest hour in the batch, which can be later than this
    // reading's, so one more week is requested than the judged hours need.
    let needed = limits.history_weeks * WEEK_HOURS + (current - first) + 1;
    let hours = host.history(reading.meter(), (needed + WEEK_HOURS) as u32);
    // Once a meter has any history, the daemon returns every hour requested, up to its longest
    // window. A meter's first reading has no history, which is no sign of a short window.
    if !hours.is_empty() && hours.len() < needed as usize {
        judgement.short_history = Some((hours.len(), needed as usize));
    }
    let Some(oldest) = hours.first().map(|h| h.start_ms.div_euclid(HOUR_MS)) else {
        return judgement;
    };
    let energy_at = |hour: i64| -> Option<f64> {
        let bucket = hours.get(usize::try_from(hour - oldest).ok()?)?;
        let covered = f64::from(bucket.covered_secs);
        (covered > 0.0 && covered >= limits.min_covered_secs)
            .then(|| bucket.energy_kwh * 3600.0 / covered)
    };

    for hour in first..=newest_complete {
        let Some(energy_kwh) = energy_at(hour) else {
            continue;
        };
        let earlier: Vec<f64> = (1..=limits.history_weeks)
            .filter_map(|week| energy_at(hour - week * WEEK_HOURS))
            .collect();
        if earlier.len() < limits.min_weeks {
            judgement.hours.push(None);
        } else {
            judgement
                .hours
                .push(Some(judge(limits, hour, energy_kwh, &earlier)));
        }
    }
    judgement
}

/// Adds the judged hours of one reading to the meter's run and returns a finding when the run
/// is long enough and includes the newest of them.
///
/// An hour that more than `max_peer_share` of the region's judged meters share, in the same
/// direction, counts as normal when at least `min_peers` meters were judged: the whole region
/// changed, not the meter.
pub fn advance(
    limits: &Limits,
    reading: Reading<'_>,
    run: &mut Run,
    hours: &[Option<Judged>],
    peers: impl Fn(i64, i8) -> Peers,
) -> Option<Finding> {
    let mut last = None;
    for judged in hours {
        let Some(judged) = judged else {
            run.reset();
            continue;
        };
        let crowd = peers(judged.hour, judged.sign);
        let region_wide = judged.sign != 0
            && crowd.judged >= limits.min_peers
            && f64::from(crowd.abnormal) > limits.max_peer_share * f64::from(crowd.judged);
        if judged.sign == 0 || region_wide {
            run.reset();
        } else {
            run.extend(
                judged.hour,
                judged.sign,
                judged.z,
                judged.energy_kwh,
                judged.median_kwh,
            );
        }
        last = Some((*judged, crowd));
    }

    let (judged, crowd) = last?;
    if run.hours < limits.min_consecutive_hours
        || judged.hour != run.start_hour + i64::from(run.hours) - 1
    {
        return None;
    }
    Some(finding(limits, reading, run, &judged, crowd))
}

fn judge(limits: &Limits, hour: i64, energy_kwh: f64, earlier: &[f64]) -> Judged {
    let (median_kwh, mad_kwh) = median_and_mad(earlier);
    let z = robust_z(
        energy_kwh,
        median_kwh,
        mad_kwh,
        limits
            .min_spread_kwh
            .max(limits.min_spread_fraction * median_kwh.abs()),
    );
    let sign = if z >= limits.z_threshold && limits.above {
        1
    } else if z <= -limits.z_threshold && limits.below {
        -1
    } else {
        0
    };
    Judged {
        hour,
        energy_kwh,
        median_kwh,
        mad_kwh,
        z,
        weeks: earlier.len(),
        sign,
    }
}

/// Returns the robust z-score of `value`: its distance from the median in units of 1.4826
/// MAD, with the unit at least `min_spread`.
pub fn robust_z(value: f64, median: f64, mad: f64, min_spread: f64) -> f64 {
    let spread = (MAD_TO_SIGMA * mad).max(min_spread);
    if spread <= 0.0 || !spread.is_finite() {
        return 0.0;
    }
    (value - median) / spread
}

/// Returns the median of `values` and their median absolute deviation from it.
fn median_and_mad(values: &[f64]) -> (f64, f64) {
    let median = median_of(&mut values.to_vec());
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    (median, median_of(&mut deviations))
}

fn median_of(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn finding(
    limits: &Limits,
    reading: Reading<'_>,
    run: &Run,
    judged: &Judged,
    peers: Peers,
) -> Finding {
    let direction = if run.sign > 0 { "above" } else { "below" };
    let severity = if run.weakest_z >= limits.high_z {
        Severity::High
    } else {
        Severity::Medium
    };
    // 0.5 at the threshold, rising to 1 where every hour reaches `high_z`.
    let score = if limits.high_z > limits.z_threshold {
        0.5 + 0.5 * (run.weakest_z - limits.z_threshold) / (limits.high_z - limits.z_threshold)
    } else {
        1.0
    }
    .clamp(0.5, 1.0);
    Finding {
        reading: reading.index(),
        kind: super::KIND.into(),
        severity,
        score,
        message: format!(
            "energy {direction} the hour-of-week baseline for {} h: {:.2} kWh in the {} hour \
             against a median of {:.2} kWh over {} weeks (robust z {:.1})",
            run.hours,
            judged.energy_kwh,
            hour_of_week_name(judged.hour),
            judged.median_kwh,
            judged.weeks,
            judged.z
        ),
        evidence: vec![
            entry("direction", Value::Text(direction.into())),
            entry("run_hours", Value::Integer(i64::from(run.hours))),
            entry("run_start_ms", Value::Integer(run.start_hour * HOUR_MS)),
            entry("run_energy_kwh", Value::Number(run.energy_kwh)),
            entry("run_median_kwh", Value::Number(run.median_kwh)),
            entry("weakest_z", Value::Number(run.weakest_z)),
            entry("hour_start_ms", Value::Integer(judged.hour * HOUR_MS)),
            entry("energy_kwh", Value::Number(judged.energy_kwh)),
            entry("median_kwh", Value::Number(judged.median_kwh)),
            entry("mad_kwh", Value::Number(judged.mad_kwh)),
            entry("robust_z", Value::Number(judged.z)),
            entry("baseline_weeks", Value::Integer(judged.weeks as i64)),
            entry("peers_judged", Value::Integer(i64::from(peers.judged))),
            entry("peers_abnormal", Value::Integer(i64::from(peers.abnormal))),
        ],
    }
}

/// Returns an hour as its weekday and time of day in UTC, such as `Mon 18:00 UTC`.
fn hour_of_week_name(unix_hour: i64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    // 1970-01-01, Unix day 0, was a Thursday.
    let day = (unix_hour.div_euclid(24) + 3).rem_euclid(7) as usize;
    format!("{} {:02}:00 UTC", DAYS[day], unix_hour.rem_euclid(24))
}

#[cfg(test)]
mod tests {
    use super::{hour_of_week_name, median_and_mad, robust_z};

    #[test]
    fn median_and_mad_of_odd_and_even() {
        assert_eq!(median_and_mad(&[1.0, 9.0, 2.0]), (2.0, 1.0));
        assert_eq!(median_and_mad(&[1.0, 2.0, 3.0, 10.0]), (2.5, 1.0));
    }

    #[test]
    fn robust_z_uses_spread_floor() {
        assert!((robust_z(3.0, 1.0, 1.0, 0.0) - 2.0 / 1.4826).abs() < 1e-12);
        assert_eq!(robust_z(3.0, 1.0, 0.0, 0.5), 4.0);
        assert_eq!(robust_z(3.0, 1.0, 0.0, 0.0), 0.0);
    }

    #[test]
    fn hour_names_start_on_thursday() {
        assert_eq!(hour_of_week_name(0), "Thu 00:00 UTC");
        assert_eq!(hour_of_week_name(4 * 24 + 18), "Mon 18:00 UTC");
    }
}
