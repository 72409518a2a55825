use gridwatch_plugin_sdk::prelude::*;

use super::{Cache, DAY_MS, HOUR_MS, Profile, detect_with, settings};

/// Start of the test data: Monday 2025-03-03 00:00 UTC.
const START_MS: i64 = 1_740_960_000_000;

/// Hourly energy of a household by hour of the day (UTC), kWh: low at night, peaks in the
/// morning and evening.
fn household_kwh(day: i64, hour: i64) -> f64 {
    let shape = match hour {
        0..=5 => 0.25,
        6..=8 => 0.7,
        9..=16 => 0.4,
        17..=21 => 1.1,
        _ => 0.5,
    };
    // A repeatable wobble of up to 8 % from day to day.
    shape * (1.0 + 0.02 * ((day * 7 + hour) % 5) as f64)
}

/// A meter's readings: energy per interval, built day by day.
struct Series {
    meter: &'static str,
    step_ms: i64,
    /// Energy of each interval, kWh.
    energy_kwh: Vec<f64>,
    /// Export register step of each interval, kWh.
    export_kwh: Vec<f64>,
}

impl Series {
    /// Hourly readings of `days` days, with `change` applied to each hour's energy.
    fn hourly(meter: &'static str, days: i64, change: impl Fn(i64, i64, f64) -> f64) -> Series {
        let mut energy_kwh = Vec::new();
        for day in 0..days {
            for hour in 0..24 {
                energy_kwh.push(change(day, hour, household_kwh(day, hour)));
            }
        }
        let export_kwh = vec![0.0; energy_kwh.len()];
        Series {
            meter,
            step_ms: HOUR_MS,
            energy_kwh,
            export_kwh,
        }
    }

    /// Daily readings of `days` days, with `change` applied to each day's energy.
    fn daily(meter: &'static str, days: i64, change: impl Fn(i64, f64) -> f64) -> Series {
        let energy_kwh: Vec<f64> = (0..days)
            .map(|day| {
                let total: f64 = (0..24).map(|hour| household_kwh(day, hour)).sum();
                change(day, total)
            })
            .collect();
        let export_kwh = vec![0.0; energy_kwh.len()];
        Series {
            meter,
            step_ms: DAY_MS,
            energy_kwh,
            export_kwh,
        }
    }

    /// Replays the series in batches of one day's readings and returns every finding.
    fn run(&self, host: &mut impl Host, cache: &mut Cache) -> Vec<Finding> {
        let per_batch = (DAY_MS / self.step_ms) as usize;
        let mut findings = Vec::new();
        let mut register_kwh = 1000.0;
        let mut export_register_kwh = 0.0;
        let mut index = 0;
        while index < self.energy_kwh.len() {
            let end = (index + per_batch).min(self.energy_kwh.len());
            let mut builder = BatchBuilder::new();
            for i in index..end {
                register_kwh += self.energy_kwh[i];
                export_register_kwh += self.export_kwh[i];
                let end_ms = START_MS + (i as i64 + 1) * self.step_ms;
                builder.push(&NewReading {
                    region: "north",
                    meter: self.meter,
                    last_score: None,
                    timestamp_ms: end_ms,
                    energy_import_kwh: register_kwh,
                    energy_export_kwh: Some(export_register_kwh),
                    power_w: None,
                    voltage_v: &[],
                    current_a: &[],
                    events: &[],
                    register_kwh,
                    interval: Interval {
                        kind: IntervalKind::Normal,
                        start_ms: end_ms - self.step_ms,
                        end_ms,
                        energy_kwh: self.energy_kwh[i],
                    },
                    windows: &[],
                    register_reversals: 0,
                    meter_readings: i as u64 + 1,
                });
            }
            findings.extend(detect_with(host, cache, &builder.build()));
            index = end;
        }
        findings
    }
}

/// Returns a host with the declared defaults and short level-drop windows, so that tests of
/// hourly data need weeks, not months, of readings.
fn host() -> MemoryHost {
    let mut host = MemoryHost::with_defaults(&settings());
    for (name, value) in [
        ("recent_days", 4),
        ("baseline_days", 6),
        ("min_baseline_days", 4),
        ("confirm_days", 2),
    ] {
        host.settings.insert(name.into(), Value::Integer(value));
    }
    host.settings
        .insert("drop_ratio".into(), Value::Number(0.4));
    host
}

fn run(series: &Series) -> Vec<Finding> {
    series.run(&mut host(), &mut Cache::new(0))
}

