//! Property tests: register sequences with duplicates, late readings, dips, zeros, jumps and
//! rollovers never panic, never produce negative or implausible energy, and keep the rolling
//! statistics within their definitions.
//!
//! Inputs stay within what the decoder accepts: timestamps within ±2^53 ms and registers that
//! are finite, non-negative and at most 2^53 kWh.

use proptest::prelude::*;

use super::*;
use crate::config::StateConfig;

const H: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000 / H * H;
const MAX_SAFE: f64 = 9_007_199_254_740_992.0;

/// Builds the model from the default state settings, whose longest window is 168 hours.
fn model() -> StateModel {
    StateModel::new(&StateConfig::default(), 10_000.0)
}

fn limits() -> impl Strategy<Value = RegisterLimits> {
    (
        1..=24 * 60i64,
        0.0..5.0f64,
        0.0..100.0f64,
        1.0..100_000.0f64,
    )
        .prop_map(
            |(max_interval_minutes, glitch, exchange, max_power_kw)| RegisterLimits {
                max_interval_ms: max_interval_minutes * 60_000,
                glitch_tolerance_kwh: glitch,
                exchange_max_start_kwh: exchange,
                max_power_kw,
            },
        )
}

/// A change of the register from one reading to the next.
#[derive(Debug, Clone, Copy)]
enum Register {
    Rise(f64),
    Same,
    Dip(f64),
    Zero,
    NearZero(f64),
    Set(f64),
    /// A value in the top tenth of 10^n kWh.
    Top(i32, f64),
    /// A value in the bottom tenth of 10^n kWh.
    Bottom(i32, f64),
}

impl Register {
    fn apply(self, previous: f64) -> f64 {
        let next = match self {
            Register::Rise(d) => previous + d,
            Register::Same => previous,
            Register::Dip(d) => previous - d,
            Register::Zero => 0.0,
            Register::NearZero(v) | Register::Set(v) => v,
            Register::Top(n, f) => 10f64.powi(n) * (0.9 + 0.1 * f),
            Register::Bottom(n, f) => 10f64.powi(n) * 0.1 * f,
        };
        next.clamp(0.0, MAX_SAFE)
    }
}

fn register_step() -> impl Strategy<Value = Register> {
    prop_oneof![
        4 => (0.0..50.0f64).prop_map(Register::Rise),
        1 => (0.0..1e9f64).prop_map(Register::Rise),
        1 => Just(Register::Same),
        2 => (0.0..3.0f64).prop_map(Register::Dip),
        1 => (3.0..1e6f64).prop_map(Register::Dip),
        1 => Just(Register::Zero),
        1 => (0.0..20.0f64).prop_map(Register::NearZero),
        1 => (0.0..=MAX_SAFE).prop_map(Register::Set),
        1 => (1..16i32, 0.0..1.0f64).prop_map(|(n, f)| Register::Top(n, f)),
        1 => (1..16i32, 0.0..1.0f64).prop_map(|(n, f)| Register::Bottom(n, f)),
    ]
}

fn time_step() -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => Just(0i64),
        1 => -2 * H..0,
        5 => 1..2 * H,
        1 => 2 * H..30 * 24 * H,
        1 => Just(1i64),
        1 => Just(i64::from(i32::MAX) * 1000),
        1 => Just(-i64::from(i32::MAX) * 1000),
    ]
}

/// Arbitrary `(ts_ms, kwh)` readings: duplicates, late readings, dips, zeros, jumps, gaps and
/// rollovers, starting at an arbitrary time and register.
fn readings() -> impl Strategy<Value = Vec<(i64, f64)>> {
    let start = (
        prop_oneof![Just(T0), -(1i64 << 53)..=(1i64 << 53)],
        prop_oneof![0.0..1e6f64, 0.0..=MAX_SAFE],
    );
    (
        start,
        prop::collection::vec((time_step(), register_step()), 0..40),
    )
        .prop_map(|((mut ts, mut kwh), steps)| {
            let mut out = vec![(ts, kwh)];
            for (dt, register) in steps {
                ts = (ts + dt).clamp(-(1 << 53), 1 << 53);
                kwh = register.apply(kwh);
                out.push((ts, kwh));
            }
            out
        })
}

/// Readings on whole seconds, strictly increasing in time and never over `max_interval_ms`
/// apart, with rises no faster than `max_power_kw`.
fn monotone_readings(max_power_kw: f64) -> impl Strategy<Value = Vec<(i64, f64)>> {
    let step = (1..=3 * 3600i64, 0.0..=1.0f64);
    (0.0..1e9f64, prop::collection::vec(step, 1..60)).prop_map(move |(first, steps)| {
        let mut ts = T0;
        let mut kwh = first;
        let mut out = vec![(ts, kwh)];
        for (secs, share) in steps {
            ts += secs * 1000;
            kwh += share * max_power_kw * secs as f64 / 3600.0;
            out.push((ts, kwh));
        }
        out
    })
}

