use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::run::ErrorLog;
use super::*;
use crate::alerts::Severity;
use crate::state::{Interval, IntervalKind, WindowStats};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A rig draws about 3.25 kW, day and night.
const RIG_KW: f64 = 3.25;

/// Hourly load of a UK household over one day, kW. It is about 0.12 kW at night, with a breakfast
/// bump and an evening cooking peak, and its daily mean is about 0.38 kW.
const HOUSEHOLD_DAY_KW: [f64; 24] = [
    0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.36, 0.72, 0.48, 0.21, 0.21, 0.21, 0.21, 0.21, 0.21, 0.21,
    0.36, 0.90, 1.68, 0.96, 0.60, 0.48, 0.30, 0.18,
];

/// Computes window statistics from hourly mean power, night being hours 0 to 5.
fn stats_from_hourly(hourly_kw: &[f64]) -> WindowStats {
    let n = hourly_kw.len() as f64;
    let mean = hourly_kw.iter().sum::<f64>() / n;
    let peak = hourly_kw.iter().copied().fold(f64::MIN, f64::max);
    let base = hourly_kw.iter().copied().fold(f64::MAX, f64::min);
    let average = |night: bool| {
        let hours: Vec<f64> = hourly_kw
            .iter()
            .enumerate()
            .filter(|(h, _)| (h % 24 < 6) == night)
            .map(|(_, kw)| *kw)
            .collect();
        hours.iter().sum::<f64>() / hours.len() as f64
    };
    let variance = hourly_kw.iter().map(|kw| (kw - mean).powi(2)).sum::<f64>() / n;
    WindowStats {
        hours: hourly_kw.len() as u32,
        hours_with_data: n,
        energy_kwh: mean * n,
        mean_kw: mean,
        peak_kw: peak,
        base_kw: base,
        load_factor: mean / peak,
        night_day_ratio: average(true) / average(false),
        cv: variance.sqrt() / mean,
    }
}

/// Seven days of household load plus a flat extra load.
fn week_stats(flat_extra_kw: f64) -> WindowStats {
    let hourly: Vec<f64> = (0..168)
        .map(|h| HOUSEHOLD_DAY_KW[h % 24] + flat_extra_kw)
        .collect();
    stats_from_hourly(&hourly)
}

fn snapshot(region: &str, week: WindowStats) -> MeterSnapshot {
    let day = WindowStats {
        hours: 24,
        hours_with_data: 24.0,
        energy_kwh: week.mean_kw * 24.0,
        ..week
    };
    MeterSnapshot {
        region: region.into(),
        meter_id: "m-1".into(),
        register_kwh: 12_345.6,
        interval: Interval {
            kind: IntervalKind::Normal,
            start_ms: 1_764_806_400_000,
            end_ms: 1_764_808_200_000,
            energy_kwh: 0.2,
        },
        windows: vec![("24h".into(), day), ("7d".into(), week)],
        register_reversals: 0,
        readings: 336,
        scores: vec![("mining".into(), 0.9)],
    }
}

fn reading(region: &str) -> Reading {
    Reading {
        region: region.into(),
        meter_id: "m-1".into(),
        ts_ms: 1_764_808_200_000,
        energy_import_kwh: 12_345.8,
        energy_export_kwh: None,
        power_w: Some(400.0),
        voltage_v: vec![231.5],
        current_a: vec![1.8],
        power_factor: Some(0.97),
        events: Vec::new(),
        seq: Some(7),
        extra: serde_json::Map::new(),
    }
}

fn shipped_config() -> RulesConfig {
    RulesConfig {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"),
        ..RulesConfig::default()
    }
}

