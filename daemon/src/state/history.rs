//! Hourly energy buckets and rolling window statistics.
//!
//! Each meter keeps one bucket per hour for the longest configured window: the energy that fell
//! into the hour and the seconds of the hour covered by readings. Window statistics are computed
//! from the buckets, so memory per meter is fixed (six bytes per hour of the longest window).

use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;

/// A bucket counts towards peak, base load and variation once this share of its hour has data.
const MIN_COVERED_SECS: u16 = 1_800;

/// Statistics of one rolling window. Ratios are NaN when undefined (no data, zero peak).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Window length in hours.
    pub hours: u32,
    /// Hours covered by readings.
    pub hours_with_data: f64,
    /// Energy in the window, kWh.
    pub energy_kwh: f64,
    /// Mean power, kW.
    pub mean_kw: f64,
    /// Highest hourly mean power, kW.
    pub peak_kw: f64,
    /// Lowest hourly mean power (base load), kW.
    pub base_kw: f64,
    /// Mean of the hourly means over hours at least half covered, divided by the peak.
    pub load_factor: f64,
    /// Mean night power divided by mean day power.
    pub night_day_ratio: f64,
    /// Coefficient of variation (standard deviation over mean) of hourly power.
    pub cv: f64,
}

/// Consecutive hourly buckets as columns, oldest first. Element `h` of both columns belongs to
/// the hour that starts `h` hours after `start_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentHours {
    /// Start of the oldest hour, Unix milliseconds; 0 when the columns are empty.
    pub start_ms: i64,
    /// Energy of each hour, kWh.
    pub energy_kwh: Vec<f64>,
    /// Seconds of each hour covered by readings, 0 to 3600.
    pub covered_secs: Vec<u32>,
}

impl RecentHours {
    /// Returns the hours as start in Unix milliseconds, energy in kWh and seconds covered.
    pub fn iter(&self) -> impl Iterator<Item = (i64, f64, u32)> + '_ {
        (0_i64..)
            .zip(self.energy_kwh.iter().zip(&self.covered_secs))
            .map(|(h, (&energy, &covered))| (self.start_ms + h * HOUR_MS, energy, covered))
    }
}

/// Ring of hourly energy buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourlyHistory {
    /// Unix hour of the newest bucket.
    newest_hour: i64,
    /// Energy per hour in kWh, indexed by Unix hour modulo the capacity.
    energy_kwh: Vec<f32>,
    /// Seconds of each hour covered by readings.
    covered_secs: Vec<u16>,
}

/// Night hours (UTC) used by the night/day ratio: `start..end`, wrapping past midnight when
/// `start > end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NightHours {
    /// First night hour, inclusive.
    pub start: u8,
    /// Last night hour, exclusive.
    pub end: u8,
}

impl NightHours {
    fn contains(self, hour_of_day: u8) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&hour_of_day)
        } else {
            hour_of_day >= self.start || hour_of_day < self.end
        }
    }
}

impl HourlyHistory {
    /// Creates an empty history of `capacity_hours` buckets.
    pub fn new(capacity_hours: u32) -> Self {
        let n = capacity_hours as usize;
        HourlyHistory {
            newest_hour: i64::MIN,
            energy_kwh: vec![0.0; n],
            covered_secs: vec![0; n],
        }
    }

    /// Returns the number of hourly buckets.
    pub fn capacity(&self) -> usize {
        self.energy_kwh.len()
    }

    /// Spreads `energy_kwh` over the hours of `start_ms..end_ms`, in proportion to the overlap.
    pub fn add(&mut self, start_ms: i64, end_ms: i64, energy_kwh: f64) {
        let cap = self.capacity() as i64;
        if end_ms <= start_ms || cap == 0 {
            return;
        }
        let duration = (end_ms - start_ms) as f64;
        let first = start_ms.div_euclid(HOUR_MS);
        let last = (end_ms - 1).div_euclid(HOUR_MS);
        if last > self.newest_hour {
            self.advance(last);
        }
        for hour in first.max(self.newest_hour - cap + 1)..=last {
            let from = start_ms.max(hour * HOUR_MS);
            let to = end_ms.min((hour + 1) * HOUR_MS);
            let slot = hour.rem_euclid(cap) as usize;
            self.energy_kwh[slot] += (energy_kwh * (to - from) as f64 / duration) as f32;
            let secs = ((to - from) / 1000) as u16;
            self.covered_secs[slot] = self.covered_secs[slot].saturating_add(secs).min(3_600);
        }
    }

    fn advance(&mut self, hour: i64) {
        let cap = self.capacity() as i64;
        if self.newest_hour == i64::MIN || hour - self.newest_hour >= cap {
            self.energy_kwh.fill(0.0);
            self.covered_secs.fill(0);
        } else {
            for h in self.newest_hour + 1..=hour {
                let slot = h.rem_euclid(cap) as usize;
                self.energy_kwh[slot] = 0.0;
                self.covered_secs[slot] = 0;
            }
        }
        self.newest_hour = hour;
    }

