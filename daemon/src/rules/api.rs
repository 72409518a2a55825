//! The Rhai side of the rules: sandbox limits, the `reading`, `meter` and window statistics
//! types, and the `param` function.

use std::sync::{Arc, Mutex};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{Package, StandardPackage};
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FLOAT, FuncRegistration, INT, ImmutableString, Module,
    OptimizationLevel, Shared,
};
use tracing::debug;

use super::alert;
use super::convert::{json_to_dynamic, stats_to_map};
use super::params::Params;
use crate::config::RulesConfig;
use crate::decode::Reading;
use crate::state::{MeterSnapshot, WindowStats};

/// The reading handed to `on_reading`, shared so that each rule call clones only a pointer.
#[derive(Debug, Clone)]
pub(super) struct ReadingValue(pub Arc<Reading>);

/// The meter snapshot handed to `on_reading`.
#[derive(Debug, Clone)]
pub(super) struct MeterValue(pub Arc<MeterSnapshot>);

/// Standard Rhai functions, built once and shared by every engine of a rule set.
pub(super) fn standard_package() -> Shared<Module> {
    StandardPackage::new().as_shared_module()
}

/// Builds an engine with the sandbox limits and the rule API but without `param`, for parsing.
pub(super) fn base_engine(config: &RulesConfig, standard: &Shared<Module>) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(standard.clone());
    apply_sandbox(&mut engine, config);
    register_reading(&mut engine);
    register_meter(&mut engine);
    register_window_stats(&mut engine);
    alert::register(&mut engine);
    engine
}

/// Builds the engine of one region: the base engine plus `param` bound to its parameters.
///
/// `param` is registered as non-volatile, so the optimizer replaces every call with a literal
/// name by its value when the region's copy of a rule is optimized. `label` names the region in
/// error messages.
pub(super) fn region_engine(
    config: &RulesConfig,
    standard: &Shared<Module>,
    label: &str,
    params: Arc<Params>,
    misses: ParamMisses,
) -> Engine {
    let mut engine = base_engine(config, standard);
    engine.set_optimization_level(OptimizationLevel::Full);
    let label = label.to_owned();
    FuncRegistration::new("param").register_into_engine(
        &mut engine,
        move |name: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            if let Some(value) = params.get(name) {
                return Ok(value.clone());
            }
            misses.record(name);
            Err(unknown_param(name, &label))
        },
    );
    engine
}

/// Parameter names that `param` could not resolve while a rule was being optimized.
///
/// Recording is on only between [`ParamMisses::start`] and [`ParamMisses::finish`], so failed
/// look-ups at run time do not accumulate.
#[derive(Clone, Default)]
pub(super) struct ParamMisses(Arc<Mutex<Option<Vec<String>>>>);

impl ParamMisses {
    /// Starts recording.
    pub fn start(&self) {
        *self.lock() = Some(Vec::new());
    }

    /// Stops recording and returns the names recorded since [`ParamMisses::start`].
    pub fn finish(&self) -> Vec<String> {
        self.lock().take().unwrap_or_default()
    }