fn temp_config(dir: &Path) -> RulesConfig {
    RulesConfig {
        dir: dir.to_owned(),
        reload_debounce_ms: 50,
        ..RulesConfig::default()
    }
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Returns a rule that always raises one alert of `kind`.
fn constant_rule(kind: &str) -> String {
    format!("fn on_reading(reading, meter) {{ alert(\"{kind}\", \"info\", \"fired\", #{{}}); }}\n")
}

fn load(config: RulesConfig) -> (RuleEngine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let engine = match RuleEngine::load(config, metrics.clone()) {
        Ok(engine) => engine,
        Err(e) => panic!("rules failed to load: {e}"),
    };
    (engine, metrics)
}

fn load_problems(config: RulesConfig) -> Vec<RuleProblem> {
    match RuleEngine::load(config, Arc::new(Metrics::new())) {
        Ok(_) => panic!("rules loaded, expected a compile error"),
        Err(RuleSetError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn kinds(drafts: &[AlertDraft]) -> Vec<&str> {
    drafts.iter().map(|d| d.kind.as_str()).collect()
}

fn rule_errors(metrics: &Metrics, rule: &str, class: &str) -> u64 {
    let labels = vec![("rule", rule.to_owned()), ("error", class.to_owned())];
    metrics.rule_errors.get_or_create(&labels).get()
}

fn reloads(metrics: &Metrics, outcome: &str) -> u64 {
    metrics
        .rule_reloads
        .get_or_create(&vec![("outcome", outcome.to_owned())])
        .get()
}

/// Polls `condition` every 20 ms until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Shipped rules

#[test]
fn shipped_rules_pass_check() {
    let problems = check(&shipped_config());
    assert!(
        problems.is_empty(),
        "shipped rules have problems: {problems:?}"
    );
}

#[test]
fn mining_fires_for_household_with_one_rig() {
    let (engine, _) = load(shipped_config());
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(RIG_KW)));
    let mining: Vec<_> = drafts.iter().filter(|d| d.kind == "mining").collect();
    assert_eq!(
        mining.len(),
        1,
        "mining alerts for household plus one rig: {drafts:?}"
    );
    assert_eq!(mining[0].severity, Severity::Medium, "severity for one rig");
    assert_eq!(
        mining[0].evidence["window"],
        json!("7d"),
        "evidence: {}",
        mining[0].evidence
    );
    assert!(
        mining[0].evidence["base_kw"].as_f64().unwrap() > 3.0,
        "evidence base_kw"
    );
}

#[test]
fn mining_silent_for_plain_household() {
    let (engine, _) = load(shipped_config());
    let stats = week_stats(0.0);
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", stats));
    assert!(
        drafts.is_empty(),
        "alerts for a household with {stats:?}: {drafts:?}"
    );
}

#[test]
fn mining_silent_for_household_in_every_region() {
    let (engine, _) = load(shipped_config());
    for region in ["north", "south"] {
        let drafts = engine.evaluate(&reading(region), &snapshot(region, week_stats(0.0)));
        assert!(
            drafts.is_empty(),
            "alerts for a household in {region}: {drafts:?}"
        );
    }
}

#[test]
fn mining_severity_rises_with_mean_load() {
    let (engine, _) = load(shipped_config());
    for (rigs, expected) in [
        (1.0, Severity::Medium),
        (3.0, Severity::High),
        (10.0, Severity::Critical),
    ] {
        let stats = week_stats(RIG_KW * rigs);
        let drafts = engine.evaluate(&reading("south"), &snapshot("south", stats));
        let severity = drafts
            .iter()
            .find(|d| d.kind == "mining")
            .map(|d| d.severity);
        assert_eq!(
            severity,
            Some(expected),
            "severity for {rigs} rigs, mean {} kW",
            stats.mean_kw
        );
    }
}

#[test]
fn mining_needs_enough_hours_with_data() {
    let (engine, _) = load(shipped_config());
    let stats = WindowStats {
        hours_with_data: 100.0,
        ..week_stats(RIG_KW)
    };
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", stats));
    assert!(
        drafts.is_empty(),
        "alerts with 100 of 168 hours: {drafts:?}"
    );
}

#[test]
fn north_parameters_override_common_ones() {
    let (engine, _) = load(shipped_config());
    // 2.4 kW flat: a small rig or a heat pump. Common thresholds fire, north's do not.
    let stats = week_stats(2.4);
    let south = engine.evaluate(&reading("south"), &snapshot("south", stats));
    let north = engine.evaluate(&reading("north"), &snapshot("north", stats));
    assert_eq!(
        kinds(&south),
        ["mining"],
        "south alerts for a 2.4 kW flat load"
    );
    assert!(
        north.is_empty(),
        "north alerts for a 2.4 kW flat load: {north:?}"
    );
}

#[test]
fn tamper_fires_on_register_reversal() {
    let (engine, _) = load(shipped_config());
    let mut meter = snapshot("south", week_stats(0.0));
    meter.interval.kind = IntervalKind::Reversal;
    meter.register_reversals = 1;
    let drafts = engine.evaluate(&reading("south"), &meter);
    assert_eq!(kinds(&drafts), ["tamper"], "alerts for a reversal");
    assert_eq!(drafts[0].severity, Severity::High, "tamper severity");
    assert_eq!(
        drafts[0].evidence["interval_kind"],
        json!("reversal"),
        "evidence interval_kind"
    );
}

#[test]
fn tamper_fires_on_repeated_reversals_in_window() {
    let (engine, _) = load(shipped_config());
    let mut meter = snapshot("south", week_stats(0.0));
    meter.register_reversals = 2;
    let drafts = engine.evaluate(&reading("south"), &meter);
    assert_eq!(
        kinds(&drafts),
        ["tamper"],
        "alerts for 2 reversals in the window"
    );
}

#[test]
fn tamper_fires_on_listed_event_codes_only() {
    let (engine, _) = load(shipped_config());
    let meter = snapshot("south", week_stats(0.0));
    let mut tampered = reading("south");
    tampered.events = vec!["power_up".into(), "magnetic_field".into()];
    let drafts = engine.evaluate(&tampered, &meter);
    assert_eq!(kinds(&drafts), ["tamper"], "alerts for magnetic_field");
    assert_eq!(
        drafts[0].evidence["events"],
        json!(["magnetic_field"]),
        "evidence events"
    );
    assert!(
        drafts[0].message.contains("magnetic_field"),
        "message: {}",
        drafts[0].message
    );

    let mut harmless = reading("south");
    harmless.events = vec!["power_up".into()];
    let drafts = engine.evaluate(&harmless, &meter);
    assert!(drafts.is_empty(), "alerts for power_up: {drafts:?}");
}

#[test]
fn voltage_rule_runs_only_in_north() {
    let (engine, _) = load(shipped_config());
    let mut sag = reading("north");
    sag.voltage_v = vec![231.0, 209.5, 230.0];
    let north = engine.evaluate(&sag, &snapshot("north", week_stats(0.0)));
    assert_eq!(
        kinds(&north),
        ["voltage"],
        "north alerts for a 209.5 V phase"
    );
    assert_eq!(north[0].evidence["phase"], json!(2), "evidence phase");

    sag.region = "south".into();
    let south = engine.evaluate(&sag, &snapshot("south", week_stats(0.0)));
    assert!(
        south.is_empty(),
        "south alerts for a 209.5 V phase: {south:?}"
    );
}

#[test]
fn alert_source_names_rule_and_content_hash() {
    let (engine, _) = load(shipped_config());
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(RIG_KW)));
    let text = std::fs::read(shipped_config().dir.join("common/mining.rhai")).unwrap();
    let expected = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&text));
    assert_eq!(drafts[0].source.rule, "common/mining.rhai", "source rule");
    assert_eq!(
        drafts[0].source.content_hash, expected,
        "source content hash"
    );
}

