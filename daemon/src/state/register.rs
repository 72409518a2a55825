//! Interval energy from a cumulative register.
//!
//! Meters report a cumulative import register. The energy of an interval is the difference of
//! two readings, except where the register misbehaves: duplicates, late readings, small dips,
//! momentary zeros, rollover, meter exchange and gaps. Each case is classified so the statistics
//! never count energy that was not consumed in the interval they cover.

use serde::{Deserialize, Serialize};

/// Classification of a register step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntervalKind {
    /// First reading of a meter: no interval yet.
    First,
    /// A regular step: energy is the register difference.
    Normal,
    /// Same timestamp as the baseline: no effect.
    Duplicate,
    /// Older than the baseline: its energy is already in a later interval.
    Late,
    /// A dip within the glitch tolerance: zero energy, baseline kept.
    Glitch,
    /// A large drop to a value that is not near zero: the register went backwards.
    Reversal,
    /// A drop to near zero; the next reading distinguishes a momentary zero, a rollover and a
    /// meter exchange.
    DropPending,
    /// The register restarted near zero and continued from there: a new meter.
    Exchange,
    /// The register wrapped past its last digit.
    Rollover,
    /// The interval is longer than the gap limit: the energy is not spread over the window.
    Gap,
    /// A rise faster than the largest plausible power: rebased without energy.
    Jump,
}

impl IntervalKind {
    /// Every kind, in declaration order, so `kind as usize` indexes this array.
    pub const ALL: [IntervalKind; 11] = [
        IntervalKind::First,
        IntervalKind::Normal,
        IntervalKind::Duplicate,
        IntervalKind::Late,
        IntervalKind::Glitch,
        IntervalKind::Reversal,
        IntervalKind::DropPending,
        IntervalKind::Exchange,
        IntervalKind::Rollover,
        IntervalKind::Gap,
        IntervalKind::Jump,
    ];

    /// Returns the snake_case name used by rules and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalKind::First => "first",
            IntervalKind::Normal => "normal",
            IntervalKind::Duplicate => "duplicate",
            IntervalKind::Late => "late",
            IntervalKind::Glitch => "glitch",
            IntervalKind::Reversal => "reversal",
            IntervalKind::DropPending => "drop_pending",
            IntervalKind::Exchange => "exchange",
            IntervalKind::Rollover => "rollover",
            IntervalKind::Gap => "gap",
            IntervalKind::Jump => "jump",
        }
    }

    /// Returns true when the interval's energy belongs in the rolling statistics.
    pub fn counts_in_history(self) -> bool {
        // A glitch keeps the old baseline, so the next reading's interval covers its time again.
        matches!(
            self,
            IntervalKind::Normal | IntervalKind::Rollover | IntervalKind::Exchange
        )
    }

    /// Returns true when the step means the register went backwards without explanation.
    pub fn is_reversal(self) -> bool {
        matches!(self, IntervalKind::Glitch | IntervalKind::Reversal)
    }
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

/// Limits that decide how a register step is classified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterLimits {
    /// Intervals longer than this are gaps, in milliseconds.
    pub max_interval_ms: i64,
    /// Drops up to this size are glitches, in kWh.
    pub glitch_tolerance_kwh: f64,
    /// A register at or below this value after a drop may be a new meter, in kWh.
    pub exchange_max_start_kwh: f64,
    /// Largest plausible power, in kW.
    pub max_power_kw: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Point {
    ts_ms: i64,
    kwh: f64,
}

/// Register baseline of one meter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterTracker {
    baseline: Option<Point>,
    pending_drop: Option<Point>,
}

impl RegisterTracker {
    /// Returns the accepted register value, if any.
    pub fn register_kwh(&self) -> Option<f64> {
        self.baseline.map(|p| p.kwh)
    }

    /// Returns the time of the accepted register value, if any.
    pub fn baseline_ts_ms(&self) -> Option<i64> {
        self.baseline.map(|p| p.ts_ms)
    }

    /// Classifies a new register value and returns the interval it closes.
    pub fn update(&mut self, ts_ms: i64, kwh: f64, limits: &RegisterLimits) -> Interval {
        let Some(base) = self.baseline else {
            self.baseline = Some(Point { ts_ms, kwh });
            return interval(IntervalKind::First, ts_ms, ts_ms, 0.0);
        };
        let newest_ts = self
            .pending_drop
            .map_or(base.ts_ms, |p| p.ts_ms.max(base.ts_ms));
        if ts_ms == newest_ts {
            return interval(IntervalKind::Duplicate, ts_ms, ts_ms, 0.0);
        }
        if ts_ms < newest_ts {
            return interval(IntervalKind::Late, ts_ms, ts_ms, 0.0);
        }
        if let Some(drop) = self.pending_drop.take()
            && let Some(resolved) = self.resolve_drop(base, drop, ts_ms, kwh, limits)
        {
            return resolved;
        }
        self.step(base, ts_ms, kwh, limits)
    }

