//! Per-meter state: register tracking, interval energy and rolling statistics.
//!
//! State is keyed by region and meter id, kept in memory and persisted in redb with every
//! committed batch, so a restart continues where it stopped.

mod history;
mod register;

use serde::{Deserialize, Serialize};

pub use history::{HourlyHistory, WindowStats};
pub use register::{Interval, IntervalKind, RegisterTracker};

/// Longest rolling window in hours (28 days).
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
    /// Readings accepted for this meter.
    pub readings: u64,
}

impl MeterSnapshot {
    /// Returns the statistics of the named window.
    pub fn window(&self, name: &str) -> Option<&WindowStats> {
        self.windows.iter().find(|(n, _)| n == name).map(|(_, w)| w)
    }
}