#[test]
fn shipped_set_counts_files_and_regions() {
    let (engine, _) = load(shipped_config());
    assert_eq!(engine.file_count(), 3, "rule files");
    assert_eq!(engine.region_count(), 1, "region folders");
    assert_eq!(engine.generation(), 1, "generation after load");
}

// ---------------------------------------------------------------------------------------------
// Rule API

#[test]
fn rules_read_reading_and_meter_fields() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/fields.rhai",
        r#"
        fn on_reading(reading, meter) {
            let w = meter.window("24h");
            alert("fields", "info", "fields", #{
                meter_id: reading.meter_id,
                region: reading.region,
                ts_ms: reading.ts_ms,
                import_kwh: reading.energy_import_kwh,
                export_kwh: reading.energy_export_kwh,
                power_w: reading.power_w,
                voltage_v: reading.voltage_v,
                events: reading.events,
                firmware: reading["firmware"],
                firmware_property: reading.firmware,
                missing: reading["no_such_field"],
                has_event: reading.has_event("cover_open"),
                interval_kind: meter.interval_kind,
                interval_kwh: meter.interval_kwh,
                readings: meter.readings,
                windows: meter.windows,
                hours: w.hours,
                stats: w.to_map(),
                raw_stats: w,
            });
        }
        "#,
    );
    let (engine, _) = load(temp_config(dir.path()));
    let mut input = reading("south");
    input.events = vec!["cover_open".into()];
    input
        .extra
        .insert("firmware".into(), json!({ "version": "2.1", "build": 42 }));
    let drafts = engine.evaluate(&input, &snapshot("south", week_stats(0.0)));
    assert_eq!(drafts.len(), 1, "alerts: {drafts:?}");

    let e = &drafts[0].evidence;
    assert_eq!(e["meter_id"], json!("m-1"), "meter_id");
    assert_eq!(e["region"], json!("south"), "region");
    assert_eq!(e["ts_ms"], json!(1_764_808_200_000_i64), "ts_ms");
    assert_eq!(e["import_kwh"], json!(12_345.8), "energy_import_kwh");
    assert_eq!(e["export_kwh"], json!(null), "absent energy_export_kwh");
    assert_eq!(e["power_w"], json!(400.0), "power_w");
    assert_eq!(e["voltage_v"], json!([231.5]), "voltage_v");
    assert_eq!(e["events"], json!(["cover_open"]), "events");
    assert_eq!(
        e["firmware"],
        json!({ "version": "2.1", "build": 42 }),
        "extra field by index"
    );
    assert_eq!(
        e["firmware_property"], e["firmware"],
        "extra field as property"
    );
    assert_eq!(e["missing"], json!(null), "missing extra field");
    assert_eq!(e["has_event"], json!(true), "has_event");
    assert_eq!(e["interval_kind"], json!("normal"), "interval_kind");
    assert_eq!(e["interval_kwh"], json!(0.2), "interval_kwh");
    assert_eq!(e["readings"], json!(336), "readings");
    assert_eq!(e["windows"], json!(["24h", "7d"]), "windows");
    assert_eq!(e["hours"], json!(24), "window hours");
    assert_eq!(e["stats"]["hours"], json!(24), "to_map hours");
    assert_eq!(
        e["raw_stats"], e["stats"],
        "stats object converted like to_map"
    );
}

