use gridwatch_plugin_sdk::prelude::*;

use super::step::{Before, fit_rigs, in_season, month_of};
use super::{STEP_KEY, detect_with, push_tenths, ramp, settings};

const HOUR_MS: i64 = 3_600_000;
/// Monday 2 June 2025, 00:00 UTC: outside the heating season.
const SUMMER_MS: i64 = 1_748_822_400_000;
/// Monday 6 January 2025, 00:00 UTC: inside the heating season.
const WINTER_MS: i64 = 1_736_121_600_000;

/// Returns a household's hourly load, kW: 0.25 at night, 0.6 by day, 1.5 in the evening.
fn household_kw(hour_of_day: i64) -> f64 {
    match hour_of_day {
        0..=5 => 0.25,
        17..=21 => 1.5,
        _ => 0.6,
    }
}

/// Builds `days` days of hourly power from `start_ms`, each hour from `kw(hour index)`.
fn hourly(start_ms: i64, days: i64, kw: impl Fn(i64) -> f64) -> Vec<Hour> {
    (0..days * 24)
        .map(|h| Hour {
            start_ms: start_ms + h * HOUR_MS,
            energy_kwh: kw(h),
            covered_secs: 3_600,
        })
        .collect()
}

/// Builds the statistics of a window over the newest `hours` hours, as the daemon computes
/// them, with night from 22:00 to 06:00 UTC.
fn window_of<'a>(name: &'a str, history: &[Hour], hours: usize) -> Window<'a> {
    let recent = &history[history.len() - hours..];
    let kw: Vec<f64> = recent.iter().map(|h| h.energy_kwh).collect();
    let energy: f64 = kw.iter().sum();
    let mean = energy / hours as f64;
    let peak = kw.iter().copied().fold(f64::MIN, f64::max);
    let base = kw.iter().copied().fold(f64::MAX, f64::min);
    let is_night = |h: &Hour| {
        let hour = h.start_ms / HOUR_MS % 24;
        !(6..22).contains(&hour)
    };
    let average = |night: bool| {
        let part: Vec<f64> = recent
            .iter()
            .filter(|h| is_night(h) == night)
            .map(|h| h.energy_kwh)
            .collect();
        part.iter().sum::<f64>() / part.len() as f64
    };
    let variance = kw.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / hours as f64;
    Window {
        name,
        hours: hours as u32,
        hours_with_data: hours as f64,
        energy_kwh: energy,
        mean_kw: mean,
        peak_kw: peak,
        base_kw: base,
        load_factor: mean / peak,
        night_day_ratio: average(true) / average(false),
        cv: variance.sqrt() / mean,
    }
}

/// Builds a batch of one reading of `meter` that ends with the newest hour of `history`, with
/// an interval of `interval_hours` and `24h` and `7d` windows.
fn reading_after(
    meter: &str,
    history: &[Hour],
    interval_hours: f64,
    last_score: Option<f64>,
) -> Batch {
    let end_ms = history.last().unwrap().start_ms + HOUR_MS;
    let windows = [
        window_of("24h", history, 24),
        window_of("7d", history, 168.min(history.len())),
    ];
    let mut builder = BatchBuilder::new();
    builder.push(&NewReading {
        region: "north",
        meter,
        last_score,
        timestamp_ms: end_ms,
        energy_import_kwh: 1_000.0,
        energy_export_kwh: None,
        power_w: None,
        voltage_v: &[],
        current_a: &[],
        events: &[],
        register_kwh: 1_000.0,
        interval: Interval {
            kind: IntervalKind::Normal,
            start_ms: end_ms - (interval_hours * HOUR_MS as f64) as i64,
            end_ms,
            energy_kwh: history.last().unwrap().energy_kwh * interval_hours,
        },
        windows: &windows,
        register_reversals: 0,
        meter_readings: history.len() as u64,
    });
    builder.build()
}

