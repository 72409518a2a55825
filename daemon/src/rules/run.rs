//! Rule calls for one reading: error classes, metrics and rate-limited error logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, EvalAltResult, Scope};
use tracing::warn;

use super::RuleEngine;
use super::alert;
use super::api::{MeterValue, ReadingValue};
use super::load::{CompiledRule, ENTRY_POINT, RegionRules, RuleTiming};
use crate::alerts::AlertDraft;
use crate::decode::Reading;
use crate::state::MeterSnapshot;

/// Class of a rule call failure, the value of the `error` label of `rule_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleErrorClass {
    /// The call ran more than `max_operations` operations.
    Operations,
    /// Function calls nested deeper than `max_call_levels`.
    CallDepth,
    /// A string grew past `max_string_bytes`.
    StringSize,
    /// An array grew past `max_array_len`.
    ArraySize,
    /// A map grew past `max_map_len`.
    MapSize,
    /// Any other error raised while the rule ran, such as a type mismatch or an unknown window.
    Runtime,
    /// The call raised more than `max_alerts_per_reading` alerts; the extra ones were dropped.
    TooManyAlerts,
    /// `alert` was called with an invalid kind, severity, message or evidence.
    InvalidAlert,
}

impl RuleErrorClass {
    /// Returns the snake_case label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleErrorClass::Operations => "operations",
            RuleErrorClass::CallDepth => "call_depth",
            RuleErrorClass::StringSize => "string_size",
            RuleErrorClass::ArraySize => "array_size",
            RuleErrorClass::MapSize => "map_size",
            RuleErrorClass::Runtime => "runtime",
            RuleErrorClass::TooManyAlerts => "too_many_alerts",
            RuleErrorClass::InvalidAlert => "invalid_alert",
        }
    }

    /// Classifies a Rhai error, looking through the frames of nested function calls.
    pub(super) fn of(error: &EvalAltResult) -> RuleErrorClass {
        match error {
            EvalAltResult::ErrorInFunctionCall(.., inner, _) => RuleErrorClass::of(inner),
            EvalAltResult::ErrorTooManyOperations(_) => RuleErrorClass::Operations,
            EvalAltResult::ErrorStackOverflow(_) => RuleErrorClass::CallDepth,
            EvalAltResult::ErrorDataTooLarge(what, _) => {
                // Rhai names the data: "Length of string", "Size of array/BLOB", "Size of BLOB",
                // "Size of object map".
                if what.contains("string") {
                    RuleErrorClass::StringSize
                } else if what.contains("map") {
                    RuleErrorClass::MapSize
                } else {
                    RuleErrorClass::ArraySize
                }
            }
            _ => RuleErrorClass::Runtime,
        }
    }
}

/// Runs every rule of `region` for one reading and returns the alerts raised.
pub(super) fn evaluate(
    engine: &RuleEngine,
    region: &RegionRules,
    reading: &Reading,
    meter: &MeterSnapshot,
) -> Vec<AlertDraft> {
    if region.rules.is_empty() {
        return Vec::new();
    }
    // One copy per reading, shared by every rule call through the Arc.
    let reading_value = ReadingValue(Arc::new(reading.clone()));
    let meter_value = MeterValue(Arc::new(meter.clone()));

    let mut drafts = Vec::new();
    for rule in &region.rules {
        call_rule(
            engine,
            region,
            rule,
            &reading_value,
            &meter_value,
            &mut drafts,
        );
    }
    drafts
}

fn call_rule(
    engine: &RuleEngine,
    region: &RegionRules,
    rule: &CompiledRule,
    reading: &ReadingValue,
    meter: &MeterValue,
    drafts: &mut Vec<AlertDraft>,
) {
    let limit = engine.config.max_alerts_per_reading;
    alert::begin_call(&rule.name, limit);
    // Top-level statements of a rule file are not run per reading, only `on_reading`.
    let options = CallFnOptions::new().eval_ast(false).rewind_scope(false);
    let started = Instant::now();
    let result = region.engine.call_fn_with_options::<Dynamic>(
        options,
        &mut Scope::new(),
        &rule.ast,
        ENTRY_POINT,
        (reading.clone(), meter.clone()),
    );
    let timing = rule.timing.get_or_init(|| {
        let labels = vec![("rule", rule.name.to_string())];
        RuleTiming {
            calls: engine
                .metrics
                .rule_evaluations
                .get_or_create(&labels)
                .clone(),
            seconds: engine
                .metrics
                .rule_evaluation_seconds
                .get_or_create(&labels)
                .clone(),
        }
    });
    timing.calls.inc();
    timing.seconds.inc_by(started.elapsed().as_secs_f64());
    let outcome = alert::end_call();

    if let Err(error) = result {
        let class = match outcome.invalid_alert {
            true => RuleErrorClass::InvalidAlert,
            false => RuleErrorClass::of(&error),
        };
        engine.rule_failed(rule, class, &reading.0, &error.to_string());
    }
    if outcome.dropped > 0 {
        let message = format!(
            "raised {} alerts for one reading, {} over the limit of {limit}; the extra ones \
             were dropped",
            outcome.alerts.len() + outcome.dropped,
            outcome.dropped
        );
        engine.rule_failed(rule, RuleErrorClass::TooManyAlerts, &reading.0, &message);
    }

    drafts.extend(outcome.alerts.into_iter().map(|alert| AlertDraft {
        kind: alert.kind,
        severity: alert.severity,
        message: alert.message,
        evidence: alert.evidence,
        source: rule.source.clone(),
    }));
}

impl RuleEngine {
    /// Counts a failed rule call and logs it unless the rule logged within the interval.
    fn rule_failed(
        &self,
        rule: &CompiledRule,
        class: RuleErrorClass,
        reading: &Reading,
        error: &str,
    ) {
        let labels = vec![
            ("rule", rule.name.to_string()),
            ("error", class.as_str().to_owned()),
        ];
        self.metrics.rule_errors.get_or_create(&labels).inc();

        let Some(suppressed) = self.error_log.due(&rule.name, Instant::now()) else {
            return;
        };
        warn!(
            rule = %rule.name,
            region = %reading.region,
            meter = %reading.meter_id,
            class = class.as_str(),
            suppressed,
            error,
            "rule failed for a reading"
        );
    }
}

/// Per-rule log throttle: at most one line per rule and interval.
pub(super) struct ErrorLog {
    interval: Duration,
    rules: Mutex<HashMap<Arc<str>, LogState>>,
}

struct LogState {
    last_logged: Instant,
    suppressed: u64,
}

impl ErrorLog {
    /// Creates a throttle that allows one line per rule every `interval_secs` seconds.
    pub fn new(interval_secs: u64) -> ErrorLog {
        ErrorLog {
            interval: Duration::from_secs(interval_secs),
            rules: Mutex::default(),
        }
    }

    /// Returns `Some(suppressed)` when `rule` may log at `now`, with the number of errors not
    /// logged since its last line, or `None` when this error is suppressed.
    pub fn due(&self, rule: &Arc<str>, now: Instant) -> Option<u64> {
        // The map holds only timestamps and counts, which stay valid after a panic elsewhere.
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = rules.get_mut(rule) else {
            rules.insert(
                rule.clone(),
                LogState {
                    last_logged: now,
                    suppressed: 0,
                },
            );
            return Some(0);
        };
        if now.saturating_duration_since(state.last_logged) < self.interval {
            state.suppressed += 1;
            return None;
        }
        let suppressed = std::mem::take(&mut state.suppressed);
        state.last_logged = now;
        Some(suppressed)
    }
}
