use super::*;
use crate::config::StateConfig;

const H: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000 / H * H;

fn limits() -> RegisterLimits {
    RegisterLimits {
        max_interval_ms: 3 * H,
        glitch_tolerance_kwh: 1.0,
        exchange_max_start_kwh: 10.0,
        max_power_kw: 1_000.0,
    }
}

/// Feeds `(hours after T0, register kWh)` steps and returns each step's kind and energy.
fn run(steps: &[(f64, f64)]) -> Vec<(IntervalKind, f64)> {
    let mut tracker = RegisterTracker::default();
    steps
        .iter()
        .map(|&(hours, kwh)| {
            let interval = tracker.update(T0 + (hours * H as f64) as i64, kwh, &limits());
            (
                interval.kind,
                (interval.energy_kwh * 1000.0).round() / 1000.0,
            )
        })
        .collect()
}

#[test]
fn register_cases_give_expected_interval_energy() {
    use IntervalKind::*;
    type Case<'a> = (&'a str, &'a [(f64, f64)], &'a [(IntervalKind, f64)]);
    let cases: &[Case] = &[
        (
            "steady consumption",
            &[(0.0, 100.0), (1.0, 101.5), (2.0, 103.0)],
            &[(First, 0.0), (Normal, 1.5), (Normal, 1.5)],
        ),
        (
            "duplicate reading",
            &[(0.0, 100.0), (1.0, 101.0), (1.0, 101.0), (2.0, 102.0)],
            &[(First, 0.0), (Normal, 1.0), (Duplicate, 0.0), (Normal, 1.0)],
        ),
        (
            "out of order reading",
            &[(0.0, 100.0), (2.0, 102.0), (1.0, 101.0), (3.0, 103.0)],
            &[(First, 0.0), (Normal, 2.0), (Late, 0.0), (Normal, 1.0)],
        ),
        (
            "small negative glitch",
            &[(0.0, 100.0), (1.0, 99.9), (2.0, 101.0)],
            &[(First, 0.0), (Glitch, 0.0), (Normal, 1.0)],
        ),
        (
            "momentary zero",
            &[(0.0, 5000.0), (1.0, 0.0), (2.0, 5002.0)],
            &[(First, 0.0), (DropPending, 0.0), (Normal, 2.0)],
        ),
        (
            "register rollover",
            &[(0.0, 99_999.0), (1.0, 12.0)],
            &[(First, 0.0), (Rollover, 13.0)],
        ),
        (
            "rollover to near zero decided by the next reading",
            &[(0.0, 99_999.0), (1.0, 2.0), (2.0, 3.0)],
            &[(First, 0.0), (DropPending, 0.0), (Rollover, 4.0)],
        ),
        (
            "momentary zero at the top of the register",
            &[(0.0, 99_990.0), (1.0, 0.0), (2.0, 99_991.0)],
            &[(First, 0.0), (DropPending, 0.0), (Normal, 1.0)],
        ),
        (
            "meter exchange",
            &[(0.0, 5000.0), (1.0, 0.2), (2.0, 1.7), (3.0, 3.0)],
            &[
                (First, 0.0),
                (DropPending, 0.0),
                (Exchange, 1.5),
                (Normal, 1.3),
            ],
        ),
        (
            "gap is marked",
            &[(0.0, 100.0), (10.0, 130.0), (11.0, 131.0)],
            &[(First, 0.0), (Gap, 30.0), (Normal, 1.0)],
        ),
        (
            "exchange faster than max power",
            &[(0.0, 5000.0), (1.0, 0.0), (1.001, 4000.0)],
            &[(First, 0.0), (DropPending, 0.0), (Jump, 0.0)],
        ),
        (
            "register going backwards",
            &[(0.0, 5000.0), (1.0, 4000.0), (2.0, 4001.0)],
            &[(First, 0.0), (Reversal, 0.0), (Normal, 1.0)],
        ),
        (
            "implausible jump",
            &[(0.0, 100.0), (1.0, 900_000.0), (2.0, 900_001.0)],
            &[(First, 0.0), (Jump, 0.0), (Normal, 1.0)],
        ),
        (
            "late reading after a drop",
            &[(0.0, 5000.0), (2.0, 0.0), (1.0, 4999.0), (3.0, 5001.0)],
            &[(First, 0.0), (DropPending, 0.0), (Late, 0.0), (Normal, 1.0)],
        ),
    ];
    for (name, steps, expected) in cases {
        let got = run(steps);
        assert_eq!(&got, expected, "case '{name}'");
    }
}

fn reading(hours: f64, kwh: f64) -> Reading {
    Reading::new("south", "m1", T0 + (hours * H as f64) as i64, kwh)
}

/// Feeds hourly readings whose hourly energy is `load(hour)` and returns the 7-day stats.
fn week_stats(load: impl Fn(i64) -> f64) -> WindowStats {
    let model = StateModel::new(&StateConfig::default(), 10_000.0);
    let mut state = model.new_state();
    let mut register = 1_000.0;
    let mut last = None;
    for hour in 0..=168 {
        if hour > 0 {
            register += load(hour);
        }
        let r = reading(hour as f64, register);
        let interval = model.apply(&mut state, &r);
        last = Some(model.snapshot(&state, &r, interval));
    }
    *last.unwrap().window("7d").unwrap()
}

