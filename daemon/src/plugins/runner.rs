//! Calls into one plugin under its limits, with failure counting and quarantine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use super::bindings::gridwatch::detector::types::{Batch, Findings, Info, Value};
use super::bindings::{Plugin, PluginPre};
use super::engine::PluginEngine;
use super::host::{HostState, PluginContext, StateLimits};
use super::load::LoadedPlugin;
use crate::metrics::Metrics;

/// Fixed bytes counted per finding on top of its strings.
const FINDING_OVERHEAD_BYTES: usize = 64;

/// Fixed bytes counted per evidence entry on top of its name and text: the index and a number.
const ENTRY_OVERHEAD_BYTES: usize = 16;

/// Fixed bytes counted per listed name on top of its text, so that empty names are not free.
const NAME_OVERHEAD_BYTES: usize = 8;

/// Standard error bytes after which a healthy instance is rebuilt, to keep the pipe open.
const STDERR_REBUILD_BYTES: usize = 8 * 1024;

/// Bytes of one plugin's state writes that may wait for the commit of a batch. A batch of
/// `store.commit_max_readings` readings can take thousands of calls, so the limit per call
/// alone would let a plugin hold gigabytes until the commit.
const MAX_PENDING_STATE_BYTES: usize = 64 * 1024 * 1024;

/// Cause of a failed call.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Short cause for metrics: fuel, deadline, memory, stack, output, invalid_output, state,
    /// trap or instantiate.
    pub cause: &'static str,
    /// Description for the log.
    pub message: String,
}

/// One live instance of a plugin in its own store.
pub struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
}

impl Instance {
    /// Instantiates a plugin in a fresh store with the memory limiter installed.
    ///
    /// # Errors
    /// Returns wasmtime's error when instantiation fails.
    pub fn new(
        engine: &PluginEngine,
        pre: &PluginPre<HostState>,
        context: Arc<PluginContext>,
    ) -> wasmtime::Result<Instance> {
        let limits = StateLimits {
            max_value_bytes: engine.limits.max_state_value_bytes,
            max_bytes_per_call: engine.limits.max_state_bytes_per_call,
            max_pending_bytes: MAX_PENDING_STATE_BYTES,
        };
        let state = HostState::new(context, engine.limits.max_memory_bytes, limits);
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|state| state);
        store.set_hostcall_fuel(copy_limit(&engine.limits));
        store.set_fuel(engine.limits.fuel_per_call)?;
        store.set_epoch_deadline(engine.deadline_ticks());
        let plugin = pre.instantiate(&mut store)?;
        Ok(Instance { store, plugin })
    }

    /// Calls `describe` with the per-call fuel budget.
    ///
    /// # Errors
    /// Returns the cause when the call fails.
    pub fn describe(&mut self, engine: &PluginEngine) -> Result<Info, Failure> {
        self.arm(engine, 0, None)?;
        let detector = self.plugin.gridwatch_detector_detector();
        detector
            .call_describe(&mut self.store)
            .map_err(|e| self.classify(engine, 0, &e))
    }

    /// Calls `detect` with a budget for the batch's readings and checks the output size.
    ///
    /// # Errors
    /// Returns the cause when the call fails or its output is over the cap.
    pub fn detect(&mut self, engine: &PluginEngine, batch: Batch) -> Result<Findings, Failure> {
        let readings = batch.meter.len();
        let batch = Arc::new(batch);
        self.arm(engine, readings, Some(batch.clone()))?;
        let detector = self.plugin.gridwatch_detector_detector();
        let result = detector.call_detect(&mut self.store, &batch);
        self.store.data_mut().end_call();
        let findings = match result {
            Ok(findings) => findings,
            Err(error) => {
                self.store.data_mut().drop_writes();
                return Err(self.classify(engine, readings, &error));
            }
        };
        let bytes = output_bytes(&findings);
        let cap = engine.limits.max_output_bytes;
        if bytes > cap {
            self.store.data_mut().drop_writes();
            return Err(Failure {
                cause: "output",
                message: format!(
                    "output of {bytes} bytes in {} findings is over the limit of {cap} bytes",
                    findings.reading.len()
                ),
            });
        }
        if let Err(message) = check_columns(&findings) {
            self.store.data_mut().drop_writes();
            return Err(Failure {
                cause: "invalid_output",
                message,
            });
        }
        self.store.data_mut().keep_writes();
        Ok(findings)
    }

    /// Returns true when the instance should be rebuilt to keep its standard error open.
    fn stderr_full(&self) -> bool {
        self.store.data().stderr.contents().len() > STDERR_REBUILD_BYTES
    }

    fn arm(
        &mut self,
        engine: &PluginEngine,
        readings: usize,
        batch: Option<Arc<Batch>>,
    ) -> Result<(), Failure> {
        let fuel = fuel_budget(engine, &self.store.data().context, readings);
        self.store.set_fuel(fuel).map_err(|e| Failure {
            cause: "instantiate",
            message: super::chain(&e),
        })?;
        self.store.set_epoch_deadline(engine.deadline_ticks());
        self.store.data_mut().begin_call(batch);
        Ok(())
    }

    /// Names the cause of a failed call in words an operator can act on.
    fn classify(&self, engine: &PluginEngine, readings: usize, error: &wasmtime::Error) -> Failure {
        let limits = &engine.limits;
        let (cause, what) = if let Some((cause, detail)) = &self.store.data().limit_hit {
            (*cause, detail.clone())
        } else if super::chain(error).contains("fuel allocated for hostcalls has been exhausted") {
            (
                "output",
                format!(
                    "the plugin passed more than {} bytes to the host in one transfer, the \
                     copy limit that follows from max_output_bytes",
                    copy_limit(limits)
                ),
            )
        } else if self.store.data().memory_limit_hit {
            (
                "memory",
                format!("memory limit of {} bytes reached", limits.max_memory_bytes),
            )
        } else {
            match error.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => (
                    "fuel",
                    format!(
                        "fuel budget of {} exhausted ({readings} readings)",
                        fuel_budget(engine, &self.store.data().context, readings)
                    ),
                ),
                Some(Trap::Interrupt) => (
                    "deadline",
                    format!(
                        "call ran past its deadline of {} ms",
                        limits.call_timeout_ms
                    ),
                ),
                Some(Trap::StackOverflow) => (
                    "stack",
                    format!("wasm stack of {} bytes overflowed", limits.max_stack_bytes),
                ),
                Some(trap) => ("trap", format!("trap: {trap}")),
                None => ("trap", super::chain(error)),
            }
        };
        let stderr = self.store.data().stderr_tail();
        let message = if stderr.is_empty() {
            what
        } else {
            format!("{what}; plugin stderr: {stderr}")
        };
        // The message contains text of the plugin's choosing: its standard error, and the function
        // names of a wasm backtrace, which come from its name section.
        let message = super::host::clean_text(&message);
        Failure { cause, message }
    }
}