#[test]
fn unknown_window_is_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/window.rhai",
        "fn on_reading(r, m) { m.window(\"30d\"); }",
    );
    let (engine, metrics) = load(temp_config(dir.path()));
    engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    let errors = rule_errors(&metrics, "common/window.rhai", "runtime");
    assert_eq!(errors, 1, "runtime errors for an unknown window");
}

#[test]
fn region_parameters_override_per_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common/params.toml", "a = 1\nb = \"common\"\n");
    write(dir.path(), "east/params.toml", "b = \"east\"\n");
    write(
        dir.path(),
        "common/params.rhai",
        "fn on_reading(r, m) { alert(\"p\", \"info\", \"p\", #{ a: param(\"a\"), b: param(\"b\") }); }",
    );
    let (engine, _) = load(temp_config(dir.path()));
    let meter = snapshot("east", week_stats(0.0));
    let east = engine.evaluate(&reading("east"), &meter);
    let west = engine.evaluate(&reading("west"), &meter);
    assert_eq!(
        east[0].evidence,
        json!({ "a": 1, "b": "east" }),
        "east parameters"
    );
    assert_eq!(
        west[0].evidence,
        json!({ "a": 1, "b": "common" }),
        "parameters without folder"
    );
}

#[test]
fn dynamic_parameter_name_is_checked_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common/params.toml", "a = 1\n");
    write(
        dir.path(),
        "common/dynamic.rhai",
        "fn on_reading(r, m) { let name = r.meter_id; param(name); }",
    );
    let (engine, metrics) = load(temp_config(dir.path()));
    engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    let errors = rule_errors(&metrics, "common/dynamic.rhai", "runtime");
    assert_eq!(
        errors, 1,
        "runtime errors for an unknown parameter read by variable"
    );
}

#[test]
fn alert_with_invalid_severity_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/bad.rhai",
        "fn on_reading(r, m) { alert(\"x\", \"urgent\", \"m\", #{}); }",
    );
    write(dir.path(), "common/good.rhai", &constant_rule("good"));
    let (engine, metrics) = load(temp_config(dir.path()));
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    assert_eq!(kinds(&drafts), ["good"], "alerts next to an invalid one");
    let errors = rule_errors(&metrics, "common/bad.rhai", "invalid_alert");
    assert_eq!(errors, 1, "invalid_alert errors");
}

#[test]
fn alert_with_non_map_evidence_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/bad.rhai",
        "fn on_reading(r, m) { alert(\"x\", \"low\", \"m\", 5); }",
    );
    let (engine, metrics) = load(temp_config(dir.path()));
    engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    let errors = rule_errors(&metrics, "common/bad.rhai", "invalid_alert");
    assert_eq!(errors, 1, "invalid_alert errors for evidence 5");
}