#[test]
fn flat_load_has_high_load_factor() {
    let stats = week_stats(|_| 3.25);
    assert!(
        (stats.mean_kw - 3.25).abs() < 1e-3,
        "mean {}",
        stats.mean_kw
    );
    assert!(
        (stats.load_factor - 1.0).abs() < 1e-3,
        "load factor {}",
        stats.load_factor
    );
    assert!(
        (stats.base_kw - 3.25).abs() < 1e-3,
        "base {}",
        stats.base_kw
    );
    assert!(
        (stats.night_day_ratio - 1.0).abs() < 1e-3,
        "night/day {}",
        stats.night_day_ratio
    );
    assert!(stats.cv < 1e-3, "cv {}", stats.cv);
    assert!(
        (stats.hours_with_data - 168.0).abs() < 1e-6,
        "hours {}",
        stats.hours_with_data
    );
}

#[test]
fn household_profile_has_low_load_factor() {
    // 0.2 kW at night, 0.5 kW by day, 3 kW for two evening hours.
    let stats = week_stats(|h| match h.rem_euclid(24) {
        0..6 => 0.2,
        18 | 19 => 3.0,
        _ => 0.5,
    });
    assert!(stats.load_factor < 0.3, "load factor {}", stats.load_factor);
    assert!((stats.base_kw - 0.2).abs() < 1e-3, "base {}", stats.base_kw);
    assert!(
        stats.night_day_ratio < 0.5,
        "night/day {}",
        stats.night_day_ratio
    );
    assert!((stats.peak_kw - 3.0).abs() < 1e-3, "peak {}", stats.peak_kw);
}

#[test]
fn gap_energy_stays_out_of_history() {
    let model = StateModel::new(&StateConfig::default(), 10_000.0);
    let mut state = model.new_state();
    for (hours, kwh) in [(0.0, 100.0), (1.0, 101.0), (20.0, 500.0), (21.0, 501.0)] {
        model.apply(&mut state, &reading(hours, kwh));
    }
    let stats = state.history.stats(24, NightHours { start: 0, end: 6 });
    assert!(
        (stats.energy_kwh - 2.0).abs() < 1e-6,
        "energy {}",
        stats.energy_kwh
    );
    assert!(
        (stats.hours_with_data - 2.0).abs() < 1e-6,
        "hours {}",
        stats.hours_with_data
    );
}

#[test]
fn state_round_trips_through_postcard() {
    let model = StateModel::new(&StateConfig::default(), 10_000.0);
    let mut state = model.new_state();
    for (hours, kwh) in [(0.0, 100.0), (1.0, 101.0), (2.0, 99.0)] {
        model.apply(&mut state, &reading(hours, kwh));
    }
    let bytes = postcard::to_allocvec(&state).unwrap();
    let back: MeterState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
}

#[test]
fn one_pass_stats_match_single_windows() {
    let model = StateModel::new(&StateConfig::default(), 10_000.0);
    let mut state = model.new_state();
    for hour in 0..200 {
        let kwh = 1_000.0 + f64::from(hour) * 0.7 + f64::from(hour % 5);
        model.apply(&mut state, &reading(f64::from(hour) * 0.93, kwh));
    }
    let night = NightHours { start: 22, end: 6 };
    let together = state.history.stats_for(&[24, 168, 5], night);
    for (i, hours) in [24, 168, 5].into_iter().enumerate() {
        let alone = state.history.stats(hours, night);
        // Debug output compares NaN ratios as equal, which `==` does not.
        assert_eq!(
            format!("{:?}", together[i]),
            format!("{alone:?}"),
            "window of {hours} hours"
        );
    }
}

#[test]
fn recent_hours_are_consecutive_columns() {
    let mut history = HourlyHistory::new(6);
    assert_eq!(history.recent(24), RecentHours::default());
    // Two and a half hours at 2 kW from T0, then one hour at 1 kW after a gap of two hours.
    history.add(T0, T0 + 5 * H / 2, 5.0);
    history.add(T0 + 4 * H + H / 2, T0 + 5 * H + H / 2, 1.0);

    let recent = history.recent(4);
    assert_eq!(recent.start_ms, T0 + 2 * H);
    assert_eq!(recent.energy_kwh, [1.0, 0.0, 0.5, 0.5]);
    assert_eq!(recent.covered_secs, [1_800, 0, 1_800, 1_800]);
    let starts: Vec<i64> = recent.iter().map(|(start, _, _)| start).collect();
    assert_eq!(starts, [T0 + 2 * H, T0 + 3 * H, T0 + 4 * H, T0 + 5 * H]);

    // Asking for more hours than the ring keeps gives the whole ring.
    let all = history.recent(100);
    assert_eq!(all.start_ms, T0);
    assert_eq!(all.energy_kwh, [2.0, 2.0, 1.0, 0.0, 0.5, 0.5]);
}