/// Runs the detector on one reading after `history` and returns its findings and host.
fn detect(meter: &str, history: Vec<Hour>, interval_hours: f64) -> (Vec<Finding>, MemoryHost) {
    let mut host = MemoryHost::with_defaults(&settings());
    let batch = reading_after(meter, &history, interval_hours, None);
    host.history
        .insert(("north".to_owned(), meter.to_owned()), history);
    let found = detect_with(&mut host, &batch);
    (found, host)
}

/// Six days of household load, then the household plus `extra(hour of day, day)` for `after`
/// hours, from `start_ms`.
fn with_extra(start_ms: i64, after: i64, extra: impl Fn(i64, i64) -> f64) -> Vec<Hour> {
    let onset = 6 * 24;
    let mut history = hourly(start_ms, 6, |h| household_kw(h % 24));
    history.extend((onset..onset + after).map(|h| {
        let hour_of_day = h % 24;
        Hour {
            start_ms: start_ms + h * HOUR_MS,
            energy_kwh: household_kw(hour_of_day) + extra(hour_of_day, h / 24),
            covered_secs: 3_600,
        }
    }));
    history
}

fn evidence<'a>(finding: &'a Finding, name: &str) -> &'a Value {
    &finding
        .evidence
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no evidence {name}: {finding:?}"))
        .value
}

fn number(finding: &Finding, name: &str) -> f64 {
    match evidence(finding, name) {
        Value::Number(n) => *n,
        Value::Integer(i) => *i as f64,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

fn alerts(found: &[Finding]) -> Vec<&Finding> {
    found
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .collect()
}

#[test]
fn two_rigs_raise_alert_with_rig_count() {
    let history = with_extra(SUMMER_MS, 30, |_, _| 6.5);
    let (found, _) = detect("rig", history, 1.0);

    let alerts = alerts(&found);
    assert_eq!(alerts.len(), 1, "{found:?}");
    assert_eq!(alerts[0].score, 1.0);
    assert_eq!(
        alerts[0].severity,
        Severity::Medium,
        "two rigs are under high_rigs"
    );
    assert_eq!(number(alerts[0], "estimated_rigs"), 2.0);
    let step_kw = number(alerts[0], "step_kw");
    assert!((step_kw - 6.5).abs() < 0.01, "step_kw {step_kw}");
}

#[test]
fn onset_is_first_hour_of_step() {
    let history = with_extra(SUMMER_MS, 30, |_, _| 6.5);
    let (found, host) = detect("rig", history, 1.0);

    let onset_ms = SUMMER_MS + 6 * 24 * HOUR_MS;
    assert_eq!(number(&found[0], "onset_ms"), onset_ms as f64);
    let key = ("north".to_owned(), "rig".to_owned(), STEP_KEY.to_owned());
    let stored = host.state.get(&key).and_then(|b| Before::from_bytes(b));
    assert_eq!(
        stored.map(|b| b.onset_ms),
        Some(onset_ms),
        "onset kept in state"
    );
}

#[test]
fn weak_rise_keeps_no_step() {
    // 0.8 kW more all day scores under a held step: reported, but not kept in state.
    let history = with_extra(SUMMER_MS, 30, |_, _| 0.8);
    let (found, host) = detect("kettle", history, 1.0);

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].severity, Severity::Info);
    assert!(found[0].score < 0.5, "score {}", found[0].score);
    assert!(host.state.is_empty(), "state {:?}", host.state);
}

#[test]
fn many_rigs_raise_high_alert() {
    let history = with_extra(SUMMER_MS, 26, |_, _| 8.0 * 3.25);
    let (found, _) = detect("farm", history, 1.0);

    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(number(&found[0], "estimated_rigs"), 8.0);
}

#[test]
fn one_small_rig_raises_alert() {
    let history = with_extra(SUMMER_MS, 26, |_, _| 1.4);
    let (found, _) = detect("s9", history, 1.0);

    assert_eq!(alerts(&found).len(), 1, "{found:?}");
    assert_eq!(number(&found[0], "estimated_rigs"), 1.0);
}

