//! Rhai rules per region: loading, sandboxed evaluation and hot reload.
//!
//! The rules folder has one sub-folder per region and one common folder, named by
//! `rules.common_folder` (`common` by default):
//!
//! ```text
//! rules/
//!   common/params.toml    parameter defaults for every region
//!   common/mining.rhai    runs for readings of every region
//!   north/params.toml     overrides single parameters for region `north`
//!   north/voltage.rhai    runs for readings of region `north` only
//! ```
//!
//! Every file is compiled off the reading path, once per region so that `param("name")` calls
//! with a literal name become constants. A reload builds the whole new set and swaps it in only
//! if every file compiles; otherwise the previous set stays active. The rule author's API is
//! described in `docs/rules.md`.
//!
//! | file | role |
//! |---|---|
//! | `load.rs` | folder discovery and compilation of a [`RuleEngine`]'s set |
//! | `params.rs` | `params.toml` parsing and per-region merging |
//! | `api.rs` | the Rhai types, functions and sandbox limits |
//! | `alert.rs` | the `alert` function and the alerts of the running call |
//! | `convert.rs` | JSON and Rhai value conversion |
//! | `run.rs` | rule calls, error classes and rate-limited error logs |

mod alert;
mod api;
mod convert;
mod load;
mod params;
mod run;
pub mod tool;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tracing::{error, info};

use crate::alerts::AlertDraft;
use crate::config::RulesConfig;
use crate::decode::Reading;
use crate::metrics::Metrics;
use crate::state::MeterSnapshot;

use load::RuleSet;
use run::ErrorLog;

pub use crate::watch::FolderWatcher as RuleWatcher;
pub(crate) use api::apply_sandbox;
pub(crate) use convert::{dynamic_to_json, json_to_dynamic};
pub use run::RuleErrorClass;

/// One problem found while loading the rules folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// File or folder with the problem, joined to the configured rules folder.
    pub path: PathBuf,
    /// Line number, starting at 1, when known.
    pub line: Option<usize>,
    /// Column number, starting at 1, when known.
    pub column: Option<usize>,
    /// Description of the problem, as a lowercase fragment.
    pub message: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Errors of the rules subsystem.
#[derive(Debug, thiserror::Error)]
pub enum RuleSetError {
    /// The rules folder is missing or at least one of its files does not compile.
    #[error("invalid rule set in '{}':\n{}", dir.display(), format_problems(problems))]
    Invalid {
        /// The configured rules folder.
        dir: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<RuleProblem>,
    },
    /// The file watcher could not be started.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
}

