//! Interval energy from a cumulative register.
use serde::{Deserialize, Serialize};

/// How a register step was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntervalKind {
    /// First reading of a meter.
    First,
}

/// Energy between the previous accepted reading and this one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Classification.
    pub kind: IntervalKind,
    /// Start, Unix milliseconds.
    pub start_ms: i64,
    /// End, Unix milliseconds.
    pub end_ms: i64,
    /// Energy in kWh.
    pub energy_kwh: f64,
}

/// Register baseline of one meter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterTracker {}
