//! Decoder scripts: Rhai files that turn a head-end's own format into readings.
//!
//! Each `*.rhai` file in `decode.scripts_dir` defines `fn decode(topic, payload)`, where both
//! arguments are strings, and returns a map of gridwatch schema fields, an array of such maps,
//! or `()` for a message without a reading. Scripts run in the rules' sandbox, with the limits
//! of `[rules]`, and with one extra function, `parse_json(text)`. The folder is watched; a
//! reload swaps in the new scripts only when every file compiles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use serde_json::{Map, Value};
use tracing::{debug, error, info};

use super::{RejectReason, Rejection};
use crate::config::RulesConfig;
use crate::metrics::Metrics;
use crate::rules::{RuleProblem, apply_sandbox, dynamic_to_json, json_to_dynamic};
use crate::watch::{FolderWatcher, Reload, WatchError};

/// Name of the function every decoder script defines.
const ENTRY_POINT: &str = "decode";

/// File extension of decoder scripts.
const SCRIPT_EXTENSION: &str = "rhai";

/// The decoder scripts folder, compiled, and what it needs to reload.
pub struct DecoderScripts {
    dir: PathBuf,
    required: Vec<String>,
    limits: RulesConfig,
    debounce_ms: u64,
    metrics: Arc<Metrics>,
    active: ArcSwap<ScriptSet>,
    reload_lock: Mutex<()>,
}

/// Every script of the folder, compiled by one engine.
struct ScriptSet {
    engine: Engine,
    scripts: HashMap<String, AST>,
}

/// Problems found in the decoder scripts folder.
#[derive(Debug, thiserror::Error)]
#[error("invalid decoder scripts in '{}':\n{}", dir.display(), list(problems))]
pub struct ScriptError {
    /// The scripts folder.
    pub dir: PathBuf,
    /// Every problem, each with its file and, where known, line and column.
    pub problems: Vec<RuleProblem>,
}