#[test]
fn alerts_over_limit_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/flood.rhai",
        "fn on_reading(r, m) { for i in 0..20 { alert(\"flood\", \"info\", `n ${i}`); } }",
    );
    let config = RulesConfig {
        max_alerts_per_reading: 3,
        ..temp_config(dir.path())
    };
    let (engine, metrics) = load(config);
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    assert_eq!(drafts.len(), 3, "alerts kept of 20 with a limit of 3");
    let errors = rule_errors(&metrics, "common/flood.rhai", "too_many_alerts");
    assert_eq!(errors, 1, "too_many_alerts errors");
}

#[test]
fn evidence_maps_convert_to_json() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/evidence.rhai",
        r#"fn on_reading(r, m) {
            alert("e", "info", "e", #{ nan: 0.0 / 0.0, unit: (), nested: #{ list: [1, "two", true] }, c: 'x' });
        }"#,
    );
    let (engine, _) = load(temp_config(dir.path()));
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    let expected =
        json!({ "nan": null, "unit": null, "nested": { "list": [1, "two", true] }, "c": "x" });
    assert_eq!(drafts[0].evidence, expected, "evidence");
}

// ---------------------------------------------------------------------------------------------
// Sandbox

/// Loads `bad` next to a rule that always fires and checks that `bad` trips `class` while the
/// other rule still fires.
fn assert_trips(bad: &str, class: &str) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common/a_bad.rhai", bad);
    write(dir.path(), "common/b_good.rhai", &constant_rule("good"));
    let (engine, metrics) = load(temp_config(dir.path()));

    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    assert_eq!(
        kinds(&drafts),
        ["good"],
        "alerts of the other rule when {class} trips"
    );
    let errors = rule_errors(&metrics, "common/a_bad.rhai", class);
    assert_eq!(errors, 1, "{class} errors, metrics:\n{}", metrics.encode());
    let runtime = rule_errors(&metrics, "common/a_bad.rhai", "runtime");
    assert_eq!(runtime, 0, "runtime errors when {class} trips");
}

#[test]
fn infinite_loop_trips_operations_limit() {
    assert_trips("fn on_reading(r, m) { loop { } }", "operations");
}

#[test]
fn deep_recursion_trips_call_depth_limit() {
    assert_trips(
        "fn down(n) { down(n + 1) }\nfn on_reading(r, m) { down(0); }",
        "call_depth",
    );
}

#[test]
fn huge_string_trips_string_size_limit() {
    assert_trips(
        "fn on_reading(r, m) { let s = \"x\"; loop { s += s; } }",
        "string_size",
    );
}

#[test]
fn huge_array_trips_array_size_limit() {
    assert_trips(
        "fn on_reading(r, m) { let a = []; loop { a.push(1); } }",
        "array_size",
    );
}

#[test]
fn huge_map_trips_map_size_limit() {
    // Rhai 1.27 checks a map's size after `+=` and after native calls such as `mixin`. It does
    // not check it when `x[key] = value` adds a key, so only the operations limit bounds that.
    let rule = "fn on_reading(r, m) {\n\
                    let x = #{}; let i = 0;\n\
                    loop { let y = #{}; y[`k${i}`] = i; x += y; i += 1; }\n\
                }";
    assert_trips(rule, "map_size");
}

#[test]
fn eval_is_rejected_at_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/eval.rhai",
        "fn on_reading(r, m) {\n    eval(\"1 + 1\");\n}\n",
    );
    let problems = load_problems(temp_config(dir.path()));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
    assert_eq!(problems[0].line, Some(2), "line of eval: {}", problems[0]);
}

#[test]
fn import_is_rejected_at_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/import.rhai",
        "import \"os\" as os;\nfn on_reading(r, m) { }\n",
    );
    let problems = load_problems(temp_config(dir.path()));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
    assert_eq!(problems[0].line, Some(1), "line of import: {}", problems[0]);
}

#[test]
fn sleep_fails_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/sleep.rhai",
        "fn on_reading(r, m) { sleep(60); sleep(0.5); }",
    );
    let (engine, metrics) = load(temp_config(dir.path()));
    let start = Instant::now();
    engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "evaluate took {elapsed:?} with sleep(60)"
    );
    let errors = rule_errors(&metrics, "common/sleep.rhai", "runtime");
    assert_eq!(errors, 1, "runtime errors for sleep");
}

