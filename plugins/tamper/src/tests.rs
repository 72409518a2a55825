use gridwatch_plugin_sdk::prelude::*;

use super::{detect_with, settings};

const HOUR_MS: i64 = 3_600_000;

/// One reading of a test batch; `Sample::at` fills in a normal hourly step of 0.5 kWh.
#[derive(Clone)]
struct Sample {
    meter: &'static str,
    ts_ms: i64,
    register_kwh: f64,
    kind: IntervalKind,
    energy_kwh: f64,
    power_w: Option<f64>,
    voltage_v: Vec<f64>,
    current_a: Vec<f64>,
    events: Vec<String>,
    windows: Vec<Window<'static>>,
}

impl Sample {
    fn at(meter: &'static str, hour: i64, register_kwh: f64) -> Sample {
        Sample {
            meter,
            ts_ms: hour * HOUR_MS,
            register_kwh,
            kind: IntervalKind::Normal,
            energy_kwh: 0.5,
            power_w: None,
            voltage_v: Vec::new(),
            current_a: Vec::new(),
            events: Vec::new(),
            windows: Vec::new(),
        }
    }

    fn kind(mut self, kind: IntervalKind, energy_kwh: f64) -> Sample {
        self.kind = kind;
        self.energy_kwh = energy_kwh;
        self
    }

    fn events(mut self, events: &[&str]) -> Sample {
        self.events = events.iter().map(|e| (*e).to_owned()).collect();
        self
    }

    fn voltage(mut self, voltage_v: &[f64]) -> Sample {
        self.voltage_v = voltage_v.to_vec();
        self
    }
}

fn batch(samples: &[Sample]) -> Batch {
    let mut builder = BatchBuilder::new();
    for sample in samples {
        builder.push(&NewReading {
            region: "north",
            meter: sample.meter,
            last_score: None,
            timestamp_ms: sample.ts_ms,
            energy_import_kwh: sample.register_kwh,
            energy_export_kwh: None,
            power_w: sample.power_w,
            voltage_v: &sample.voltage_v,
            current_a: &sample.current_a,
            events: &sample.events,
            register_kwh: sample.register_kwh,
            interval: Interval {
                kind: sample.kind,
                start_ms: sample.ts_ms - HOUR_MS,
                end_ms: sample.ts_ms,
                energy_kwh: sample.energy_kwh,
            },
            windows: &sample.windows,
            register_reversals: u32::from(sample.kind == IntervalKind::Reversal),
            meter_readings: 100,
        });
    }
    builder.build()
}

fn run(host: &mut MemoryHost, samples: &[Sample]) -> Vec<Finding> {
    detect_with(host, &batch(samples))
}

fn evidence<'a>(finding: &'a Finding, name: &str) -> Option<&'a Value> {
    finding
        .evidence
        .iter()
        .find(|e| e.name == name)
        .map(|e| &e.value)
}

fn number(finding: &Finding, name: &str) -> f64 {
    match evidence(finding, name) {
        Some(Value::Number(n)) => *n,
        other => panic!("evidence {name} is not a number: {other:?}"),
    }
}

fn text(finding: &Finding, name: &str) -> String {
    match evidence(finding, name) {
        Some(Value::Text(t)) => t.clone(),
        other => panic!("evidence {name} is not text: {other:?}"),
    }
}

fn window(name: &'static str, hours: u32, hours_with_data: f64, mean_kw: f64) -> Window<'static> {
    Window {
        name,
        hours,
        hours_with_data,
        energy_kwh: mean_kw * hours_with_data,
        mean_kw,
        peak_kw: mean_kw * 2.0,
        base_kw: mean_kw / 2.0,
        load_factor: 0.5,
        night_day_ratio: 0.5,
        cv: 0.5,
    }
}

#[test]
fn register_reversal_raises_high_tamper() {
    let mut host = MemoryHost::with_defaults(&settings());
    let first = run(&mut host, &[Sample::at("m1", 1, 1_000.0)]);
    let found = run(
        &mut host,
        &[Sample::at("m1", 2, 880.0).kind(IntervalKind::Reversal, 0.0)],
    );

    assert!(first.is_empty(), "{first:?}");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, "tamper");
    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(found[0].score, 1.0);
    assert_eq!(text(&found[0], "causes"), "register_reversal");
    assert_eq!(number(&found[0], "drop_kwh"), 120.0);
    assert_eq!(
        found[0].message,
        "register went backwards by 120.0 kWh, from 1000.0 to 880.0 kWh"
    );
}