fn list(problems: &[RuleProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    lines.join("\n")
}

impl DecoderScripts {
    /// Compiles every script in `dir` under the sandbox limits of `limits`. The scripts named
    /// in `required` must be among them, at load and at every reload.
    ///
    /// # Errors
    /// Returns every problem found: an unreadable folder, a file that does not compile, a file
    /// without `fn decode(topic, payload)`, or a required script that is missing.
    pub fn load(
        dir: &Path,
        required: &[String],
        limits: &RulesConfig,
        debounce_ms: u64,
        metrics: Arc<Metrics>,
    ) -> Result<DecoderScripts, ScriptError> {
        let set = compile(dir, required, limits).map_err(|problems| ScriptError {
            dir: dir.to_owned(),
            problems,
        })?;
        info!(dir = %dir.display(), scripts = set.scripts.len(), "decoder scripts loaded");
        metrics.decoders_stale.set(0);
        Ok(DecoderScripts {
            dir: dir.to_owned(),
            required: required.to_vec(),
            limits: limits.clone(),
            debounce_ms,
            metrics,
            active: ArcSwap::from_pointee(set),
            reload_lock: Mutex::new(()),
        })
    }

    /// Loads a single script file, for `gridwatch decode test`. Its name is the file stem.
    ///
    /// # Errors
    /// Same as [`DecoderScripts::load`].
    pub fn load_file(
        path: &Path,
        limits: &RulesConfig,
    ) -> Result<(DecoderScripts, String), ScriptError> {
        let fail = |message: String| ScriptError {
            dir: path.to_owned(),
            problems: vec![problem(path, None, message)],
        };
        let name =
            script_name(path).ok_or_else(|| fail("expected a file named NAME.rhai".into()))?;
        let engine = engine(limits);
        let ast = compile_file(&engine, path).map_err(|p| ScriptError {
            dir: path.to_owned(),
            problems: vec![p],
        })?;
        let set = ScriptSet {
            engine,
            scripts: HashMap::from([(name.clone(), ast)]),
        };
        let scripts = DecoderScripts {
            dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
            required: vec![name.clone()],
            limits: limits.clone(),
            debounce_ms: 0,
            metrics: Arc::new(Metrics::new()),
            active: ArcSwap::from_pointee(set),
            reload_lock: Mutex::new(()),
        };
        Ok((scripts, name))
    }

    /// Returns true when a script of this name is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.active.load().scripts.contains_key(name)
    }

    /// Runs the script `name` on one message and returns its readings as schema maps.
    ///
    /// # Errors
    /// Returns a `malformed` rejection when the payload is not UTF-8, and a `script_failed`
    /// rejection when the script fails, throws, hits a sandbox limit or returns something other
    /// than a map, an array of maps or `()`.
    pub fn run(
        &self,
        name: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Vec<Map<String, Value>>, Rejection> {
        let text = std::str::from_utf8(payload).map_err(|e| {
            let detail = format!("payload is not UTF-8 text: {e}");
            Rejection::new(RejectReason::Malformed, detail)
        })?;
        let set = self.active.load();
        let Some(ast) = set.scripts.get(name) else {
            let detail = format!("decoder script '{name}' is not loaded");
            return Err(Rejection::new(RejectReason::ScriptFailed, detail));
        };
        let args = (topic.to_owned(), text.to_owned());
        let result = set
            .engine
            .call_fn::<Dynamic>(&mut Scope::new(), ast, ENTRY_POINT, args)
            .map_err(|e| script_failed(name, &failure(&e, &self.limits)))?;
        readings(name, &result)
    }

    /// Recompiles the folder and swaps the new scripts in only if every file compiles.
    ///
    /// # Errors
    /// Returns every problem found; the previous scripts stay active.
    pub fn reload(&self) -> Result<(), ScriptError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        match compile(&self.dir, &self.required, &self.limits) {
            Ok(set) => {
                info!(scripts = set.scripts.len(), "decoder scripts reloaded");
                Metrics::inc(&self.metrics.decoder_reloads, "outcome", "success");
                self.metrics.decoders_stale.set(0);
                self.active.store(Arc::new(set));
                Ok(())
            }
            Err(problems) => {
                for p in &problems {
                    error!(script = %p.path.display(), line = p.line, error = %p.message, "invalid decoder script");
                }
                error!("decoder script reload failed; the previous scripts stay active");
                Metrics::inc(&self.metrics.decoder_reloads, "outcome", "failure");
                self.metrics.decoders_stale.set(1);
                Err(ScriptError {
                    dir: self.dir.clone(),
                    problems,
                })
            }
        }
    }

    /// Watches the folder and reloads on change. Dropping the handle stops watching.
    ///
    /// # Errors
    /// Returns an error when the folder cannot be watched.
    pub fn watch(self: &Arc<Self>) -> Result<FolderWatcher, WatchError> {
        let target: Arc<dyn Reload> = self.clone();
        FolderWatcher::start(
            "decoder scripts",
            &self.dir,
            self.debounce_ms,
            Arc::downgrade(&target),
        )
    }
}

impl Reload for DecoderScripts {
    fn reload_after_change(&self) {
        // Failures are logged and counted by `reload`.
        let _ = self.reload();
    }
}

fn engine(limits: &RulesConfig) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    apply_sandbox(&mut engine, limits);
    // Rhai counts the entries of every map in a returned array together, so a per-map limit
    // would cap the readings of one message at max_map_len / fields. The array limit and
    // max_operations still bound what a script can build.
    engine.set_max_map_size(limits.max_map_len.saturating_mul(limits.max_array_len));
    engine.on_print(|text| debug!(output = text, "decoder script printed"));
    engine.on_debug(|text, _, position| {
        debug!(
            line = position.line(),
            output = text,
            "decoder script debug output"
        );
    });
    engine.register_fn("parse_json", parse_json);
    engine
}

fn parse_json(text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    serde_json::from_str::<Value>(text)
        .map(|value| json_to_dynamic(&value))
        .map_err(|e| format!("invalid JSON: {e}").into())
}

fn compile(
    dir: &Path,
    required: &[String],
    limits: &RulesConfig,
) -> Result<ScriptSet, Vec<RuleProblem>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![problem(
            dir,
            None,
            format!("failed to read decoder scripts folder: {e}"),
        )]
    })?;
    let engine = engine(limits);
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| script_name(path).is_some())
        .collect();
    paths.sort();
    let mut scripts = HashMap::new();
    let mut problems = Vec::new();
    for path in paths {
        let name = script_name(&path).unwrap_or_default();
        match compile_file(&engine, &path) {
            Ok(ast) => {
                scripts.insert(name, ast);
            }
            Err(p) => problems.push(p),
        }
    }
    for name in required.iter().filter(|name| !scripts.contains_key(*name)) {
        let path = dir.join(format!("{name}.{SCRIPT_EXTENSION}"));
        let message = "missing, but a decoder names this script".to_owned();
        problems.push(problem(&path, None, message));
    }
    if problems.is_empty() {
        Ok(ScriptSet { engine, scripts })
    } else {
        Err(problems)
    }
}