fn reading(ts_ms: i64, kwh: f64) -> Reading {
    Reading::new("south", "m1", ts_ms, kwh)
}

/// Returns true when the step lowered the baseline, after which the register may climb its
/// range again: a rollover, a meter exchange or a reversal.
fn resets_baseline(kind: IntervalKind) -> bool {
    matches!(
        kind,
        IntervalKind::Rollover | IntervalKind::Exchange | IntervalKind::Reversal
    )
}

/// Returns true when `a` and `b` agree to nine digits of `scale`.
fn approx_eq(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-9 * scale.max(1.0)
}

fn check_stats(name: &str, stats: &WindowStats) -> Result<(), TestCaseError> {
    let nonnegative = [
        ("energy_kwh", stats.energy_kwh),
        ("mean_kw", stats.mean_kw),
        ("peak_kw", stats.peak_kw),
        ("base_kw", stats.base_kw),
        ("hours_with_data", stats.hours_with_data),
    ];
    for (field, value) in nonnegative {
        prop_assert!(value.is_finite(), "{} {}: {}", name, field, value);
        prop_assert!(value >= 0.0, "{} {}: {}", name, field, value);
    }
    prop_assert!(
        stats.hours_with_data <= f64::from(stats.hours) + 1e-9,
        "{} hours_with_data {} in a window of {}",
        name,
        stats.hours_with_data,
        stats.hours
    );
    prop_assert!(
        stats.base_kw <= stats.peak_kw,
        "{} base {} above peak {}",
        name,
        stats.base_kw,
        stats.peak_kw
    );
    let load_factor = stats.load_factor;
    prop_assert!(
        load_factor.is_nan() || (0.0..=1.0 + 1e-9).contains(&load_factor),
        "{} load_factor {} (mean {}, peak {})",
        name,
        load_factor,
        stats.mean_kw,
        stats.peak_kw
    );
    for (field, value) in [("night_day_ratio", stats.night_day_ratio), ("cv", stats.cv)] {
        prop_assert!(
            value.is_nan() || (value.is_finite() && value >= 0.0),
            "{} {}: {}",
            name,
            field,
            value
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn register_energy_is_finite_nonnegative_and_plausible(
        readings in readings(),
        limits in limits(),
    ) {
        let mut tracker = RegisterTracker::default();
        for (ts_ms, kwh) in readings {
            let interval = tracker.update(ts_ms, kwh, &limits);
            let energy = interval.energy_kwh;
            prop_assert!(energy.is_finite(), "{:?}", interval);
            prop_assert!(energy >= 0.0, "{:?}", interval);
            prop_assert!(interval.start_ms <= interval.end_ms, "{:?}", interval);

            // Energy counted in the statistics never implies a power above the plausible limit.
            if interval.kind.counts_in_history() {
                let hours = (interval.end_ms - interval.start_ms) as f64 / H as f64;
                let max_energy = limits.max_power_kw * hours;
                prop_assert!(
                    energy <= max_energy * (1.0 + 1e-12),
                    "{:?} exceeds {} kWh at {} kW",
                    interval,
                    max_energy,
                    limits.max_power_kw
                );
            }
        }
    }

    #[test]
    fn energy_intervals_are_disjoint_and_in_order(
        readings in readings(),
        limits in limits(),
    ) {
        let mut tracker = RegisterTracker::default();
        let mut previous_end = i64::MIN;
        for (ts_ms, kwh) in readings {
            let interval = tracker.update(ts_ms, kwh, &limits);
            if interval.energy_kwh > 0.0 {
                prop_assert!(
                    interval.start_ms >= previous_end,
                    "{:?} starts before the previous energy ended at {}",
                    interval,
                    previous_end
                );
                previous_end = interval.end_ms;
            }
        }
    }

    /// Between two steps that lower the baseline the baseline only rises, so the energy of
    /// that run is at most the register's range. Each rollover adds its wrapped energy.
    #[test]
    fn energy_bounded_by_register_range_per_run(
        readings in readings(),
        limits in limits(),
    ) {
        let mut tracker = RegisterTracker::default();
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut energy, mut resets, mut wrapped) = (0.0, 0u32, 0.0);
        for (ts_ms, kwh) in readings {
            min = min.min(kwh);
            max = max.max(kwh);
            let interval = tracker.update(ts_ms, kwh, &limits);
            energy += interval.energy_kwh;
            if resets_baseline(interval.kind) {
                resets += 1;
            }
            if interval.kind == IntervalKind::Rollover {
                wrapped += interval.energy_kwh;
            }
        }
        let bound = f64::from(resets + 1) * (max - min) + wrapped;
        prop_assert!(
            energy <= bound + 1e-9 * bound.max(1.0),
            "energy {} above {} ({} resets, range {} to {}, {} wrapped)",
            energy,
            bound,
            resets,
            min,
            max,
            wrapped
        );
    }

    #[test]
    fn momentary_zero_adds_only_the_rise(
        before in prop_oneof![
            0.0..1e9f64,
            // Registers just below a power of ten, where a drop to zero resembles a rollover.
            (2..10i32, 0.0..0.01f64).prop_map(|(n, f)| 10f64.powi(n) * (1.0 - f)),
        ],
        rise in 0.0..1.0f64,
        zero in 0.0..=10.0f64,
        minutes in (1..=60i64, 1..=60i64),
    ) {
        let limits = RegisterLimits {
            max_interval_ms: 3 * H,
            glitch_tolerance_kwh: 1.0,
            exchange_max_start_kwh: 10.0,
            max_power_kw: 10_000.0,
        };
        prop_assume!(before - 1.0 > zero);
        let mut tracker = RegisterTracker::default();
        let t1 = T0 + minutes.0 * 60_000;
        let t2 = t1 + minutes.1 * 60_000;
        let steps = [(T0, before), (t1, zero), (t2, before + rise)];
        let intervals: Vec<Interval> =
            steps.iter().map(|&(ts, kwh)| tracker.update(ts, kwh, &limits)).collect();
        let total: f64 = intervals.iter().map(|i| i.energy_kwh).sum();
        prop_assert!(approx_eq(total, rise, before), "energy {} for {:?}", total, intervals);
        prop_assert_eq!(tracker.register_kwh(), Some(before + rise));
    }

    #[test]
    fn monotone_small_steps_count_every_kwh(readings in monotone_readings(10_000.0)) {
        let model = model();
        let mut state = model.new_state();
        let mut total = 0.0;
        for (i, &(ts_ms, kwh)) in readings.iter().enumerate() {
            let interval = model.apply(&mut state, &reading(ts_ms, kwh));
            let expected = if i == 0 { IntervalKind::First } else { IntervalKind::Normal };
            prop_assert_eq!(interval.kind, expected, "step {}: {:?}", i, interval);
            total += interval.energy_kwh;
        }

        let first = readings[0].1;
        let last = readings[readings.len() - 1].1;
        prop_assert!(
            approx_eq(total, last - first, last),
            "intervals sum to {} for a rise of {}",
            total,
            last - first
        );

        // The history stores f32 buckets, so it matches to single precision.
        let span_ms = readings[readings.len() - 1].0 - readings[0].0;
        if span_ms <= 160 * H {
            let night = NightHours { start: 0, end: 6 };
            let stored = state.history.stats(168, night).energy_kwh;
            prop_assert!(
                (stored - (last - first)).abs() <= 1e-5 * (last - first) + 1e-6,
                "history holds {} for a rise of {}",
                stored,
                last - first
            );
        }
    }

    #[test]
    fn window_stats_stay_within_definitions(readings in readings()) {
        let model = model();
        let mut state = model.new_state();
        for (ts_ms, kwh) in readings {
            let r = reading(ts_ms, kwh);
            let interval = model.apply(&mut state, &r);
            let snapshot = model.snapshot(&state, &r, interval);
            for (name, stats) in &snapshot.windows {
                check_stats(name, stats)?;
            }
        }
    }

    /// With readings on the hour every hour bucket is fully covered or empty, so the mean is
    /// the mean of the hourly values and lies between base and peak.
    #[test]
    fn hourly_readings_keep_mean_between_base_and_peak(
        steps in prop::collection::vec((1..=3i64, register_step()), 1..60),
    ) {
        let model = model();
        let mut state = model.new_state();
        let (mut ts, mut kwh) = (T0, 1_000.0);
        model.apply(&mut state, &reading(ts, kwh));
        for (hours, register) in steps {
            ts += hours * H;
            kwh = register.apply(kwh);
            model.apply(&mut state, &reading(ts, kwh));
        }
        let night = NightHours { start: 0, end: 6 };
        for stats in state.history.stats_for(&[24, 168], night) {
            check_stats("hourly", &stats)?;
            if stats.peak_kw > 0.0 {
                let slack = 1e-6 * stats.peak_kw;
                prop_assert!(stats.base_kw <= stats.mean_kw + slack, "{:?}", stats);
                prop_assert!(stats.mean_kw <= stats.peak_kw + slack, "{:?}", stats);
            }
        }
    }

    #[test]
    fn history_add_never_panics(
        intervals in prop::collection::vec(
            (-(1i64 << 53)..=(1i64 << 53), 0..=10 * H, 0.0..1e6f64),
            0..30,
        ),
        capacity in 0..200u32,
    ) {
        let mut history = HourlyHistory::new(capacity);
        for (start, duration, energy) in intervals {
            history.add(start, start + duration, energy);
        }
        let night = NightHours { start: 22, end: 6 };
        for stats in history.stats_for(&[1, 24, capacity], night) {
            check_stats("direct", &stats)?;
        }
    }
}
