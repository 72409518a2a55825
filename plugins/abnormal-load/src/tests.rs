use gridwatch_plugin_sdk::prelude::*;

use super::{Outcome, detect_with, settings};

const HOUR_MS: i64 = 3_600_000;
const WEEK: i64 = 168;

/// First hour of the history: Monday 2025-03-03 00:00 UTC.
const START_HOUR: i64 = 1_740_960_000_000 / HOUR_MS;

/// Normal energy of an hour: 0.3 kWh, 1.0 kWh from 17:00 to 22:00, and up to 0.08 kWh more
/// that varies from week to week.
fn normal_kwh(hour: i64) -> f64 {
    let hour_of_day = hour.rem_euclid(24);
    let level = if (17..22).contains(&hour_of_day) {
        1.0
    } else {
        0.3
    };
    let week = (hour - START_HOUR) / WEEK;
    level + 0.02 * ((week * 7 + hour_of_day) % 5) as f64
}

/// Builds a host whose meter `m1` has `weeks` weeks of normal hours followed by the hours of
/// `last_week`.
fn host_with(weeks: i64, last_week: &[f64]) -> MemoryHost {
    let mut host = MemoryHost::with_defaults(&settings());
    let mut hours: Vec<Hour> = (0..weeks * WEEK)
        .map(|offset| {
            let hour = START_HOUR + offset;
            Hour {
                start_ms: hour * HOUR_MS,
                energy_kwh: normal_kwh(hour),
                covered_secs: 3600,
            }
        })
        .collect();
    for (offset, energy_kwh) in last_week.iter().enumerate() {
        let hour = START_HOUR + weeks * WEEK + offset as i64;
        hours.push(Hour {
            start_ms: hour * HOUR_MS,
            energy_kwh: *energy_kwh,
            covered_secs: 3600,
        });
    }
    host.history.insert(("north".into(), "m1".into()), hours);
    host
}

/// Energy of the hours after the history's full weeks: normal, except `changed` hours from
/// `from` that are multiplied by `factor`.
fn last_week(weeks: i64, count: usize, from: usize, changed: usize, factor: f64) -> Vec<f64> {
    (0..count)
        .map(|offset| {
            let energy = normal_kwh(START_HOUR + weeks * WEEK + offset as i64);
            if (from..from + changed).contains(&offset) {
                energy * factor
            } else {
                energy
            }
        })
        .collect()
}

/// Builds a batch of one reading of `m1` at the start of `hour`, which completes the hour
/// before.
fn reading_at(hour: i64) -> Batch {
    let mut builder = BatchBuilder::new();
    builder.push(&single_reading(hour));
    builder.build()
}

/// Feeds one reading per hour, completing the hours at `offsets` after the full weeks, and
/// returns the findings with the offset of the hour each reading completed.
fn feed(
    host: &mut MemoryHost,
    weeks: i64,
    offsets: std::ops::RangeInclusive<i64>,
) -> Vec<(i64, Finding)> {
    let mut found = Vec::new();
    for offset in offsets {
        let hour = START_HOUR + weeks * WEEK + offset;
        let Outcome { findings, .. } = detect_with(host, &reading_at(hour + 1));
        found.extend(findings.into_iter().map(|f| (offset, f)));
    }
    found
}

fn number(finding: &Finding, name: &str) -> f64 {
    match finding.evidence.iter().find(|e| e.name == name) {
        Some(Entry {
            value: Value::Number(n),
            ..
        }) => *n,
        Some(Entry {
            value: Value::Integer(i),
            ..
        }) => *i as f64,
        other => panic!("evidence {name} is not a number: {other:?}"),
    }
}

fn text(finding: &Finding, name: &str) -> String {
    match finding.evidence.iter().find(|e| e.name == name) {
        Some(Entry {
            value: Value::Text(t),
            ..
        }) => t.clone(),
        other => panic!("evidence {name} is not text: {other:?}"),
    }
}

#[test]
fn normal_week_reports_nothing() {
    let mut host = host_with(4, &last_week(4, 48, 0, 0, 1.0));
    let found = feed(&mut host, 4, 0..=46);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn high_run_fires_from_third_hour() {
    // Hours 2 to 7 of the fifth week draw 4 kW more than usual.
    let mut energy = last_week(4, 12, 0, 0, 1.0);
    for e in &mut energy[2..8] {
        *e += 4.0;
    }
    let mut host = host_with(4, &energy);
    let found = feed(&mut host, 4, 0..=10);

    let offsets: Vec<i64> = found.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, [4, 5, 6, 7], "{found:?}");
    let (_, first) = &found[0];
    assert_eq!(first.kind, "abnormal_load");
    assert_eq!(first.severity, Severity::High);
    assert_eq!(first.score, 1.0);
    assert_eq!(text(first, "direction"), "above");
    assert_eq!(number(first, "run_hours"), 3.0);
    assert_eq!(number(first, "baseline_weeks"), 3.0);
    assert!(
        first
            .message
            .starts_with("energy above the hour-of-week baseline for 3 h: 4.3"),
        "{}",
        first.message
    );
}

#[test]
fn low_run_fires_below_unless_above_only() {
    // Evening hours 17 to 21 of the fifth week's Monday drop to a tenth.
    let energy = last_week(4, 24, 17, 5, 0.1);
    let mut host = host_with(4, &energy);
    let found = feed(&mut host, 4, 0..=22);

    let offsets: Vec<i64> = found.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, [19, 20, 21], "{found:?}");
    assert_eq!(text(&found[0].1, "direction"), "below");

    let mut host = host_with(4, &energy);
    host.settings
        .insert("direction".into(), Value::Text("above".into()));
    let above_only = feed(&mut host, 4, 0..=22);
    assert!(above_only.is_empty(), "{above_only:?}");
}

