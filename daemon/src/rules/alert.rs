//! The `alert` function and the per-thread sink that collects what one rule call raises.

use std::cell::RefCell;
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Map, Position};
use serde_json::Value;

use super::convert::map_to_json;
use crate::alerts::Severity;

/// Registers `alert(kind, severity, message, evidence)` and `alert(kind, severity, message)`.
pub(super) fn register(engine: &mut Engine) {
    // Volatile, so that the optimizer never runs it at compile time for constant arguments.
    FuncRegistration::new("alert")
        .with_volatility(true)
        .register_into_engine(
            engine,
            |kind: Dynamic, severity: Dynamic, message: Dynamic, evidence: Dynamic| {
                raise(&kind, &severity, &message, &evidence)
            },
        );
    FuncRegistration::new("alert")
        .with_volatility(true)
        .register_into_engine(
            engine,
            |kind: Dynamic, severity: Dynamic, message: Dynamic| {
                raise(&kind, &severity, &message, &Dynamic::from_map(Map::new()))
            },
        );
}

/// An alert raised by a rule call, before the rule's source is attached.
#[derive(Debug)]
pub(super) struct RaisedAlert {
    pub kind: String,
    pub severity: Severity,
    pub message: String,
    pub evidence: Value,
}

/// What one rule call raised.
#[derive(Debug, Default)]
pub(super) struct CallOutcome {
    /// Alerts kept, at most `max_alerts_per_reading`.
    pub alerts: Vec<RaisedAlert>,
    /// Alerts beyond the limit, dropped.
    pub dropped: usize,
    /// True when `alert` rejected its arguments, which also failed the call.
    pub invalid_alert: bool,
}

/// Collects the alerts of the rule call running on this thread. Rule calls never nest, and a
/// rule call runs on one thread from start to end, so one slot per thread is enough.
#[derive(Default)]
struct AlertSink {
    rule: Option<Arc<str>>,
    limit: usize,
    outcome: CallOutcome,
}

thread_local! {
    static SINK: RefCell<AlertSink> = RefCell::new(AlertSink::default());
}

/// Prepares this thread's sink for a call of `rule`.
pub(super) fn begin_call(rule: &Arc<str>, limit: usize) {
    SINK.with_borrow_mut(|sink| {
        sink.rule = Some(rule.clone());
        sink.limit = limit;
        sink.outcome = CallOutcome::default();
    });
}

/// Takes what the current call raised and clears the sink.
pub(super) fn end_call() -> CallOutcome {
    SINK.with_borrow_mut(|sink| {
        sink.rule = None;
        std::mem::take(&mut sink.outcome)
    })
}

/// Returns the rule running on this thread, or an empty name outside a rule call.
pub(super) fn current_rule() -> Arc<str> {
    SINK.with_borrow(|sink| sink.rule.clone().unwrap_or_else(|| Arc::from("")))
}

fn raise(
    kind: &Dynamic,
    severity: &Dynamic,
    message: &Dynamic,
    evidence: &Dynamic,
) -> Result<(), Box<EvalAltResult>> {
    let alert = validate_alert(kind, severity, message, evidence);
    SINK.with_borrow_mut(|sink| {
        if sink.rule.is_none() {
            return Err("alert() can only be called while a rule handles a reading".into());
        }
        match alert {
            Ok(alert) if sink.outcome.alerts.len() < sink.limit => sink.outcome.alerts.push(alert),
            Ok(_) => sink.outcome.dropped += 1,
            Err(message) => {
                sink.outcome.invalid_alert = true;
                return Err(EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into());
            }
        }
        Ok(())
    })
}

fn validate_alert(
    kind: &Dynamic,
    severity: &Dynamic,
    message: &Dynamic,
    evidence: &Dynamic,
) -> Result<RaisedAlert, String> {
    let kind = match kind.clone().into_string() {
        Ok(kind) if !kind.is_empty() => kind,
        _ => {
            return Err(format!(
                "invalid alert kind {kind:?}, expected a non-empty string"
            ));
        }
    };
    let severity = severity
        .clone()
        .into_immutable_string()
        .map_err(|t| format!("invalid alert severity of type {t}, expected a string"))
        .and_then(|s| Severity::parse(&s))?;
    let message = message
        .clone()
        .into_string()
        .map_err(|t| format!("invalid alert message of type {t}, expected a string"))?;
    let evidence = match evidence.read_lock::<Map>() {
        Some(map) => map_to_json(&map),
        None => {
            let t = evidence.type_name();
            return Err(format!(
                "invalid alert evidence of type {t}, expected a map"
            ));
        }
    };
    Ok(RaisedAlert {
        kind,
        severity,
        message,
        evidence,
    })
}
