//! Hourly energy buckets and window statistics.
use serde::{Deserialize, Serialize};

/// Statistics of one rolling window.
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
    /// Lowest hourly mean power, kW.
    pub base_kw: f64,
    /// Mean divided by peak.
    pub load_factor: f64,
    /// Mean night power divided by mean day power.
    pub night_day_ratio: f64,
    /// Coefficient of variation of hourly power.
    pub cv: f64,
}

/// Ring of hourly energy buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourlyHistory {}