/// Returns the script name of a visible `NAME.rhai` file.
fn script_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let visible = !stem.starts_with('.');
    let rhai = path.extension().is_some_and(|e| e == SCRIPT_EXTENSION);
    (visible && rhai).then(|| stem.to_owned())
}

fn compile_file(engine: &Engine, path: &Path) -> Result<AST, RuleProblem> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(path, None, format!("failed to read file: {e}")))?;
    let ast = engine.compile(&text).map_err(|e| {
        let position = e.position();
        let at = position.line().map(|line| (line, position.position()));
        problem(path, at, e.err_type().to_string())
    })?;
    let has_entry = ast
        .iter_functions()
        .any(|f| f.name == ENTRY_POINT && f.params.len() == 2);
    if !has_entry {
        let message = format!("no function {ENTRY_POINT}(topic, payload) is defined");
        return Err(problem(path, None, message));
    }
    Ok(ast)
}

fn problem(path: &Path, at: Option<(usize, Option<usize>)>, message: String) -> RuleProblem {
    RuleProblem {
        path: path.to_owned(),
        line: at.map(|(line, _)| line),
        column: at.and_then(|(_, column)| column),
        message,
    }
}

/// Describes a failed call in one line, naming the setting of a sandbox limit that was hit.
fn failure(error: &EvalAltResult, limits: &RulesConfig) -> String {
    let limit = match error.unwrap_inner() {
        EvalAltResult::ErrorTooManyOperations(_) => Some(format!(
            "the limit of {} operations per message (decode.max_operations)",
            limits.max_operations
        )),
        EvalAltResult::ErrorStackOverflow(_) => Some(format!(
            "the limit of {} nested calls (rules.max_call_levels)",
            limits.max_call_levels
        )),
        EvalAltResult::ErrorDataTooLarge(what, _) => Some(format!(
            "a size limit: {what} (rules.max_string_bytes, max_array_len, max_map_len)"
        )),
        _ => None,
    };
    match limit {
        Some(limit) => format!("hit {limit}"),
        // Rhai puts the call stack on further lines; a rejection detail is one line.
        None => format!("failed: {}", error.to_string().replace('\n', "; ")),
    }
}

fn script_failed(name: &str, what: &str) -> Rejection {
    let detail = format!("script '{name}' {what}");
    Rejection::new(RejectReason::ScriptFailed, detail)
}

/// Rejects a reading whose field is a NaN or infinite float, which JSON cannot carry.
fn check_finite(name: &str, result: &Dynamic) -> Result<(), Rejection> {
    let check_map = |reading: &Dynamic| {
        let Some(map) = reading.read_lock::<rhai::Map>() else {
            return Ok(());
        };
        match map.iter().find(|(_, value)| is_non_finite(value)) {
            None => Ok(()),
            Some((field, _)) => {
                let detail = format!(
                    "script '{name}' returned a NaN or infinite value in field '{field}', \
                     expected a finite number"
                );
                Err(Rejection::new(RejectReason::NonFinite, detail))
            }
        }
    };
    match result.read_lock::<rhai::Array>() {
        Some(items) => items.iter().try_for_each(check_map),
        None => check_map(result),
    }
}

/// Returns true for a NaN or infinite float, or an array that contains one.
fn is_non_finite(value: &Dynamic) -> bool {
    if let Ok(number) = value.as_float() {
        return !number.is_finite();
    }
    value
        .read_lock::<rhai::Array>()
        .is_some_and(|items| items.iter().any(is_non_finite))
}

/// Turns what `decode` returned into schema maps.
fn readings(name: &str, result: &Dynamic) -> Result<Vec<Map<String, Value>>, Rejection> {
    check_finite(name, result)?;
    let expected = "expected a map, an array of maps or ()";
    let as_object = |value: Value, what: &str| match value {
        Value::Object(map) => Ok(map),
        other => Err(script_failed(
            name,
            &format!("returned {}{what}, {expected}", json_kind(&other)),
        )),
    };
    match dynamic_to_json(result) {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| as_object(item, &format!(" at index {i} of its array")))
            .collect(),
        other => as_object(other, "").map(|map| vec![map]),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "()",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}
