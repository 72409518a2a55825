//! Per-meter state: register tracking, interval energy and rolling statistics.
//!
//! State is keyed by region and meter id, kept in memory and persisted in redb with every
//! committed batch, so a restart continues where it stopped.

mod history;
mod register;

use serde::{Deserialize, Serialize};

pub use history::{HourlyHistory, NightHours, RecentHours, WindowStats};
pub use register::{Interval, IntervalKind, RegisterLimits, RegisterTracker};

use crate::config::StateConfig;
use crate::decode::Reading;

/// Maximum rolling window length in hours (28 days).
pub const MAX_WINDOW_HOURS: u32 = 24 * 28;

/// A read-only view of one meter, handed to rules and plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSnapshot {
    /// Region.
    pub region: String,
    /// Meter id.
    pub meter_id: String,
    /// Accepted import register in kWh (the baseline used for interval energy).
    pub register_kwh: f64,
    /// The interval ending at the current reading.
    pub interval: Interval,
    /// Statistics per configured window, in configuration order.
    pub windows: Vec<(String, WindowStats)>,
    /// Register steps that went backwards outside a rollover or meter exchange, within the
    /// longest window.
    pub register_reversals: u32,
    /// Readings that took effect for this meter; duplicates and late readings are not counted.
    pub readings: u64,
    /// Latest score of each plugin for this meter, by plugin name.
    pub scores: Vec<(String, f64)>,
}

impl MeterSnapshot {
    /// Returns the statistics of the named window.
    pub fn window(&self, name: &str) -> Option<&WindowStats> {
        self.windows.iter().find(|(n, _)| n == name).map(|(_, w)| w)
    }
}

/// The stored copy of a meter's newest reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastReading {
    /// Reading time, Unix milliseconds.
    pub ts_ms: i64,
    /// Import register, kWh.
    pub energy_import_kwh: f64,
    /// Export register, kWh.
    pub energy_export_kwh: Option<f64>,
    /// Instantaneous power, W.
    pub power_w: Option<f64>,
    /// Device sequence number.
    pub seq: Option<u64>,
}

/// Most recent reversal timestamps kept per meter.
const MAX_REVERSALS_KEPT: usize = 32;

/// Everything kept per meter, persisted in redb.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    /// Register baseline.
    pub register: RegisterTracker,
    /// Hourly energy buckets.
    pub history: HourlyHistory,
    /// Newest reading by timestamp.
    pub last: Option<LastReading>,
    /// Readings that took effect; duplicates and late readings are not counted.
    pub readings: u64,
    /// Times of recent register reversals, oldest first.
    reversals: Vec<i64>,
    /// Latest score of each plugin that reported on this meter, by plugin name.
    pub scores: Vec<(String, f64)>,
}

impl MeterState {
    /// Records a plugin's latest score for this meter.
    pub fn set_score(&mut self, plugin: &str, score: f64) {
        match self.scores.iter_mut().find(|(name, _)| name == plugin) {
            Some(entry) => entry.1 = score,
            None => self.scores.push((plugin.to_owned(), score)),
        }
    }
}

/// The rules that turn readings into meter state, built once from configuration.
#[derive(Debug, Clone)]
pub struct StateModel {
    limits: RegisterLimits,
    windows: Vec<(String, u32)>,
    window_hours: Vec<u32>,
    capacity_hours: u32,
    night: NightHours,
}

impl StateModel {
    /// Builds the model from the state settings and the largest plausible power in kW.
    pub fn new(config: &StateConfig, max_power_kw: f64) -> StateModel {
        let windows: Vec<(String, u32)> = config
            .windows
            .iter()
            .map(|w| (w.name.clone(), w.hours))
            .collect();
        let window_hours: Vec<u32> = windows.iter().map(|w| w.1).collect();
        let capacity_hours = window_hours.iter().copied().max().unwrap_or(24);
        StateModel {
            limits: RegisterLimits {
                max_interval_ms: i64::from(config.max_interval_minutes) * 60_000,
                glitch_tolerance_kwh: config.glitch_tolerance_kwh,
                exchange_max_start_kwh: config.exchange_max_start_kwh,
                max_power_kw,
            },
            windows,
            window_hours,
            capacity_hours,
            night: NightHours {
                start: config.night_start_hour,
                end: config.night_end_hour,
            },
        }
    }

    /// Computes the statistics of every configured window of `state`, in configuration order.
    pub fn window_stats(&self, state: &MeterState) -> Vec<(String, WindowStats)> {
        self.windows
            .iter()
            .map(|(name, _)| name.clone())
            .zip(state.history.stats_for(&self.window_hours, self.night))
            .collect()
    }

    /// Returns the hours of hourly history kept per meter: the longest window.
    pub fn capacity_hours(&self) -> u32 {
        self.capacity_hours
    }

    /// Creates the state of a meter never seen before.
    pub fn new_state(&self) -> MeterState {
        MeterState {
            history: HourlyHistory::new(self.capacity_hours),
            ..MeterState::default()
        }
    }

    /// Applies a reading to a meter's state and returns the interval it closes.
    pub fn apply(&self, state: &mut MeterState, reading: &Reading) -> Interval {
        if state.history.capacity() != self.capacity_hours as usize {
            // The maximum window length changed since the state was stored, so the history restarts.
            state.history = HourlyHistory::new(self.capacity_hours);
        }
        let interval =
            state
                .register
                .update(reading.ts_ms, reading.energy_import_kwh, &self.limits);
        let duration = interval.end_ms - interval.start_ms;
        if interval.kind.counts_in_history() && duration <= self.limits.max_interval_ms {
            state
                .history
                .add(interval.start_ms, interval.end_ms, interval.energy_kwh);
        }
        if interval.kind.is_reversal() {
            if state.reversals.len() == MAX_REVERSALS_KEPT {
                state.reversals.remove(0);
            }
            state.reversals.push(reading.ts_ms);
        }
        if state.last.is_none_or(|last| reading.ts_ms >= last.ts_ms) {
            state.last = Some(LastReading {
                ts_ms: reading.ts_ms,
                energy_import_kwh: reading.energy_import_kwh,
                energy_export_kwh: reading.energy_export_kwh,
                power_w: reading.power_w,
                seq: reading.seq,
            });
        }
        if !matches!(interval.kind, IntervalKind::Duplicate | IntervalKind::Late) {
            state.readings += 1;
        }
        interval
    }

    /// Builds the read-only view handed to rules.
    pub fn snapshot(
        &self,
        state: &MeterState,
        reading: &Reading,
        interval: Interval,
    ) -> MeterSnapshot {
        let newest = state.last.map_or(reading.ts_ms, |l| l.ts_ms);
        let since = newest - i64::from(self.capacity_hours) * 3_600_000;
        MeterSnapshot {
            region: reading.region.clone(),
            meter_id: reading.meter_id.clone(),
            register_kwh: state
                .register
                .register_kwh()
                .unwrap_or(reading.energy_import_kwh),
            interval,
            windows: self
                .windows
                .iter()
                .map(|(name, _)| name.clone())
                .zip(state.history.stats_for(&self.window_hours, self.night))
                .collect(),
            register_reversals: state.reversals.iter().filter(|&&t| t > since).count() as u32,
            readings: state.readings,
            scores: state.scores.clone(),
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