fn text(finding: &Finding, name: &str) -> String {
    match finding.evidence.iter().find(|e| e.name == name) {
        Some(Entry {
            value: Value::Text(text),
            ..
        }) => text.clone(),
        other => panic!("evidence {name} is not text: {other:?}"),
    }
}

fn checks(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(|f| text(f, "check")).collect()
}

/// Day from which the test changes apply.
const ONSET_DAY: i64 = 8;

#[test]
fn clean_household_raises_nothing() {
    let findings = run(&Series::hourly("clean", 20, |_, _, kwh| kwh));
    assert!(findings.is_empty(), "findings: {findings:?}");
}

#[test]
fn zeroed_hours_raise_zero_run() {
    let series = Series::hourly("zeroed", 14, |day, hour, kwh| {
        let zeroed = day >= ONSET_DAY && (2..10).contains(&hour);
        if zeroed { 0.0 } else { kwh }
    });
    let findings = run(&series);
    assert_eq!(checks(&findings), ["zero_run"]);
    assert_eq!(findings[0].kind, "theft");
    assert!(
        findings[0]
            .message
            .contains("8 hours from 02:00 UTC on 2 day(s)")
    );
}

#[test]
fn evening_moved_to_night_raises_zero_run() {
    let series = Series::hourly("shifted", 14, |day, hour, kwh| {
        if day < ONSET_DAY {
            return kwh;
        }
        let evening: f64 = (17..22).map(|h| household_kwh(day, h)).sum();
        match hour {
            17..=21 => 0.0,
            1..=5 => kwh + evening / 5.0,
            _ => kwh,
        }
    });
    let findings = run(&series);
    assert!(checks(&findings).contains(&"zero_run".to_owned()));
}

#[test]
fn single_zero_run_needs_one_day_setting() {
    let series = Series::hourly("once", 10, |day, hour, kwh| {
        if day == ONSET_DAY && (10..16).contains(&hour) {
            0.0
        } else {
            kwh
        }
    });
    assert!(run(&series).is_empty());

    let mut host = host();
    host.settings
        .insert("min_zero_days".into(), Value::Integer(1));
    let findings = series.run(&mut host, &mut Cache::new(0));
    assert_eq!(checks(&findings), ["zero_run"]);
}

#[test]
fn day_long_outage_is_ignored() {
    let series = Series::hourly("outage", 14, |day, _, kwh| {
        if day == ONSET_DAY || day == ONSET_DAY + 2 {
            0.0
        } else {
            kwh
        }
    });
    assert!(run(&series).is_empty());
}

#[test]
fn flattened_days_raise_flat_profile() {
    let series = Series::hourly("flat", 14, |day, _, kwh| {
        if day < ONSET_DAY {
            return kwh;
        }
        (0..24).map(|h| household_kwh(day, h)).sum::<f64>() / 24.0
    });
    let findings = run(&series);
    assert_eq!(checks(&findings), ["flat_profile"]);
    assert!(findings[0].message.contains("flat for 3 days"));
}

#[test]
fn flat_history_keeps_flat_days_quiet() {
    // Estimated readings spread evenly over a day look like flattening. A meter that had such
    // days before gives no evidence by them.
    let flat = |day: i64| (0..24).map(|h| household_kwh(day, h)).sum::<f64>() / 24.0;
    let series = Series::hourly("estimated", 14, |day, _, kwh| {
        if day == 3 || day >= ONSET_DAY {
            flat(day)
        } else {
            kwh
        }
    });
    assert!(run(&series).is_empty());
}

#[test]
fn scaled_readings_raise_level_drop() {
    let series = Series::hourly(
        "scaled",
        14,
        |day, _, kwh| {
            if day >= ONSET_DAY { kwh * 0.3 } else { kwh }
        },
    );
    let findings = run(&series);
    assert_eq!(checks(&findings), ["level_drop"]);
    assert!(findings[0].score > 0.6, "score {}", findings[0].score);
}

#[test]
fn mild_scaling_stays_above_drop_ratio() {
    let series = Series::hourly(
        "mild",
        14,
        |day, _, kwh| {
            if day >= ONSET_DAY { kwh * 0.8 } else { kwh }
        },
    );
    assert!(run(&series).is_empty());
}