    /// Returns up to `hours` hourly buckets ending with the newest, oldest first.
    pub fn recent(&self, hours: u32) -> RecentHours {
        let cap = self.capacity() as i64;
        if self.newest_hour == i64::MIN || cap == 0 {
            return RecentHours::default();
        }
        let count = i64::from(hours).min(cap);
        let oldest = self.newest_hour - count + 1;
        let slots = (oldest..=self.newest_hour).map(|hour| hour.rem_euclid(cap) as usize);
        RecentHours {
            start_ms: oldest * HOUR_MS,
            energy_kwh: slots
                .clone()
                .map(|slot| f64::from(self.energy_kwh[slot]))
                .collect(),
            covered_secs: slots
                .map(|slot| u32::from(self.covered_secs[slot]))
                .collect(),
        }
    }

    /// Computes statistics over the `hours` hours ending with the newest bucket.
    pub fn stats(&self, hours: u32, night: NightHours) -> WindowStats {
        self.stats_for(&[hours], night).pop().unwrap_or_default()
    }

    /// Computes statistics for several windows ending with the newest bucket, in one pass over
    /// the buckets of the longest. Returns them in the order of `windows`.
    pub fn stats_for(&self, windows: &[u32], night: NightHours) -> Vec<WindowStats> {
        let mut accs: Vec<Accumulator> = windows.iter().map(|_| Accumulator::default()).collect();
        let cap = self.capacity() as i64;
        let longest = windows.iter().copied().max().unwrap_or(0);
        if self.newest_hour != i64::MIN && cap > 0 {
            let span = i64::from(longest).min(cap);
            let oldest = self.newest_hour - span + 1;
            let mut slot = oldest.rem_euclid(cap) as usize;
            let mut hour_of_day = oldest.rem_euclid(24) as u8;
            for age in (0..span).rev() {
                let covered = self.covered_secs[slot];
                if covered > 0 {
                    let is_night = night.contains(hour_of_day);
                    let energy = self.energy_kwh[slot];
                    for (acc, &hours) in accs.iter_mut().zip(windows) {
                        if age < i64::from(hours) {
                            acc.add(energy, covered, is_night);
                        }
                    }
                }
                slot = if slot + 1 == cap as usize {
                    0
                } else {
                    slot + 1
                };
                hour_of_day = if hour_of_day == 23 {
                    0
                } else {
                    hour_of_day + 1
                };
            }
        }
        accs.into_iter()
            .zip(windows)
            .map(|(acc, &hours)| acc.finish(hours))
            .collect()
    }
}

#[derive(Default)]
struct Accumulator {
    energy: f64,
    covered_secs: f64,
    night: (f64, f64),
    day: (f64, f64),
    full_hours: f64,
    sum_kw: f64,
    sum_kw2: f64,
    peak_kw: f64,
    base_kw: f64,
}

impl Accumulator {
    fn add(&mut self, energy: f32, covered: u16, is_night: bool) {
        let (energy, secs) = (f64::from(energy), f64::from(covered));
        self.energy += energy;
        self.covered_secs += secs;
        let part = if is_night {
            &mut self.night
        } else {
            &mut self.day
        };
        part.0 += energy;
        part.1 += secs;
        if covered >= MIN_COVERED_SECS {
            let kw = energy * 3600.0 / secs;
            self.base_kw = if self.full_hours == 0.0 {
                kw
            } else {
                self.base_kw.min(kw)
            };
            self.peak_kw = self.peak_kw.max(kw);
            self.full_hours += 1.0;
            self.sum_kw += kw;
            self.sum_kw2 += kw * kw;
        }
    }

    fn finish(self, hours: u32) -> WindowStats {
        let mean_kw = ratio(self.energy * 3600.0, self.covered_secs);
        let hourly_mean = ratio(self.sum_kw, self.full_hours);
        let variance = (ratio(self.sum_kw2, self.full_hours) - hourly_mean * hourly_mean).max(0.0);
        WindowStats {
            hours,
            hours_with_data: self.covered_secs / 3600.0,
            energy_kwh: self.energy,
            mean_kw: if self.covered_secs > 0.0 {
                mean_kw
            } else {
                0.0
            },
            peak_kw: self.peak_kw,
            base_kw: self.base_kw,
            // The hourly mean, not `mean_kw`, because partly covered hours are left out of the
            // peak and could otherwise push the ratio above 1.
            load_factor: ratio(hourly_mean, self.peak_kw),
            night_day_ratio: ratio(
                ratio(self.night.0, self.night.1),
                ratio(self.day.0, self.day.1),
            ),
            cv: ratio(variance.sqrt(), hourly_mean),
        }
    }
}

/// Divides, returning NaN when the divisor is zero or either side is undefined.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}