#[test]
fn too_few_weeks_report_nothing() {
    let mut energy = last_week(2, 12, 0, 0, 1.0);
    for e in &mut energy[2..8] {
        *e += 4.0;
    }
    let mut host = host_with(2, &energy);
    let found = feed(&mut host, 2, 0..=10);
    assert!(
        found.is_empty(),
        "two earlier weeks, three needed: {found:?}"
    );
}

#[test]
fn gap_judges_missed_hours_at_once() {
    let mut energy = last_week(4, 12, 0, 0, 1.0);
    for e in &mut energy[2..8] {
        *e += 4.0;
    }
    let mut host = host_with(4, &energy);
    let before = feed(&mut host, 4, 0..=0);
    // The next reading arrives at the end of hour 7 and completes hours 1 to 7 together.
    let after = feed(&mut host, 4, 7..=7);

    assert!(before.is_empty(), "{before:?}");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(number(&after[0].1, "run_hours"), 6.0);
}

#[test]
fn run_survives_between_batches_in_state() {
    let mut energy = last_week(4, 12, 0, 0, 1.0);
    for e in &mut energy[2..8] {
        *e += 4.0;
    }
    let mut host = host_with(4, &energy);
    feed(&mut host, 4, 0..=3);
    let state = host.state.clone();
    let mut restarted = host_with(4, &energy);
    restarted.state = state;
    let found = feed(&mut restarted, 4, 4..=4);

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(number(&found[0].1, "run_hours"), 3.0);
}

#[test]
fn short_history_is_reported() {
    let mut host = host_with(1, &last_week(1, 4, 0, 0, 1.0));
    let hour = START_HOUR + WEEK + 2;
    let outcome = detect_with(&mut host, &reading_at(hour));
    // Three weeks, the hour judged and the reading's own hour are needed, and one week and four
    // hours exist.
    assert_eq!(outcome.short_history, Some((168 + 4, 3 * 168 + 2)));
    assert!(outcome.findings.is_empty());
}

#[test]
fn meter_without_history_is_not_short() {
    let mut host = host_with(0, &[]);
    let outcome = detect_with(&mut host, &reading_at(START_HOUR + 1));
    assert_eq!(
        outcome.short_history, None,
        "a meter's first reading has no history yet"
    );
}

/// Feeds one reading of each of `meters` per hour, all in one call, completing the hours at
/// `offsets` after `weeks` full weeks, and returns the findings.
fn feed_meters(
    host: &mut MemoryHost,
    meters: &[&'static str],
    weeks: i64,
    offsets: std::ops::RangeInclusive<i64>,
) -> Vec<Finding> {
    let mut found = Vec::new();
    for offset in offsets {
        let hour = START_HOUR + weeks * WEEK + offset + 1;
        let mut builder = BatchBuilder::new();
        for meter in meters {
            builder.push(&NewReading {
                meter,
                ..single_reading(hour)
            });
        }
        found.extend(detect_with(host, &builder.build()).findings);
    }
    found
}

fn single_reading(hour: i64) -> NewReading<'static, 'static> {
    NewReading {
        region: "north",
        meter: "m1",
        last_score: None,
        timestamp_ms: hour * HOUR_MS,
        energy_import_kwh: 100.0,
        energy_export_kwh: None,
        power_w: None,
        voltage_v: &[],
        current_a: &[],
        events: &[],
        register_kwh: 100.0,
        interval: Interval {
            kind: IntervalKind::Normal,
            start_ms: (hour - 1) * HOUR_MS,
            end_ms: hour * HOUR_MS,
            energy_kwh: 0.5,
        },
        windows: &[],
        register_reversals: 0,
        meter_readings: 1_000,
    }
}

/// Builds a host whose `meters` have four normal weeks, then hours 2 to 7 of the fifth week
/// 4 kWh higher for the meters in `surging`.
fn region_host(meters: &[&str], surging: &[&str]) -> MemoryHost {
    let mut energy = last_week(4, 12, 0, 0, 1.0);
    for e in &mut energy[2..8] {
        *e += 4.0;
    }
    let normal = last_week(4, 12, 0, 0, 1.0);
    let mut host = MemoryHost::with_defaults(&settings());
    for meter in meters {
        let week = if surging.contains(meter) {
            &energy
        } else {
            &normal
        };
        let hours = host_with(4, week)
            .history
            .remove(&("north".into(), "m1".into()));
        host.history
            .insert(("north".into(), (*meter).into()), hours.unwrap());
    }
    host
}

const REGION: [&str; 6] = ["m1", "m2", "m3", "m4", "m5", "m6"];

#[test]
fn region_wide_change_reports_nothing() {
    let mut host = region_host(&REGION, &REGION);
    let found = feed_meters(&mut host, &REGION, 4, 0..=10);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn one_meter_of_region_is_reported() {
    let mut host = region_host(&REGION, &["m4"]);
    let found = feed_meters(&mut host, &REGION, 4, 0..=10);

    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(number(&found[0], "peers_judged"), 6.0);
    assert_eq!(number(&found[0], "peers_abnormal"), 1.0);
    assert_eq!(number(&found[0], "run_hours"), 3.0);
}

#[test]
fn too_few_peers_are_not_compared() {
    let meters = ["m1", "m2", "m3", "m4"];
    let mut host = region_host(&meters, &meters);
    let found = feed_meters(&mut host, &meters, 4, 0..=10);
    // Four meters judged, under the five that `min_peers` needs: each meter's run counts.
    assert_eq!(found.len(), 16, "{found:?}");
}