#[test]
fn scaled_daily_readings_raise_level_drop_with_defaults() {
    let series = Series::daily(
        "daily",
        400,
        |day, kwh| {
            if day >= 300 { kwh * 0.25 } else { kwh }
        },
    );
    let mut host = MemoryHost::with_defaults(&settings());
    let findings = series.run(&mut host, &mut Cache::new(0));
    assert!(!findings.is_empty());
    assert!(checks(&findings).iter().all(|check| check == "level_drop"));
    // The drop lasts, so the finding repeats once a week, as `realert_hours` allows.
    let at = |f: &Finding| match f.evidence.iter().find(|e| e.name == "at_ms") {
        Some(Entry {
            value: Value::Integer(ms),
            ..
        }) => *ms,
        other => panic!("at_ms is not an integer: {other:?}"),
    };
    let first_day = (at(&findings[0]) - START_MS) / DAY_MS;
    // The median of the 91 recent days falls once more than half of them follow the change.
    assert!(
        (345..=350).contains(&first_day),
        "first finding on day {first_day}"
    );
    for pair in findings.windows(2) {
        assert_eq!(at(&pair[1]) - at(&pair[0]), 7 * DAY_MS);
    }
}

#[test]
fn daily_readings_give_no_hourly_checks() {
    // Daily totals hide the hours, so a flattened or shifted day changes nothing.
    let series = Series::daily("daily", 30, |_, kwh| kwh);
    let findings = run(&series);
    assert!(findings.is_empty(), "findings: {findings:?}");
}

#[test]
fn holiday_home_is_a_vacancy_not_theft() {
    let series = Series::hourly("holiday", 16, |day, _, kwh| {
        if day >= ONSET_DAY { kwh * 0.05 } else { kwh }
    });
    let findings = run(&series);
    assert!(findings.is_empty(), "findings: {findings:?}");
}

#[test]
fn ev_charging_raises_nothing() {
    let series = Series::hourly("ev", 16, |day, hour, kwh| {
        let charging = day >= ONSET_DAY && day % 7 < 4 && hour < 3;
        if charging { kwh + 7.4 } else { kwh }
    });
    assert!(run(&series).is_empty());
}

#[test]
fn electric_heating_raises_nothing() {
    let series = Series::hourly("heating", 16, |day, hour, kwh| {
        let heating = day >= ONSET_DAY && (hour < 7 || (17..23).contains(&hour));
        if heating { kwh + 3.0 } else { kwh }
    });
    assert!(run(&series).is_empty());
}

#[test]
fn heat_pump_raises_nothing() {
    let series = Series::hourly("heat-pump", 16, |day, hour, kwh| {
        let pump_kw = if hour < 6 { 1.2 * 1.3 } else { 1.2 * 0.9 };
        if day >= ONSET_DAY { kwh + pump_kw } else { kwh }
    });
    assert!(run(&series).is_empty());
}

#[test]
fn mining_rig_is_not_flattening() {
    let series = Series::hourly(
        "rig",
        16,
        |day, _, kwh| {
            if day >= ONSET_DAY { kwh + 20.0 } else { kwh }
        },
    );
    assert!(run(&series).is_empty());
}

#[test]
fn pv_export_raises_nothing() {
    // Panels cover the daytime load and export the rest, so import reads zero for 9 hours.
    let mut series = Series::hourly("pv", 16, |day, hour, kwh| {
        let sunny = day >= ONSET_DAY && (8..17).contains(&hour);
        if sunny { (kwh - 0.75).max(0.0) } else { kwh }
    });
    for (i, export) in series.export_kwh.iter_mut().enumerate() {
        let (day, hour) = (i as i64 / 24, i as i64 % 24);
        if day >= ONSET_DAY && (8..17).contains(&hour) {
            *export = 1.75;
        }
    }
    assert!(run(&series).is_empty());
}

#[test]
fn check_waits_realert_hours_before_repeating() {
    let series = Series::hourly("zeroed", 30, |day, hour, kwh| {
        if day >= ONSET_DAY && (2..10).contains(&hour) {
            0.0
        } else {
            kwh
        }
    });
    // Days 8 to 29 have the pattern; 168 h between findings allows days 9, 16, 23.
    let findings = run(&series);
    assert_eq!(checks(&findings), ["zero_run", "zero_run", "zero_run"]);
}

/// A host that counts state writes.
struct CountingHost {
    inner: MemoryHost,
    writes: usize,
}

impl Host for CountingHost {
    fn get_state(&mut self, meter: Meter<'_>, key: &str) -> Option<Vec<u8>> {
        self.inner.get_state(meter, key)
    }