#[test]
fn print_does_not_fail_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "fn on_reading(r, m) { print(\"hello\"); debug(r.meter_id); alert(\"p\", \"info\", \"p\"); }";
    write(dir.path(), "common/print.rhai", rule);
    let (engine, _) = load(temp_config(dir.path()));
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    assert_eq!(kinds(&drafts), ["p"], "alerts of a rule that prints");
}

#[test]
fn error_log_allows_one_line_per_interval() {
    let log = ErrorLog::new(60);
    let rule: Arc<str> = Arc::from("common/a.rhai");
    let start = Instant::now();
    assert_eq!(log.due(&rule, start), Some(0), "first error");
    assert_eq!(
        log.due(&rule, start + Duration::from_secs(1)),
        None,
        "error after 1 s"
    );
    assert_eq!(
        log.due(&rule, start + Duration::from_secs(2)),
        None,
        "error after 2 s"
    );
    let later = log.due(&rule, start + Duration::from_secs(61));
    assert_eq!(later, Some(2), "error after 61 s reports 2 suppressed");
    let other: Arc<str> = Arc::from("common/b.rhai");
    assert_eq!(
        log.due(&other, start + Duration::from_secs(1)),
        Some(0),
        "another rule"
    );
}

// ---------------------------------------------------------------------------------------------
// Loading and check

#[test]
fn check_reports_file_and_line_of_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/broken.rhai",
        "fn on_reading(r, m) {\n    let x = ;\n}\n",
    );
    let problems = check(&temp_config(dir.path()));
    let expected = format!("{}:2:", dir.path().join("common/broken.rhai").display());
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
    assert!(
        problems[0].starts_with(&expected),
        "problem {:?} starts with {expected}",
        problems[0]
    );
}

#[test]
fn check_reports_every_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/a.rhai",
        "fn on_reading(r, m) { let = 1; }",
    );
    write(dir.path(), "east/b.rhai", "fn other() { }");
    write(dir.path(), "east/params.toml", "x = [1,\n");
    let problems = check(&temp_config(dir.path()));
    assert_eq!(problems.len(), 3, "problems: {problems:?}");
}

#[test]
fn missing_entry_point_is_compile_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common/none.rhai", "fn on_readings(r, m) { }");
    let problems = load_problems(temp_config(dir.path()));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
    assert!(
        problems[0].message.contains("on_reading"),
        "message: {}",
        problems[0]
    );
}

#[test]
fn unknown_parameter_is_compile_error_with_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common/params.toml", "known = 1\n");
    write(
        dir.path(),
        "east/p.rhai",
        "fn on_reading(r, m) {\n    if param(\"typo\") > 1 { }\n}\n",
    );
    let problems = load_problems(temp_config(dir.path()));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
    assert_eq!(
        problems[0].line,
        Some(2),
        "line of the call: {}",
        problems[0]
    );
    assert!(
        problems[0].message.contains("'typo'"),
        "message: {}",
        problems[0]
    );
    assert!(
        problems[0].message.contains("'east'"),
        "message: {}",
        problems[0]
    );
}

#[test]
fn undefined_variable_is_compile_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/typo.rhai",
        "fn on_reading(r, m) { redaing.power_w }",
    );
    let problems = load_problems(temp_config(dir.path()));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
}

#[test]
fn missing_rules_folder_fails_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let problems = load_problems(temp_config(&dir.path().join("absent")));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
}

#[test]
fn hidden_entries_are_skipped_and_links_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "..2026_12_04_10_00_00.1/common/r.rhai",
        &constant_rule("linked"),
    );
    write(
        root,
        "..2026_12_04_10_00_00.1/common/.r.rhai.swp",
        "not rhai",
    );
    std::os::unix::fs::symlink("..2026_12_04_10_00_00.1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/common", root.join("common")).unwrap();
    write(root, ".hidden/broken.rhai", "this does not parse");

    let (engine, _) = load(temp_config(root));
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    assert_eq!(
        kinds(&drafts),
        ["linked"],
        "alerts through the linked folder"
    );
    assert_eq!(engine.region_count(), 0, "region folders");
}