/// Returns the most bytes the plugin may pass to the host in one transfer: the findings of a
/// call or the arguments of a host function. Wasmtime copies them before the host can check
/// them, so this limit bounds the copy. Twice the larger of the output and state value caps,
/// plus 1 MiB, leaves room for the parts that the caps count at less than their size.
pub(super) fn copy_limit(limits: &crate::config::PluginsConfig) -> usize {
    const SLACK_BYTES: usize = 1 << 20;
    let largest = limits.max_output_bytes.max(limits.max_state_value_bytes);
    largest.saturating_mul(2).saturating_add(SLACK_BYTES)
}

/// Returns the fuel of a call on `readings` readings: the plugin's own fuel from its config,
/// else the engine's.
fn fuel_budget(engine: &PluginEngine, context: &PluginContext, readings: usize) -> u64 {
    let limits = &engine.limits;
    let (per_call, per_reading) = context.fuel;
    let per_call = per_call.unwrap_or(limits.fuel_per_call);
    let per_reading = per_reading.unwrap_or(limits.fuel_per_reading);
    per_call.saturating_add(per_reading.saturating_mul(readings as u64))
}

/// Returns the bytes a call's findings count against the output cap. A kind or evidence name
/// counts its full length at every use, since the host copies it into each alert and message.
fn output_bytes(findings: &Findings) -> usize {
    let name_len = |index: &u32| findings.names.get(*index as usize).map_or(0, String::len);
    let names: usize = findings
        .names
        .iter()
        .map(|name| NAME_OVERHEAD_BYTES + name.len())
        .sum();
    let kinds: usize = findings.kind.iter().map(name_len).sum();
    let entry_names: usize = findings.entry_name.iter().map(name_len).sum();
    let texts: usize = findings
        .entry_value
        .iter()
        .map(|value| match value {
            Value::Text(text) => text.len(),
            _ => 0,
        })
        .sum();
    let findings_count = findings.reading.len().max(findings.kind.len());
    let entries = findings.entry_name.len().max(findings.entry_value.len());
    names
        + FINDING_OVERHEAD_BYTES * findings_count
        + kinds
        + findings.messages.len()
        + ENTRY_OVERHEAD_BYTES * entries
        + entry_names
        + texts
}