    fn record(&self, name: &str) {
        if let Some(names) = self.lock().as_mut() {
            names.push(name.to_owned());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
        // The list stays consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Returns the error for a parameter that no `params.toml` of the region defines.
fn unknown_param(name: &str, label: &str) -> Box<EvalAltResult> {
    format!("unknown parameter '{name}' for {label}, expected it in a params.toml").into()
}

pub(crate) fn apply_sandbox(engine: &mut Engine, config: &RulesConfig) {
    engine.set_max_operations(config.max_operations);
    engine.set_max_call_levels(config.max_call_levels);
    engine.set_max_expr_depths(config.max_expr_depth, config.max_expr_depth);
    engine.set_max_string_size(config.max_string_bytes);
    engine.set_max_array_size(config.max_array_len);
    engine.set_max_map_size(config.max_map_len);
    engine.set_strict_variables(true);

    // Rules get no file or module access and cannot compile code at run time.
    engine.set_module_resolver(DummyModuleResolver::new());
    engine.disable_symbol("import");
    engine.disable_symbol("eval");

    // The standard package's `sleep` would block the reading path for as long as a rule asks,
    // and the operations limit counts it as one operation. Functions registered on the engine
    // take precedence over packages, so these replace it with an error.
    let no_sleep = || -> Result<(), Box<EvalAltResult>> {
        Err("sleep is not available to rules, because rules run on the reading path".into())
    };
    let volatile = || FuncRegistration::new("sleep").with_volatility(true);
    volatile().register_into_engine(engine, move |_: INT| no_sleep());
    volatile().register_into_engine(engine, move |_: FLOAT| no_sleep());

    engine.on_print(|text| debug!(rule = %alert::current_rule(), output = text, "rule printed"));
    engine.on_debug(|text, _, position| {
        debug!(rule = %alert::current_rule(), line = position.line(), output = text, "rule debug output");
    });
}

fn register_reading(engine: &mut Engine) {
    engine.register_type_with_name::<ReadingValue>("Reading");

    engine.register_get("meter_id", |r: &mut ReadingValue| {
        ImmutableString::from(&r.0.meter_id)
    });
    engine.register_get("region", |r: &mut ReadingValue| {
        ImmutableString::from(&r.0.region)
    });
    engine.register_get("ts_ms", |r: &mut ReadingValue| r.0.ts_ms as INT);
    engine.register_get("energy_import_kwh", |r: &mut ReadingValue| {
        r.0.energy_import_kwh
    });
    engine.register_get("energy_export_kwh", |r: &mut ReadingValue| {
        optional(r.0.energy_export_kwh)
    });
    engine.register_get("power_w", |r: &mut ReadingValue| optional(r.0.power_w));
    engine.register_get("power_factor", |r: &mut ReadingValue| {
        optional(r.0.power_factor)
    });

    engine.register_get("voltage_v", |r: &mut ReadingValue| {
        float_array(&r.0.voltage_v)
    });
    engine.register_get("current_a", |r: &mut ReadingValue| {
        float_array(&r.0.current_a)
    });
    engine.register_get("seq", |r: &mut ReadingValue| {
        r.0.seq
            .and_then(|s| INT::try_from(s).ok())
            .map_or(Dynamic::UNIT, Dynamic::from_int)
    });
    engine.register_get("events", |r: &mut ReadingValue| -> Array {
        r.0.events
            .iter()
            .map(|e| Dynamic::from(e.clone()))
            .collect()
    });
    engine.register_fn("has_event", |r: &mut ReadingValue, code: &str| {
        r.0.events.iter().any(|e| e == code)
    });
    engine.register_fn("matching_events", matching_events);

    // Fields outside the schema; also reached as `reading.name`, because Rhai falls back to
    // the indexer for a property without a getter.
    engine.register_indexer_get(|r: &mut ReadingValue, name: ImmutableString| {
        r.0.extra
            .get(name.as_str())
            .map_or(Dynamic::UNIT, json_to_dynamic)
    });
}

fn register_meter(engine: &mut Engine) {
    engine.register_type_with_name::<MeterValue>("Meter");

    engine.register_get("meter_id", |m: &mut MeterValue| {
        ImmutableString::from(&m.0.meter_id)
    });
    engine.register_get("region", |m: &mut MeterValue| {
        ImmutableString::from(&m.0.region)
    });
    engine.register_get("register_kwh", |m: &mut MeterValue| m.0.register_kwh);
    engine.register_get("interval_kwh", |m: &mut MeterValue| m.0.interval.energy_kwh);
    engine.register_get("interval_start_ms", |m: &mut MeterValue| {
        m.0.interval.start_ms as INT
    });
    engine.register_get("interval_end_ms", |m: &mut MeterValue| {
        m.0.interval.end_ms as INT
    });
    engine.register_get("interval_kind", |m: &mut MeterValue| {
        ImmutableString::from(m.0.interval.kind.as_str())
    });
    engine.register_get("register_reversals", |m: &mut MeterValue| {
        INT::from(m.0.register_reversals)
    });
    engine.register_get("readings", |m: &mut MeterValue| {
        INT::try_from(m.0.readings).unwrap_or(INT::MAX)
    });
    engine.register_get("windows", |m: &mut MeterValue| -> Array {
        m.0.windows
            .iter()
            .map(|(name, _)| Dynamic::from(name.clone()))
            .collect()
    });
    // Plugin scores by plugin name; a plugin that has not scored the meter is absent.
    engine.register_get("scores", |m: &mut MeterValue| -> rhai::Map {
        m.0.scores
            .iter()
            .map(|(name, score)| (name.as_str().into(), Dynamic::from_float(*score)))
            .collect()
    });
    engine.register_fn("window", window);
}

fn register_window_stats(engine: &mut Engine) {
    engine.register_type_with_name::<WindowStats>("WindowStats");
    engine.register_get("hours", |s: &mut WindowStats| INT::from(s.hours));
    engine.register_get("hours_with_data", |s: &mut WindowStats| s.hours_with_data);
    engine.register_get("energy_kwh", |s: &mut WindowStats| s.energy_kwh);
    engine.register_get("mean_kw", |s: &mut WindowStats| s.mean_kw);
    engine.register_get("peak_kw", |s: &mut WindowStats| s.peak_kw);
    engine.register_get("base_kw", |s: &mut WindowStats| s.base_kw);
    engine.register_get("load_factor", |s: &mut WindowStats| s.load_factor);
    engine.register_get("night_day_ratio", |s: &mut WindowStats| s.night_day_ratio);
    engine.register_get("cv", |s: &mut WindowStats| s.cv);
    engine.register_fn("to_map", |s: &mut WindowStats| stats_to_map(s));
}

fn window(meter: &mut MeterValue, name: &str) -> Result<WindowStats, Box<EvalAltResult>> {
    if let Some(stats) = meter.0.window(name) {
        return Ok(*stats);
    }
    let known: Vec<&str> = meter.0.windows.iter().map(|(n, _)| n.as_str()).collect();
    Err(format!(
        "unknown window '{name}', configured windows: {}",
        known.join(", ")
    )
    .into())
}

/// Returns the codes of `codes` that the reading reports, in the order of `codes`.
fn matching_events(reading: &mut ReadingValue, codes: Array) -> Array {
    if reading.0.events.is_empty() {
        return Array::new();
    }
    let reported = |code: &Dynamic| {
        code.read_lock::<ImmutableString>()
            .is_some_and(|c| reading.0.events.iter().any(|e| e == c.as_str()))
    };
    codes.into_iter().filter(reported).collect()
}

fn optional(value: Option<f64>) -> Dynamic {
    value.map_or(Dynamic::UNIT, Dynamic::from_float)
}

fn float_array(values: &[f64]) -> Array {
    values.iter().map(|v| Dynamic::from_float(*v)).collect()
}