    /// Decides a pending drop with the reading after it. Returns `None` when the register is
    /// back near the baseline: the drop was momentary and the reading is a normal step.
    fn resolve_drop(
        &mut self,
        base: Point,
        drop: Point,
        ts_ms: i64,
        kwh: f64,
        limits: &RegisterLimits,
    ) -> Option<Interval> {
        if kwh >= base.kwh - limits.glitch_tolerance_kwh {
            return None;
        }
        if kwh >= drop.kwh - limits.glitch_tolerance_kwh {
            return Some(self.continue_from_drop(base, drop, ts_ms, kwh, limits));
        }
        self.pending_drop = Some(Point { ts_ms, kwh });
        Some(interval(IntervalKind::DropPending, drop.ts_ms, ts_ms, 0.0))
    }

    /// Classifies a reading that continues from the low value of a pending drop: a rollover
    /// that wrapped to near zero, or a new meter that counts from the drop.
    fn continue_from_drop(
        &mut self,
        base: Point,
        drop: Point,
        ts_ms: i64,
        kwh: f64,
        limits: &RegisterLimits,
    ) -> Interval {
        let max_energy_since_base = max_energy_kwh(base.ts_ms, ts_ms, limits);
        if let Some(energy) = rollover_energy(base.kwh, kwh, max_energy_since_base) {
            self.baseline = Some(Point { ts_ms, kwh });
            return interval(IntervalKind::Rollover, base.ts_ms, ts_ms, energy);
        }

        // The energy between the old meter's last reading and the exchange is unknown.
        let energy = (kwh - drop.kwh).max(0.0);
        if energy > max_energy_kwh(drop.ts_ms, ts_ms, limits) {
            self.baseline = Some(Point { ts_ms, kwh });
            return interval(IntervalKind::Jump, drop.ts_ms, ts_ms, 0.0);
        }
        self.baseline = Some(Point {
            ts_ms,
            kwh: kwh.max(drop.kwh),
        });
        interval(IntervalKind::Exchange, drop.ts_ms, ts_ms, energy)
    }

    fn step(&mut self, base: Point, ts_ms: i64, kwh: f64, limits: &RegisterLimits) -> Interval {
        let delta = kwh - base.kwh;
        let max_energy = max_energy_kwh(base.ts_ms, ts_ms, limits);
        if delta >= 0.0 {
            self.baseline = Some(Point { ts_ms, kwh });
            let kind = if delta > max_energy {
                IntervalKind::Jump
            } else if ts_ms - base.ts_ms > limits.max_interval_ms {
                IntervalKind::Gap
            } else {
                IntervalKind::Normal
            };
            let energy = if kind == IntervalKind::Jump {
                0.0
            } else {
                delta
            };
            return interval(kind, base.ts_ms, ts_ms, energy);
        }
        if -delta <= limits.glitch_tolerance_kwh {
            // Keep the higher baseline so the next reading is measured against it.
            return interval(IntervalKind::Glitch, base.ts_ms, ts_ms, 0.0);
        }
        // A drop to near zero may be a momentary zero even at the top of the register, so the
        // next reading decides between a momentary zero, a rollover and a meter exchange.
        if kwh <= limits.exchange_max_start_kwh {
            self.pending_drop = Some(Point { ts_ms, kwh });
            return interval(IntervalKind::DropPending, base.ts_ms, ts_ms, 0.0);
        }
        if let Some(energy) = rollover_energy(base.kwh, kwh, max_energy) {
            self.baseline = Some(Point { ts_ms, kwh });
            return interval(IntervalKind::Rollover, base.ts_ms, ts_ms, energy);
        }
        self.baseline = Some(Point { ts_ms, kwh });
        interval(IntervalKind::Reversal, base.ts_ms, ts_ms, 0.0)
    }
}

/// Returns the most energy a meter can plausibly record between two times, in kWh.
fn max_energy_kwh(start_ms: i64, end_ms: i64, limits: &RegisterLimits) -> f64 {
    let hours = (end_ms - start_ms) as f64 / 3_600_000.0;
    limits.max_power_kw * hours
}

/// Returns the energy of a wrap from `before` to `after` when `before` sits in the top tenth of
/// a register of 10^n kWh, `after` in its bottom tenth, and the energy is plausible.
fn rollover_energy(before: f64, after: f64, max_energy: f64) -> Option<f64> {
    if before < 1.0 {
        return None;
    }
    let modulus = 10f64.powi(before.log10().floor() as i32 + 1);
    let wrapped = modulus - before + after;
    let near_end = before >= 0.9 * modulus && after <= 0.1 * modulus;
    (near_end && wrapped <= max_energy).then_some(wrapped)
}

fn interval(kind: IntervalKind, start_ms: i64, end_ms: i64, energy_kwh: f64) -> Interval {
    Interval {
        kind,
        start_ms,
        end_ms,
        energy_kwh,
    }
}