#[test]
fn step_under_a_day_old_is_not_judged() {
    // The 24 h window still contains hours from before the rigs, so its base load is low.
    let history = with_extra(SUMMER_MS, 20, |_, _| 6.5);
    let (found, _) = detect("rig", history, 1.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn ev_charging_is_not_flagged() {
    // 7.4 kW from 00:00 to 03:00 on four nights of seven.
    let history = with_extra(SUMMER_MS, 48, |hour, day| {
        if hour < 3 && day % 7 < 4 { 7.4 } else { 0.0 }
    });
    let (found, _) = detect("ev", history, 1.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn electric_heating_is_not_flagged() {
    // 3 kW at night and in the evening, in winter.
    let history = with_extra(WINTER_MS, 48, |hour, _| {
        if hour < 7 || (17..23).contains(&hour) {
            3.0
        } else {
            0.0
        }
    });
    let (found, _) = detect("heater", history, 1.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn heat_pump_is_not_flagged() {
    // Up to 1.2 kW, more at night: modest and modulating.
    let history = with_extra(WINTER_MS, 48, |hour, _| if hour < 6 { 1.2 } else { 0.8 });
    let (found, _) = detect("heat-pump", history, 1.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn holiday_home_and_pv_export_are_not_flagged() {
    let holiday = with_extra(SUMMER_MS, 48, |hour, _| -0.95 * household_kw(hour));
    let pv = with_extra(SUMMER_MS, 48, |hour, _| {
        if (8..17).contains(&hour) { -0.5 } else { 0.0 }
    });
    let (holiday_found, _) = detect("holiday", holiday, 1.0);
    let (pv_found, _) = detect("pv", pv, 1.0);
    assert!(holiday_found.is_empty(), "{holiday_found:?}");
    assert!(pv_found.is_empty(), "{pv_found:?}");
}

/// Six days of one daily level, then two days of another, as daily readings spread evenly
/// over their hours.
fn daily(start_ms: i64, before_kw: f64, after_kw: f64) -> Vec<Hour> {
    daily_for(start_ms, before_kw, after_kw, 2)
}

/// Six days of one daily level, then `after_days` days of another.
fn daily_for(start_ms: i64, before_kw: f64, after_kw: f64, after_days: i64) -> Vec<Hour> {
    hourly(start_ms, 6 + after_days, |h| {
        if h < 6 * 24 { before_kw } else { after_kw }
    })
}

#[test]
fn daily_step_in_heating_season_is_held() {
    // 1.6 kW more each day: one rig, or electric heating spread over the day.
    let (found, _) = detect("daily", daily(WINTER_MS, 0.4, 2.0), 24.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].score, 0.5);
    assert!(matches!(
        evidence(&found[0], "held_for_heating_season"),
        Value::Flag(true)
    ));
}

#[test]
fn daily_small_step_waits_for_confirmation() {
    // Households' own rises of a few kW over some days look the same on daily readings.
    let (found, _) = detect("daily", daily(SUMMER_MS, 0.4, 2.0), 24.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(matches!(
        evidence(&found[0], "held_for_confirmation"),
        Value::Flag(true)
    ));
}

#[test]
fn daily_small_step_alerts_after_a_week() {
    let history = daily_for(SUMMER_MS, 0.4, 2.0, 7);
    let mut host = MemoryHost::with_defaults(&settings());
    host.settings
        .insert("history_hours".into(), Value::Integer(336));
    let batch = reading_after("daily", &history, 24.0, None);
    host.history
        .insert(("north".into(), "daily".into()), history);
    let found = detect_with(&mut host, &batch);
    assert_eq!(alerts(&found).len(), 1, "{found:?}");
    assert_eq!(number(&found[0], "run_hours"), 168.0);
}

#[test]
fn uneven_rise_is_not_flagged() {
    // 1.5 kW more by day and 4.5 kW more in the evening: a household's new habits, not rigs.
    let history = with_extra(SUMMER_MS, 30, |hour, _| {
        if (17..24).contains(&hour) { 4.5 } else { 1.5 }
    });
    let (found, _) = detect("busy", history, 1.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn daily_large_step_in_heating_season_alerts() {
    let (found, _) = detect("daily", daily(WINTER_MS, 0.4, 6.9), 24.0);
    assert_eq!(alerts(&found).len(), 1, "{found:?}");
}

#[test]
fn flat_daily_load_without_step_does_not_alert() {
    // Daily readings always look flat, so a high level alone is no evidence of rigs.
    let (found, _) = detect("daily", daily(SUMMER_MS, 4.0, 4.0), 24.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn flat_hourly_load_without_step_alerts() {
    // Rigs from the first reading: no earlier level, judged on the 7-day window.
    let history = hourly(SUMMER_MS, 7, |h| 6.5 + 0.1 * (h % 3) as f64);
    let (found, _) = detect("always", history, 1.0);
    assert_eq!(alerts(&found).len(), 1, "{found:?}");
    assert!(
        matches!(evidence(&found[0], "window"), Value::Text(name) if name == "7d"),
        "{found:?}"
    );
}

#[test]
fn missing_recent_window_judges_long_window() {
    // Only a `7d` window, with 90 of the 120 hours needed: coverage scores 0.5.
    let windows = [Window {
        name: "7d",
        hours: 168,
        hours_with_data: 90.0,
        energy_kwh: 600.0,
        mean_kw: 6.8,
        peak_kw: 7.5,
        base_kw: 6.5,
        load_factor: 0.9,
        night_day_ratio: 0.95,
        cv: 0.1,
    }];
    let batch = |ts_ms: i64, last_score: Option<f64>| {
        let mut builder = BatchBuilder::new();
        builder.push(&NewReading {
            region: "north",
            meter: "m-1",
            last_score,
            timestamp_ms: ts_ms,
            energy_import_kwh: 5_000.0,
            energy_export_kwh: None,
            power_w: None,
            voltage_v: &[],
            current_a: &[],
            events: &[],
            register_kwh: 5_000.0,
            interval: Interval {
                kind: IntervalKind::Normal,
                start_ms: ts_ms - 1_000,
                end_ms: ts_ms,
                energy_kwh: 1.0,
            },
            windows: &windows,
            register_reversals: 0,
            meter_readings: 300,
        });
        builder.build()
    };
    let mut host = CountingHost {
        inner: MemoryHost::with_defaults(&settings()),
        reads: 0,
    };
    let first = detect_with(&mut host, &batch(1_000, None));
    let same = detect_with(&mut host, &batch(2_000, Some(0.5)));

    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].severity, Severity::Info);
    assert_eq!(first[0].score, 0.5);
    assert!(
        same.is_empty(),
        "an unchanged score is reported again: {same:?}"
    );
    assert_eq!(host.reads, 0, "history or state read");
}

#[test]
fn noisy_flat_hourly_load_alerts() {
    // Rigs from the first reading with a few tenths of a kW of noise: the hours below the
    // middle of the noise are no earlier, lower level.
    let noise = [0.0, 0.3, 0.1, 0.25, 0.05, 0.2, 0.15];
    let history = hourly(SUMMER_MS, 7, |h| {
        6.5 + noise[(h % 7) as usize] + 0.01 * (h % 5) as f64
    });
    let (found, _) = detect("always", history, 1.0);
    assert_eq!(alerts(&found).len(), 1, "{found:?}");
    assert!(
        matches!(evidence(&found[0], "window"), Value::Text(name) if name == "7d"),
        "{found:?}"
    );
}

#[test]
fn step_within_own_swings_is_not_flagged() {
    // Days at 0.2 to 2.0 kW: a rise of 1.3 kW is under 3 times the earlier spread (0.44 kW).
    let levels = [0.2, 0.8, 1.4, 2.0, 0.5, 1.1];
    let mut history = hourly(SUMMER_MS, 6, |h| levels[(h / 24) as usize]);
    history.extend(hourly(SUMMER_MS + 6 * 24 * HOUR_MS, 2, |_| 2.1));
    history.truncate(6 * 24 + 30);
    let mut host = MemoryHost::with_defaults(&settings());
    // All six earlier days in view, so the earlier median is 0.8 kW and the level ratio holds.
    host.settings
        .insert("history_hours".into(), Value::Integer(336));
    let batch = reading_after("swings", &history, 1.0, None);
    host.history
        .insert(("north".into(), "swings".into()), history);
    let found = detect_with(&mut host, &batch);

    assert!(alerts(&found).is_empty(), "{found:?}");
    let step_z = number(&found[0], "step_z");
    assert!(step_z < 3.0, "step_z {step_z}");
}

#[test]
fn step_below_peer_level_is_not_flagged() {
    // A region of large premises: twice their 2 kW is more than this meter reaches.
    let history = with_extra(SUMMER_MS, 30, |_, _| 1.6);
    let mut host = MemoryHost::with_defaults(&settings());
    host.settings
        .insert("peer_mean_kw".into(), Value::Number(2.0));
    let batch = reading_after("shop", &history, 1.0, None);
    host.history
        .insert(("north".into(), "shop".into()), history);
    let found = detect_with(&mut host, &batch);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn step_small_against_own_level_is_not_flagged() {
    // A premises at 5 kW all day whose load rises by 1.5 kW: not twice its own level.
    let mut history = hourly(SUMMER_MS, 6, |h| 5.0 + 0.5 * (h % 2) as f64);
    history.extend(hourly(SUMMER_MS + 6 * 24 * HOUR_MS, 2, |h| {
        6.5 + 0.5 * (h % 2) as f64
    }));
    let (found, _) = detect("works", history, 1.0);
    assert!(alerts(&found).is_empty(), "{found:?}");
}

#[test]
fn stored_step_is_judged_after_it_leaves_history() {
    let onset_ms = SUMMER_MS - 30 * 24 * HOUR_MS;
    let before = Before {
        onset_ms,
        low_kw: 0.25,
        median_kw: 0.6,
    };
    let history = hourly(SUMMER_MS, 7, |h| household_kw(h % 24) + 6.5);
    let mut host = MemoryHost::with_defaults(&settings());
    host.state.insert(
        ("north".into(), "rig".into(), STEP_KEY.into()),
        before.to_bytes().to_vec(),
    );
    let batch = reading_after("rig", &history, 1.0, Some(1.0));
    host.history.insert(("north".into(), "rig".into()), history);
    let found = detect_with(&mut host, &batch);

    assert_eq!(alerts(&found).len(), 1, "{found:?}");
    assert_eq!(number(&found[0], "onset_ms"), onset_ms as f64);
}

/// A host that counts the history and state reads it serves.
struct CountingHost {
    inner: MemoryHost,
    reads: usize,
}

impl Host for CountingHost {
    fn get_state(&mut self, meter: Meter<'_>, key: &str) -> Option<Vec<u8>> {
        self.reads += 1;
        self.inner.get_state(meter, key)
    }
    fn set_state(&mut self, meter: Meter<'_>, key: &str, value: &[u8]) {
        self.inner.set_state(meter, key, value);
    }
    fn delete_state(&mut self, meter: Meter<'_>, key: &str) {
        self.inner.delete_state(meter, key);
    }
    fn setting(&mut self, region: &str, name: &str) -> Option<Value> {
        self.inner.setting(region, name)
    }
    fn history(&mut self, meter: Meter<'_>, hours: u32) -> Vec<Hour> {
        self.reads += 1;
        self.inner.history(meter, hours)
    }
    fn meter_history(&mut self, region: &str, meter_id: &str, hours: u32) -> Vec<Hour> {
        self.reads += 1;
        self.inner.meter_history(region, meter_id, hours)
    }
}

#[test]
fn household_reading_reads_no_history() {
    let history = hourly(SUMMER_MS, 7, |h| household_kw(h % 24));
    let batch = reading_after("house", &history, 1.0, None);
    let mut host = CountingHost {
        inner: MemoryHost::with_defaults(&settings()),
        reads: 0,
    };
    let found = detect_with(&mut host, &batch);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(host.reads, 0, "history or state read");
}

#[test]
fn reading_inside_an_hour_reads_no_history() {
    let history = with_extra(SUMMER_MS, 30, |_, _| 6.5);
    // Half an hour from 00:00 to 00:30 completes no hour.
    let mut batch = reading_after("rig", &history, 1.0, None);
    batch.interval_start_ms[0] = batch.interval_end_ms[0];
    batch.interval_end_ms[0] += HOUR_MS / 2;
    let mut host = CountingHost {
        inner: MemoryHost::with_defaults(&settings()),
        reads: 0,
    };
    let found = detect_with(&mut host, &batch);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(host.reads, 0, "history or state read");
}

#[test]
fn load_drop_reports_zero_and_forgets_step() {
    let history = hourly(SUMMER_MS, 7, |h| household_kw(h % 24));
    let mut host = MemoryHost::with_defaults(&settings());
    let key = ("north".to_owned(), "rig".to_owned(), STEP_KEY.to_owned());
    host.state.insert(key.clone(), vec![0; 24]);
    let batch = reading_after("rig", &history, 1.0, Some(1.0));
    let found = detect_with(&mut host, &batch);

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].score, 0.0);
    assert_eq!(found[0].severity, Severity::Info);
    assert!(!host.state.contains_key(&key), "step kept after the drop");
}

#[test]
fn rig_fit_counts_whole_rigs() {
    assert_eq!(fit_rigs(6.5, 3.25, 1.4, 4.8), 2);
    assert_eq!(fit_rigs(1.4, 3.25, 1.4, 4.8), 1);
    assert_eq!(fit_rigs(26.0, 3.25, 1.4, 4.8), 8);
    // 9.6 kW is at least two rigs of 4.8 kW, not three of 3.25 kW.
    assert_eq!(fit_rigs(9.6, 3.25, 1.4, 4.8), 3);
    // 10 kW of 1.4 kW rigs (7) is more than 3.25 kW rigs would need, so the typical draw wins.
    assert_eq!(fit_rigs(10.0, 3.25, 1.4, 4.8), 3);
    // 2.2 kW cannot be two rigs of 1.4 kW or more.
    assert_eq!(fit_rigs(2.2, 1.0, 1.4, 4.8), 1);
    assert_eq!(fit_rigs(0.0, 3.25, 1.4, 4.8), 1);
}

#[test]
fn month_of_counts_from_january() {
    assert_eq!(month_of(SUMMER_MS), 6);
    assert_eq!(month_of(WINTER_MS), 1);
    assert_eq!(month_of(0), 1);
    // 29 February 2024, 12:00 UTC.
    assert_eq!(month_of(1_709_208_000_000), 2);
    // 31 December 2024, 23:59 UTC.
    assert_eq!(month_of(1_735_689_540_000), 12);
}

#[test]
fn heating_season_wraps_past_december() {
    assert!(in_season(11, 10, 4));
    assert!(in_season(2, 10, 4));
    assert!(!in_season(6, 10, 4));
    assert!(in_season(6, 5, 8));
    assert!(!in_season(1, 0, 4), "0 means no season");
}

#[test]
fn ramp_scores_from_half_to_full() {
    assert_eq!(ramp(1.0, 2.0), 0.0);
    assert_eq!(ramp(1.5, 2.0), 0.5);
    assert_eq!(ramp(2.0, 2.0), 1.0);
    assert_eq!(ramp(9.0, 2.0), 1.0);
}

#[test]
fn ramp_is_zero_for_unusable_values() {
    assert_eq!(ramp(f64::NAN, 2.0), 0.0);
    assert_eq!(ramp(5.0, 0.0), 0.0);
    assert_eq!(ramp(5.0, f64::NAN), 0.0);
}

#[test]
fn tenths_round_half_away_from_zero() {
    let tenths = |value: f64| {
        let mut out = String::new();
        push_tenths(&mut out, value);
        out
    };
    assert_eq!(tenths(6.825), "6.8");
    assert_eq!(tenths(6.85), "6.9");
    assert_eq!(tenths(0.0), "0.0");
    assert_eq!(tenths(-0.04), "0.0", "no negative zero");
    assert_eq!(tenths(-2.35), "-2.4");
    assert_eq!(tenths(12_345.96), "12346.0");
    assert_eq!(tenths(f64::NAN), "NaN");
    assert_eq!(tenths(f64::NEG_INFINITY), "-inf");
    assert_eq!(tenths(2e15), "2000000000000000.0");
}