#[test]
fn exchange_is_low_and_not_tamper() {
    let mut host = MemoryHost::with_defaults(&settings());
    let found = run(
        &mut host,
        &[
            Sample::at("m1", 1, 5_000.0),
            Sample::at("m1", 2, 0.5).kind(IntervalKind::DropPending, 0.0),
            Sample::at("m1", 3, 1.0).kind(IntervalKind::Exchange, 0.5),
        ],
    );

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, "meter_exchange");
    assert_eq!(found[0].severity, Severity::Low);
    assert_eq!(number(&found[0], "previous_register_kwh"), 0.5);
}

#[test]
fn rollover_reports_nothing() {
    let mut host = MemoryHost::with_defaults(&settings());
    let found = run(
        &mut host,
        &[
            Sample::at("m1", 1, 99_999.5),
            Sample::at("m1", 2, 0.3).kind(IntervalKind::Rollover, 0.8),
        ],
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn cover_open_by_name_and_number() {
    let mut host = MemoryHost::with_defaults(&settings());
    let found = run(
        &mut host,
        &[
            Sample::at("named", 1, 10.0).events(&["cover_open"]),
            Sample::at("numbered", 1, 10.0).events(&["44"]),
            Sample::at("terminal", 1, 10.0).events(&["40"]),
            Sample::at("field", 1, 10.0).events(&["MAGNETIC_FIELD"]),
        ],
    );

    let kinds: Vec<(&str, Severity, String)> = found
        .iter()
        .map(|f| (f.kind.as_ref(), f.severity, text(f, "causes")))
        .collect();
    assert_eq!(
        kinds,
        [
            ("tamper", Severity::High, "cover_open".to_owned()),
            ("tamper", Severity::High, "cover_open".to_owned()),
            ("tamper", Severity::Medium, "terminal_cover_open".to_owned()),
            ("tamper", Severity::High, "magnetic_field".to_owned()),
        ]
    );
    assert_eq!(found[1].message, "meter cover opened (meter event 44)");
}

#[test]
fn other_events_report_nothing() {
    let mut host = MemoryHost::with_defaults(&settings());
    let found = run(
        &mut host,
        &[Sample::at("m1", 1, 10.0).events(&["power_failure", "voltage_sag", "41"])],
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn code_list_setting_replaces_defaults() {
    let mut host = MemoryHost::with_defaults(&settings());
    host.settings.insert(
        "reverse_energy_codes".into(),
        Value::Text(" 51, 53 ,55".into()),
    );
    let found = run(
        &mut host,
        &[
            Sample::at("coded", 1, 10.0).events(&["53"]),
            Sample::at("named", 1, 10.0).events(&["reverse_energy"]),
        ],
    );

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(text(&found[0], "causes"), "reverse_energy");
    assert_eq!(text(&found[0], "reverse_energy_events"), "53");
}

#[test]
fn current_without_voltage_from_phase_values() {
    let mut host = MemoryHost::with_defaults(&settings());
    let mut bypassed = Sample::at("bypassed", 1, 10.0).voltage(&[231.0, 0.0]);
    bypassed.current_a = vec![2.0, 6.5];
    let mut idle = Sample::at("idle", 1, 10.0).voltage(&[231.0, 0.0]);
    idle.current_a = vec![2.0, 0.0];
    let found = run(&mut host, &[bypassed, idle]);

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(text(&found[0], "causes"), "current_without_voltage");
    assert_eq!(
        found[0].message,
        "current without voltage: L2 carries 6.5 A at 0 V"
    );
}

#[test]
fn negative_power_needs_import_only() {
    let mut sample = Sample::at("m1", 1, 10.0);
    sample.power_w = Some(-800.0);

    let mut host = MemoryHost::with_defaults(&settings());
    let default = run(&mut host, std::slice::from_ref(&sample));
    host.settings
        .insert("import_only".into(), Value::Flag(true));
    let import_only = run(&mut host, &[sample]);

    assert!(default.is_empty(), "{default:?}");
    assert_eq!(import_only.len(), 1, "{import_only:?}");
    assert_eq!(number(&import_only[0], "power_w"), -800.0);
}

/// Hourly readings of zero consumption for `hours` hours, with the given voltages.
fn zero_hours(meter: &'static str, hours: i64, voltage_v: &[f64]) -> Vec<Sample> {
    (1..=hours)
        .map(|h| {
            Sample::at(meter, h, 50.0)
                .kind(IntervalKind::Normal, 0.0)
                .voltage(voltage_v)
        })
        .collect()
}

#[test]
fn zero_run_with_voltage_fires_after_limit() {
    let mut host = MemoryHost::with_defaults(&settings());
    let mut samples = zero_hours("dead", 30, &[230.0]);
    samples.extend(zero_hours("off", 30, &[0.0]));
    samples.extend(zero_hours("silent", 30, &[]));
    // Split in two batches, so the run's start comes from plugin state.
    let first = run(&mut host, &samples[..10]);
    let second = run(&mut host, &samples[10..]);

    assert!(first.is_empty(), "{first:?}");
    let meters: Vec<_> = second.iter().map(|f| number(f, "zero_hours")).collect();
    // Hours 24 to 30 of the "dead" meter; the run starts at hour 0.
    assert_eq!(meters, [24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0]);
    assert_eq!(second[0].severity, Severity::Medium);
    assert_eq!(second[0].score, 0.5);
    assert_eq!(
        second[0].message,
        "zero consumption for 24.0 h with 230 V present"
    );
}

#[test]
fn zero_run_restarts_after_consumption() {
    let mut host = MemoryHost::with_defaults(&settings());
    let mut samples = zero_hours("m1", 20, &[230.0]);
    samples.push(Sample::at("m1", 21, 51.0).voltage(&[230.0]));
    samples.extend(zero_hours("m1", 20, &[230.0]).into_iter().map(|mut s| {
        s.ts_ms += 21 * HOUR_MS;
        s
    }));
    let found = run(&mut host, &samples);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn consumption_drop_with_voltage() {
    let mut host = MemoryHost::with_defaults(&settings());
    // 24 h at 0.05 kW after 144 h at about 1 kW: the baseline is (1 * 168 - 0.05 * 24) / 144.
    let mut dropped = Sample::at("dropped", 200, 500.0).voltage(&[229.0]);
    dropped.windows = vec![
        window("24h", 24, 24.0, 0.05),
        Window {
            energy_kwh: 168.0 - 24.0 * 0.95,
            ..window("7d", 168, 168.0, 1.0)
        },
    ];
    let mut steady = dropped.clone();
    steady.meter = "steady";
    steady.windows[0] = window("24h", 24, 24.0, 0.9);
    let mut unpowered = dropped.clone();
    unpowered.meter = "unpowered";
    unpowered.voltage_v = vec![12.0];
    let found = run(&mut host, &[dropped, steady, unpowered]);

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(text(&found[0], "causes"), "consumption_drop");
    assert_eq!(found[0].severity, Severity::Medium);
    assert!((number(&found[0], "baseline_kw") - 1.0).abs() < 1e-9);
    assert!((found[0].score - 0.95).abs() < 1e-9, "{}", found[0].score);
    assert_eq!(number(&found[0], "max_voltage_v"), 229.0);
}

#[test]
fn short_baseline_is_not_judged() {
    let mut host = MemoryHost::with_defaults(&settings());
    let mut young = Sample::at("young", 50, 20.0).voltage(&[229.0]);
    young.windows = vec![
        window("24h", 24, 24.0, 0.05),
        Window {
            energy_kwh: 26.0 * 1.0 + 24.0 * 0.05,
            ..window("7d", 168, 50.0, 0.5)
        },
    ];
    let found = run(&mut host, &[young]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn several_causes_make_one_finding() {
    let mut host = MemoryHost::with_defaults(&settings());
    run(&mut host, &[Sample::at("m1", 1, 1_000.0)]);
    let found = run(
        &mut host,
        &[Sample::at("m1", 2, 700.0)
            .kind(IntervalKind::Reversal, 0.0)
            .events(&["42", "terminal_cover_open"])],
    );

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        text(&found[0], "causes"),
        "register_reversal,terminal_cover_open,magnetic_field"
    );
    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(found[0].score, 1.0);
}

#[test]
fn settings_have_unique_names() {
    let specs = settings();
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), specs.len());
}