/// Checks that the columns of a call's findings agree, so that finding `i` is element `i` of
/// each per-finding column and its message and entries lie where its ends point.
///
/// # Errors
/// Returns a description of the first disagreement.
fn check_columns(findings: &Findings) -> Result<(), String> {
    let count = findings.reading.len();
    let lengths = [
        ("kind", findings.kind.len()),
        ("severity", findings.severity.len()),
        ("score", findings.score.len()),
        ("message-ends", findings.message_ends.len()),
        ("entry-ends", findings.entry_ends.len()),
    ];
    if let Some((column, len)) = lengths.iter().find(|(_, len)| *len != count) {
        return Err(format!(
            "findings column {column} has {len} elements; expected {count}, the length of \
             reading"
        ));
    }
    if findings.entry_value.len() != findings.entry_name.len() {
        return Err(format!(
            "findings column entry-value has {} elements; expected {}, the length of entry-name",
            findings.entry_value.len(),
            findings.entry_name.len()
        ));
    }
    check_ends(
        "message-ends",
        &findings.message_ends,
        findings.messages.len(),
    )?;
    check_ends(
        "entry-ends",
        &findings.entry_ends,
        findings.entry_name.len(),
    )?;
    if let Some(end) = findings
        .message_ends
        .iter()
        .find(|&&end| !findings.messages.is_char_boundary(end as usize))
    {
        return Err(format!(
            "findings column message-ends has {end}, inside a UTF-8 character of messages"
        ));
    }
    Ok(())
}

/// Checks an `-ends` column: non-decreasing, and ending at `len`, the length of the column it
/// splits (0 when it is empty).
fn check_ends(column: &str, ends: &[u32], len: usize) -> Result<(), String> {
    if let Some(pair) = ends.windows(2).find(|pair| pair[1] < pair[0]) {
        return Err(format!(
            "findings column {column} decreases from {} to {}; expected non-decreasing ends",
            pair[0], pair[1]
        ));
    }
    let last = ends.last().map_or(0, |&end| end as usize);
    if last != len {
        return Err(format!(
            "findings column {column} ends at {last}; expected {len}, the length of the column \
             it splits"
        ));
    }
    Ok(())
}

/// A plugin as the pipeline runs it: its live instance, failure count and quarantine.
pub struct Runner {
    /// The loaded plugin.
    pub plugin: Arc<LoadedPlugin>,
    context: Arc<PluginContext>,
    instance: Option<Instance>,
    failures: u32,
    quarantines_in_row: u32,
    quarantined_until: Option<Instant>,
}

impl Runner {
    /// Creates a runner; the instance is built on first use.
    pub fn new(plugin: Arc<LoadedPlugin>, context: Arc<PluginContext>) -> Runner {
        Runner {
            plugin,
            context,
            instance: None,
            failures: 0,
            quarantines_in_row: 0,
            quarantined_until: None,
        }
    }

    /// Returns the plugin's name.
    pub fn name(&self) -> &str {
        &self.plugin.info.name
    }