    fn set_state(&mut self, meter: Meter<'_>, key: &str, value: &[u8]) {
        self.writes += 1;
        self.inner.set_state(meter, key, value);
    }

    fn delete_state(&mut self, meter: Meter<'_>, key: &str) {
        self.inner.delete_state(meter, key);
    }

    fn setting(&mut self, region: &str, name: &str) -> Option<Value> {
        self.inner.setting(region, name)
    }

    fn history(
        &mut self,
        meter: Meter<'_>,
        hours: u32,
    ) -> Vec<gridwatch_plugin_sdk::prelude::Hour> {
        self.inner.history(meter, hours)
    }

    fn meter_history(
        &mut self,
        region: &str,
        meter_id: &str,
        hours: u32,
    ) -> Vec<gridwatch_plugin_sdk::prelude::Hour> {
        self.inner.meter_history(region, meter_id, hours)
    }
}

#[test]
fn cache_gives_the_same_findings_with_fewer_writes() {
    let series = Series::hourly("zeroed", 14, |day, hour, kwh| {
        let zeroed = day >= ONSET_DAY && (2..10).contains(&hour);
        if zeroed { 0.0 } else { kwh }
    });
    // Readings come in batches of one day, and the last day never completes.
    let batches = 14;

    let mut uncached_host = CountingHost {
        inner: host(),
        writes: 0,
    };
    let uncached = series.run(&mut uncached_host, &mut Cache::new(0));
    assert_eq!(
        uncached_host.writes, batches,
        "one write per call without a cache"
    );

    let mut cached_host = CountingHost {
        inner: host(),
        writes: 0,
    };
    let cached = series.run(&mut cached_host, &mut Cache::new(100));
    assert_eq!(checks(&cached), checks(&uncached));
    // 13 completed days, and the finding on day 9 comes in the same call as a completed day.
    assert_eq!(
        cached_host.writes, 13,
        "one write per completed day with a cache"
    );
}

#[test]
fn full_cache_writes_every_call() {
    let series = Series::hourly("zeroed", 14, |_, _, kwh| kwh);
    let mut host = CountingHost {
        inner: host(),
        writes: 0,
    };
    let mut cache = Cache::new(1);
    cache
        .profiles
        .insert(("north".into(), "other".into()), Profile::default());
    series.run(&mut host, &mut cache);
    assert_eq!(host.writes, 14, "one write per call once the cache is full");
    assert_eq!(cache.profiles.len(), 1, "the cache keeps its first meter");
}

#[test]
fn profile_survives_encoding() {
    let mut host = host();
    Series::hourly("stored", 5, |_, _, kwh| kwh).run(&mut host, &mut Cache::new(0));
    let bytes = host.state.values().next().expect("a stored profile");
    let profile = Profile::decode(bytes).expect("a valid profile");
    assert_eq!(profile.days.len(), 4);
    assert_eq!(Profile::decode(&profile.encode()), Some(profile.clone()));
    assert_eq!(Profile::decode(&bytes[..bytes.len() - 1]), None);
}

#[test]
fn profile_splits_hours_and_days() {
    let mut profile = Profile::default();
    let day_ms = START_MS;
    // A 30-minute interval that ends at 00:30 lies in hour 0, which is still open.
    let done = profile.add(day_ms, day_ms + HOUR_MS / 2, 0.2, None, 10);
    assert!(done.hours.is_empty());

    // An hour ending at 01:30 completes hour 0 with half of its energy.
    let done = profile.add(
        day_ms + HOUR_MS / 2,
        day_ms + 3 * HOUR_MS / 2,
        0.6,
        None,
        10,
    );
    assert_eq!(done.hours.len(), 1);
    assert!((done.hours[0].energy_kwh - 0.5).abs() < 1e-6);
    assert!((done.hours[0].covered - 1.0).abs() < 1e-6);

    // A late interval is ignored.
    let done = profile.add(day_ms, day_ms + HOUR_MS, 5.0, None, 10);
    assert_eq!(done, Default::default());

    // A day-long interval counts towards the days' totals only, and completes the first day.
    let done = profile.add(
        day_ms + 3 * HOUR_MS / 2,
        day_ms + DAY_MS + 3 * HOUR_MS / 2,
        2.4,
        None,
        10,
    );
    assert_eq!(done.days.len(), 1);
    assert!((done.days[0].energy_kwh - 3.05).abs() < 1e-5);
    assert_eq!(done.days[0].resolved_hours, 1);
}