fn format_problems(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Outcome of the latest [`RuleEngine::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    /// Time the reload finished, Unix milliseconds.
    pub at_ms: i64,
    /// Problems that kept the new set out, each as `path:line:col: message`; empty on success.
    pub problems: Vec<String>,
}

/// The active rule set and what it needs to run and reload it.
pub struct RuleEngine {
    config: RulesConfig,
    metrics: Arc<Metrics>,
    active: ArcSwap<RuleSet>,
    /// Serializes reloads so that generations increase in the order sets are built.
    reload_lock: Mutex<()>,
    error_log: ErrorLog,
    /// Outcome of the latest reload; `None` until the first reload after start-up.
    last_reload: Mutex<Option<ReloadRecord>>,
}

impl RuleEngine {
    /// Compiles every rule file and parameter file under `config.dir`.
    ///
    /// # Errors
    /// Returns [`RuleSetError::Invalid`] with every problem found, each with its file and, where
    /// known, line and column.
    pub fn load(config: RulesConfig, metrics: Arc<Metrics>) -> Result<RuleEngine, RuleSetError> {
        let set = RuleSet::compile(&config, 1).map_err(|problems| RuleSetError::Invalid {
            dir: config.dir.clone(),
            problems,
        })?;
        info!(
            files = set.files,
            regions = set.region_count(),
            generation = set.generation,
            "rule set loaded"
        );

        metrics.rules_stale.set(0);
        let error_log = ErrorLog::new(config.error_log_interval_secs);
        Ok(RuleEngine {
            config,
            metrics,
            active: ArcSwap::from_pointee(set),
            reload_lock: Mutex::new(()),
            error_log,
            last_reload: Mutex::new(None),
        })
    }

    /// Runs the common rules, then the rules of the reading's region, each group in file-name
    /// order, and returns the alerts they raised.
    ///
    /// A rule that fails or hits a sandbox limit is counted in `rule_errors{rule, error}` and
    /// logged at most once per `error_log_interval_secs`. The other rules still run, and the
    /// alerts the failing rule raised before it failed are kept.
    pub fn evaluate(&self, reading: &Reading, meter: &MeterSnapshot) -> Vec<AlertDraft> {
        let set = self.active.load();
        let region = set.rules_for(&reading.region);
        run::evaluate(self, region, reading, meter)
    }

    /// Recompiles the whole rules folder and swaps the new set in only if all of it compiles.
    ///
    /// On failure the previous set stays active, every problem is logged with its file and
    /// line, `rule_reloads{outcome="failure"}` is counted and `rules_stale` is set to 1. A
    /// missing rules folder is a failure, not an empty set.
    ///
    /// # Errors
    /// Returns [`RuleSetError::Invalid`] with every problem found.
    pub fn reload(&self) -> Result<(), RuleSetError> {
        // A poisoned lock only means an earlier reload panicked; the set itself is still valid.
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.active.load().generation + 1;
        match RuleSet::compile(&self.config, generation) {
            Ok(set) => {
                info!(
                    files = set.files,
                    regions = set.region_count(),
                    generation,
                    "rules reloaded"
                );
                // Metrics first, so that a reader of the new generation also reads the new metrics.
                Metrics::inc(&self.metrics.rule_reloads, "outcome", "success");
                self.metrics.rules_stale.set(0);
                self.active.store(Arc::new(set));
                self.record_reload(Vec::new());
                Ok(())
            }
            Err(problems) => {
                self.report_failed_reload(&problems);
                self.record_reload(problems.iter().map(ToString::to_string).collect());
                Err(RuleSetError::Invalid {
                    dir: self.config.dir.clone(),
                    problems,
                })
            }
        }
    }

    fn record_reload(&self, problems: Vec<String>) {
        let at_ms = chrono::Utc::now().timestamp_millis();
        let record = ReloadRecord { at_ms, problems };
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
    }

    /// Returns the outcome of the latest reload, or `None` when none ran since start-up.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Returns the path and content hash of every rule file in the active set, sorted by path.
    pub fn sources(&self) -> Vec<crate::alerts::AlertSource> {
        self.active.load().sources()
    }

    fn report_failed_reload(&self, problems: &[RuleProblem]) {
        for problem in problems {
            error!(
                rule = %problem.path.display(),
                line = problem.line,
                error = %problem.message,
                "invalid rule file"
            );
        }
        error!(
            problems = problems.len(),
            generation = self.generation(),
            "rule reload failed; the previous rule set stays active"
        );
        Metrics::inc(&self.metrics.rule_reloads, "outcome", "failure");
        self.metrics.rules_stale.set(1);
    }

    /// Watches the rules folder and reloads on change, once the files have been quiet for
    /// `reload_debounce_ms`. Dropping the returned handle stops watching.
    ///
    /// # Errors
    /// Returns [`RuleSetError::Watch`] when the watcher cannot be started or the rules folder or
    /// its parent cannot be watched.
    pub fn watch(self: &Arc<Self>) -> Result<RuleWatcher, RuleSetError> {
        let target: Arc<dyn crate::watch::Reload> = self.clone();
        let debounce_ms = self.config.reload_debounce_ms;
        let watcher = RuleWatcher::start(
            "rules",
            &self.config.dir,
            debounce_ms,
            Arc::downgrade(&target),
        )?;
        Ok(watcher)
    }

    /// Returns the number of rule files in the active set.
    pub fn file_count(&self) -> usize {
        self.active.load().files
    }

    /// Returns the number of region folders in the active set, not counting the common folder.
    pub fn region_count(&self) -> usize {
        self.active.load().region_count()
    }

    /// Returns the generation of the active set: 1 after [`RuleEngine::load`], plus one for
    /// every successful reload.
    pub fn generation(&self) -> u64 {
        self.active.load().generation
    }

    /// Returns the configuration the engine was loaded with.
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }
}

/// Compiles the rules folder without running anything, for `gridwatch check`.
///
/// Returns every problem as `path:line:col: message` (or `path: message` when the problem has
/// no position); an empty list means the folder would load.
pub fn check(config: &RulesConfig) -> Vec<String> {
    match RuleSet::compile(config, 0) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

impl crate::watch::Reload for RuleEngine {
    fn reload_after_change(&self) {
        // A failed reload is logged and counted by `reload`; the next change retries.
        let _ = self.reload();
    }
}