    /// Returns true while the plugin is quarantined; clears an expired quarantine.
    pub fn is_quarantined(&mut self, metrics: &Metrics, now: Instant) -> bool {
        match self.quarantined_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.quarantined_until = None;
                metrics
                    .plugin_quarantined
                    .get_or_create(&self.labels())
                    .set(0);
                tracing::info!(plugin = %self.name(), "plugin quarantine ended; calling it again");
                false
            }
            None => false,
        }
    }

    /// Runs `detect`, rebuilding the instance after a failure and quarantining the plugin
    /// after too many in a row.
    ///
    /// # Errors
    /// Returns the cause when the call failed; it is already counted and logged.
    pub fn detect(
        &mut self,
        engine: &PluginEngine,
        metrics: &Metrics,
        batch: Batch,
    ) -> Result<Findings, Failure> {
        let readings = batch.meter.len();
        let result = self.call(engine, batch);
        match &result {
            Ok(_) => {
                self.failures = 0;
                self.quarantines_in_row = 0;
                if self.instance.as_ref().is_some_and(Instance::stderr_full) {
                    self.instance = None;
                }
            }
            Err(failure) => self.fail(engine, metrics, readings, failure),
        }
        result
    }

    fn call(&mut self, engine: &PluginEngine, batch: Batch) -> Result<Findings, Failure> {
        if self.instance.is_none() {
            let instance =
                Instance::new(engine, &self.plugin.pre, self.context.clone()).map_err(|e| {
                    Failure {
                        cause: "instantiate",
                        message: super::chain(&e),
                    }
                })?;
            self.instance = Some(instance);
        }
        let instance = self.instance.as_mut().expect("instance was just built");
        instance.detect(engine, batch)
    }

    fn fail(
        &mut self,
        engine: &PluginEngine,
        metrics: &Metrics,
        readings: usize,
        failure: &Failure,
    ) {
        // The instance may be in any state after a trap; the next call starts a fresh one.
        self.instance = None;
        self.failures += 1;
        let mut labels = self.labels();
        labels.push(("cause", failure.cause.to_owned()));
        metrics.plugin_failures.get_or_create(&labels).inc();
        tracing::warn!(plugin = %self.name(), cause = failure.cause, readings, failures = self.failures, error = %failure.message, "plugin call failed; its findings for this batch are dropped");

        let limits = &engine.limits;
        if self.failures < limits.quarantine_after_failures {
            return;
        }
        let factor = 1u64 << self.quarantines_in_row.min(20);
        let secs = limits
            .quarantine_initial_secs
            .saturating_mul(factor)
            .min(limits.quarantine_max_secs);
        self.quarantines_in_row += 1;
        let now = Instant::now();
        self.quarantined_until = now.checked_add(Duration::from_secs(secs)).or(Some(now));
        metrics
            .plugin_quarantined
            .get_or_create(&self.labels())
            .set(1);
        metrics
            .plugin_quarantines
            .get_or_create(&self.labels())
            .inc();
        tracing::error!(plugin = %self.name(), failures = self.failures, quarantine_secs = secs, error = %failure.message, "plugin quarantined after repeated failures; it gets no readings until the quarantine ends");
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![("plugin", self.name().to_owned())]
    }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::gridwatch::detector::types::Severity;
    use super::{Findings, Value, check_columns, output_bytes};

    /// Two findings: "ab" with one entry and "c" with none.
    fn findings() -> Findings {
        Findings {
            names: vec!["odd".into(), "kw".into()],
            reading: vec![0, 1],
            kind: vec![0, 0],
            severity: vec![Severity::Low, Severity::Info],
            score: vec![0.5, 0.25],
            messages: "abc".into(),
            message_ends: vec![2, 3],
            entry_ends: vec![1, 1],
            entry_name: vec![1],
            entry_value: vec![Value::Text("xyz".into())],
        }
    }

    #[test]
    fn columns_that_agree_pass() {
        assert_eq!(check_columns(&findings()), Ok(()));
    }

    #[test]
    fn columns_of_other_lengths_fail() {
        let mut short = findings();
        short.score.pop();
        let error = check_columns(&short).unwrap_err();
        assert_eq!(
            error,
            "findings column score has 1 elements; expected 2, the length of reading"
        );
        let mut values = findings();
        values.entry_value.clear();
        let error = check_columns(&values).unwrap_err();
        assert!(
            error.starts_with("findings column entry-value has 0 elements"),
            "{error}"
        );
    }

    #[test]
    fn decreasing_ends_fail() {
        let mut torn = findings();
        torn.message_ends = vec![3, 2];
        let error = check_columns(&torn).unwrap_err();
        assert_eq!(
            error,
            "findings column message-ends decreases from 3 to 2; expected non-decreasing ends"
        );
    }

    #[test]
    fn ends_short_of_their_column_fail() {
        let mut torn = findings();
        torn.entry_ends = vec![0, 0];
        let error = check_columns(&torn).unwrap_err();
        assert_eq!(
            error,
            "findings column entry-ends ends at 0; expected 1, the length of the column it splits"
        );
    }

    #[test]
    fn message_end_inside_a_character_fails() {
        let mut torn = findings();
        torn.messages = "aé".into();
        torn.message_ends = vec![2, 3];
        let error = check_columns(&torn).unwrap_err();
        assert_eq!(
            error,
            "findings column message-ends has 2, inside a UTF-8 character of messages"
        );
    }

    #[test]
    fn output_counts_names_messages_and_texts() {
        // Names 8 + 3 and 8 + 2, two findings of 64 + 3 for the kind, 3 message bytes, and one
        // entry of 16 + 2 for its name + 3 for its text.
        assert_eq!(output_bytes(&findings()), 11 + 10 + 2 * 67 + 3 + 21);
    }
}