#[test]
fn reload_keeps_old_set_when_folder_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(&root, "common/r.rhai", &constant_rule("old"));
    let (engine, metrics) = load(temp_config(&root));
    std::fs::remove_dir_all(&root).unwrap();

    assert!(
        engine.reload().is_err(),
        "reload of a missing folder succeeded"
    );
    assert_eq!(engine.generation(), 1, "generation after failed reload");
    assert_eq!(
        metrics.rules_stale.get(),
        1,
        "rules_stale after failed reload"
    );
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    assert_eq!(kinds(&drafts), ["old"], "alerts after failed reload");
}

// ---------------------------------------------------------------------------------------------
// Hot reload

/// Loads `root` and starts watching it.
fn watched(root: &Path) -> (Arc<RuleEngine>, Arc<Metrics>, RuleWatcher) {
    let (engine, metrics) = load(temp_config(root));
    let engine = Arc::new(engine);
    let watcher = engine.watch().expect("watcher starts");
    (engine, metrics, watcher)
}

fn fired(engine: &RuleEngine) -> Vec<String> {
    let drafts = engine.evaluate(&reading("south"), &snapshot("south", week_stats(0.0)));
    drafts.into_iter().map(|d| d.kind).collect()
}

fn wait_for_generation(engine: &RuleEngine, generation: u64) -> bool {
    wait_until(RELOAD_TIMEOUT, || engine.generation() >= generation)
}

#[test]
fn reload_picks_up_rename_over_save() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(&root, "common/r.rhai", &constant_rule("old"));
    let (engine, _, _watcher) = watched(&root);

    write(&root, "common/.r.rhai.tmp", &constant_rule("new"));
    std::fs::rename(root.join("common/.r.rhai.tmp"), root.join("common/r.rhai")).unwrap();

    assert!(
        wait_for_generation(&engine, 2),
        "generation {} after save",
        engine.generation()
    );
    assert_eq!(fired(&engine), ["new"], "alerts after save");
}

#[test]
fn reload_follows_configmap_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(
        &root,
        "..2026_12_04_10_00_00.1/common/r.rhai",
        &constant_rule("old"),
    );
    std::os::unix::fs::symlink("..2026_12_04_10_00_00.1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/common", root.join("common")).unwrap();
    let (engine, _, _watcher) = watched(&root);

    // The kubelet's update: a new timestamped folder, a new link renamed over `..data`, and
    // the old folder removed.
    write(
        &root,
        "..2026_12_04_11_00_00.2/common/r.rhai",
        &constant_rule("new"),
    );
    std::os::unix::fs::symlink("..2026_12_04_11_00_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_12_04_10_00_00.1")).unwrap();

    assert!(
        wait_for_generation(&engine, 2),
        "generation {} after swap",
        engine.generation()
    );
    assert_eq!(fired(&engine), ["new"], "alerts after swap");
}

#[test]
fn reload_survives_folder_deleted_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(&root, "common/r.rhai", &constant_rule("old"));
    let (engine, metrics, _watcher) = watched(&root);

    std::fs::remove_dir_all(&root).unwrap();
    let failed = wait_until(RELOAD_TIMEOUT, || reloads(&metrics, "failure") >= 1);
    assert!(
        failed,
        "failed reloads after delete: {}",
        reloads(&metrics, "failure")
    );
    assert_eq!(
        metrics.rules_stale.get(),
        1,
        "rules_stale while the folder is missing"
    );
    assert_eq!(
        fired(&engine),
        ["old"],
        "alerts while the folder is missing"
    );

    write(&root, "common/r.rhai", &constant_rule("new"));
    assert!(
        wait_for_generation(&engine, 2),
        "generation {} after re-create",
        engine.generation()
    );
    assert_eq!(fired(&engine), ["new"], "alerts after re-create");
    assert_eq!(metrics.rules_stale.get(), 0, "rules_stale after re-create");

    // The re-armed watch reports later edits too.
    write(&root, "common/r.rhai", &constant_rule("newer"));
    assert!(
        wait_for_generation(&engine, 3),
        "generation {} after edit",
        engine.generation()
    );
    assert_eq!(
        fired(&engine),
        ["newer"],
        "alerts after edit of re-created folder"
    );
}

#[test]
fn broken_file_keeps_old_set_and_marks_stale() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(&root, "common/r.rhai", &constant_rule("old"));
    let (engine, metrics, _watcher) = watched(&root);

    write(&root, "common/r.rhai", "fn on_reading(r, m) { alert( }");
    let failed = wait_until(RELOAD_TIMEOUT, || reloads(&metrics, "failure") >= 1);
    assert!(
        failed,
        "failed reloads after a broken save: {}",
        reloads(&metrics, "failure")
    );
    assert_eq!(
        metrics.rules_stale.get(),
        1,
        "rules_stale after a broken save"
    );
    assert_eq!(engine.generation(), 1, "generation after a broken save");
    assert_eq!(fired(&engine), ["old"], "alerts after a broken save");
}

#[test]
fn half_written_file_loads_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(&root, "common/r.rhai", &constant_rule("old"));
    let (engine, metrics, _watcher) = watched(&root);

    let complete = constant_rule("new");
    let (half, _) = complete.split_at(complete.len() / 2);
    write(&root, "common/r.rhai", half);
    let failed = wait_until(RELOAD_TIMEOUT, || reloads(&metrics, "failure") >= 1);
    assert!(
        failed,
        "failed reloads after half a file: {}",
        reloads(&metrics, "failure")
    );

    write(&root, "common/r.rhai", &complete);
    assert!(
        wait_for_generation(&engine, 2),
        "generation {} after completion",
        engine.generation()
    );
    assert_eq!(fired(&engine), ["new"], "alerts after completion");
    assert_eq!(metrics.rules_stale.get(), 0, "rules_stale after completion");
}

#[test]
fn dropping_watcher_stops_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rules");
    write(&root, "common/r.rhai", &constant_rule("old"));
    let (engine, _, watcher) = watched(&root);
    assert_eq!(
        Arc::weak_count(&engine),
        1,
        "weak references held by a running watcher"
    );

    // Dropping joins the worker thread, which holds the only weak reference.
    drop(watcher);
    assert_eq!(
        Arc::weak_count(&engine),
        0,
        "weak references after the watcher is dropped"
    );
}

// ---------------------------------------------------------------------------------------------
// Cost

#[test]
#[ignore = "timing measurement, run with: cargo test --release -p gridwatch --lib -- --ignored \
            rules::tests::shipped_rules_cost --nocapture"]
fn shipped_rules_cost() {
    let (engine, _) = load(shipped_config());
    let cases = [
        (
            "household, south",
            reading("south"),
            snapshot("south", week_stats(0.0)),
        ),
        (
            "household, north",
            reading("north"),
            snapshot("north", week_stats(0.0)),
        ),
        (
            "one rig, south (fires)",
            reading("south"),
            snapshot("south", week_stats(RIG_KW)),
        ),
    ];
    // The fastest of several trials, because other processes on a shared machine only add time.
    for (name, reading, meter) in &cases {
        let rounds = 50_000;
        let fastest = (0..7)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..rounds {
                    std::hint::black_box(engine.evaluate(reading, meter));
                }
                start.elapsed() / rounds
            })
            .min()
            .unwrap();
        println!("{name}: {fastest:?} per evaluate()");
    }
}

#[test]
fn rule_file_outside_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "stray.rhai", &constant_rule("stray"));
    write(dir.path(), "README.md", "Rules of the test.");
    let problems = load_problems(temp_config(dir.path()));
    assert_eq!(problems.len(), 1, "problems: {problems:?}");
    assert!(
        problems[0].path.ends_with("stray.rhai"),
        "problem: {}",
        problems[0]
    );
}

#[test]
fn evaluations_are_counted_and_timed_per_rule() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common/first.rhai", &constant_rule("first"));
    write(
        dir.path(),
        "common/slow.rhai",
        "fn on_reading(reading, meter) { let sum = 0; for i in 0..2000 { sum += i; } }\n",
    );
    let (engine, metrics) = load(temp_config(dir.path()));
    for _ in 0..3 {
        engine.evaluate(&reading("south"), &snapshot("south", week_stats(RIG_KW)));
    }

    for rule in ["common/first.rhai", "common/slow.rhai"] {
        let labels = vec![("rule", rule.to_owned())];
        let calls = metrics.rule_evaluations.get_or_create(&labels).get();
        assert_eq!(calls, 3, "evaluations of {rule}");
    }
    let seconds = |rule: &str| {
        let labels = vec![("rule", rule.to_owned())];
        metrics.rule_evaluation_seconds.get_or_create(&labels).get()
    };
    assert!(seconds("common/first.rhai") > 0.0);
    assert!(
        seconds("common/slow.rhai") > seconds("common/first.rhai"),
        "a loop of 2,000 steps takes longer than one alert call"
    );
}
