//! Loading plugins: one file into a [`LoadedPlugin`], the folder into a [`PluginSet`], and
//! reloads that swap the set only where the new files load.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use wasmtime::component::Component;

use super::bindings::PluginPre;
use super::bindings::gridwatch::detector::types::{self, Value, ValueKind};
use super::engine::{PluginEngine, content_hash};
use super::host::{HostState, NoHistory, PluginContext, Settings};
use super::runner::Instance;
use super::state::PluginStates;
use super::{DETECTOR_INTERFACE, INTERFACE_VERSION, PluginError};
use crate::config::{DetectorConfig, PluginsConfig};
use crate::metrics::Metrics;
use crate::watch::{FolderWatcher, Reload, WatchError};

/// Maximum length of a plugin description, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Most alert kinds one plugin may declare.
const MAX_KINDS: usize = 32;

/// Most settings one plugin may declare.
const MAX_SETTINGS: usize = 64;

/// A plugin's description of itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    /// Unique name; scores and state are kept under it.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Alert kinds it can raise.
    pub kinds: Vec<String>,
    /// Settings it accepts.
    pub settings: Vec<SettingInfo>,
    /// The WIT interface it exports, with its version.
    pub interface: String,
}

/// One setting a plugin accepts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SettingInfo {
    /// Setting name.
    pub name: String,
    /// `flag`, `integer`, `number` or `text`.
    pub kind: &'static str,
    /// Default value, as JSON.
    pub default: serde_json::Value,
    /// Description of what it controls.
    pub description: String,
}

/// A compiled, checked plugin, ready to instantiate.
pub struct LoadedPlugin {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file, hex encoded.
    pub hash: String,
    /// Its description.
    pub info: PluginInfo,
    pub(super) pre: PluginPre<HostState>,
    pub(super) declared: HashMap<String, Value>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("file", &self.file)
            .field("hash", &self.hash)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Reads, compiles, checks and describes one plugin file.
    ///
    /// # Errors
    /// Returns the first problem: unreadable file, not a component, compile failure, wrong
    /// interface version, failed `describe` or an invalid description.
    pub fn load(engine: &PluginEngine, path: &Path) -> Result<LoadedPlugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|error| PluginError::Read {
            path: path.to_owned(),
            error,
        })?;
        let component = engine.compile(path, &bytes)?;
        let interface = check_interface(engine, path, &component)?;
        let start_error = |e: wasmtime::Error| PluginError::Start {
            path: path.to_owned(),
            detail: super::chain(&e),
        };
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(start_error)?;
        let pre = PluginPre::new(instance_pre).map_err(start_error)?;

        let context = Arc::new(PluginContext {
            name: String::new(),
            settings: Settings::default(),
            states: Arc::new(PluginStates::in_memory()),
            history: Arc::new(NoHistory),
            fuel: (None, None),
            log_budget: Default::default(),
            history_regions: Vec::new(),
        });
        let mut instance = Instance::new(engine, &pre, context).map_err(start_error)?;
        let raw = instance
            .describe(engine)
            .map_err(|failure| PluginError::Start {
                path: path.to_owned(),
                detail: format!("describe failed: {}", failure.message),
            })?;
        let (info, declared) = describe(path, raw, interface)?;
        Ok(LoadedPlugin {
            file: path.to_owned(),
            hash: content_hash(&bytes),
            info,
            pre,
            declared,
        })
    }

    /// Resolves the plugin's settings from its config entry, checking names and types.
    ///
    /// # Errors
    /// Returns every problem, each naming the key, the value and what was expected.
    pub fn settings(&self, config: Option<&DetectorConfig>) -> Result<Settings, Vec<String>> {
        let mut settings = Settings {
            defaults: self.declared.clone(),
            ..Settings::default()
        };
        let Some(config) = config else {
            return Ok(settings);
        };
        let mut problems = Vec::new();
        let prefix = format!("plugins.detectors.{}", self.info.name);
        settings.every_region = self.convert_table(
            &config.settings,
            &format!("{prefix}.settings"),
            &mut problems,
        );
        for (region, table) in &config.region_settings {
            let key = format!("{prefix}.region_settings.{region}");
            let values = self.convert_table(table, &key, &mut problems);
            settings.by_region.insert(region.clone(), values);
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    fn convert_table(
        &self,
        table: &toml::Table,
        prefix: &str,
        problems: &mut Vec<String>,
    ) -> HashMap<String, Value> {
        let mut values = HashMap::new();
        for (name, value) in table {
            let Some(default) = self.declared.get(name) else {
                let known: Vec<&str> = self.info.settings.iter().map(|s| s.name.as_str()).collect();
                problems.push(format!(
                    "{prefix}.{name}: unknown setting, expected one of {}",
                    known.join(", ")
                ));
                continue;
            };
            match convert_value(value, default) {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None => problems.push(format!(
                    "{prefix}.{name}: invalid value {}, expected {}",
                    truncated_value(value),
                    match kind_name(default) {
                        "number" => "a finite number",
                        other => other,
                    }
                )),
            }
        }
        values
    }
}

/// Returns a config value as written for a message, cut to its first 80 characters: a text
/// setting may hold a whole file.
fn truncated_value(value: &toml::Value) -> String {
    const SHOWN_CHARS: usize = 80;
    let text = value.to_string();
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

/// Converts a config value to the declared setting's type; integers widen to numbers, and
/// infinite and NaN numbers are refused.
fn convert_value(value: &toml::Value, default: &Value) -> Option<Value> {
    match (value, default) {
        (toml::Value::Boolean(b), Value::Flag(_)) => Some(Value::Flag(*b)),
        (toml::Value::Integer(i), Value::Integer(_)) => Some(Value::Integer(*i)),
        (toml::Value::Integer(i), Value::Number(_)) => Some(Value::Number(*i as f64)),
        (toml::Value::Float(f), Value::Number(_)) if f.is_finite() => Some(Value::Number(*f)),
        (toml::Value::String(s), Value::Text(_)) => Some(Value::Text(s.clone())),
        _ => None,
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Flag(_) => "flag",
        Value::Integer(_) => "integer",
        Value::Number(_) => "number",
        Value::Text(_) => "text",
    }
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Flag(b) => serde_json::Value::from(*b),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Number(n) => serde_json::Value::from(*n),
        Value::Text(t) => serde_json::Value::from(t.clone()),
    }
}

/// Finds the exported detector interface and checks that its major version matches ours.
fn check_interface(
    engine: &PluginEngine,
    path: &Path,
    component: &Component,
) -> Result<String, PluginError> {
    let exports: Vec<String> = component
        .component_type()
        .exports(&engine.engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let interface_error = |detail: String| PluginError::Interface {
        path: path.to_owned(),
        detail,
    };
    let prefix = format!("{DETECTOR_INTERFACE}@");
    let Some(export) = exports.iter().find(|name| name.starts_with(&prefix)) else {
        return Err(interface_error(format!(
            "does not export {DETECTOR_INTERFACE}@{INTERFACE_VERSION}; it exports [{}]",
            exports.join(", ")
        )));
    };
    let version = &export[prefix.len()..];
    let major = |v: &str| v.split('.').next().unwrap_or_default().to_owned();
    if major(version) != major(INTERFACE_VERSION) {
        return Err(interface_error(format!(
            "declares interface {export}, which this daemon does not support; expected \
             {DETECTOR_INTERFACE}@{}.x (this daemon implements {INTERFACE_VERSION})",
            major(INTERFACE_VERSION)
        )));
    }
    Ok(export.clone())
}

/// Checks the plugin's own description and turns it into [`PluginInfo`].
fn describe(
    path: &Path,
    raw: types::Info,
    interface: String,
) -> Result<(PluginInfo, HashMap<String, Value>), PluginError> {
    let mut problems = check_identity(&raw);
    let (settings, declared) = check_settings(raw.settings, &mut problems);

    if !problems.is_empty() {
        return Err(PluginError::Invalid {
            path: path.to_owned(),
            detail: problems.join("; "),
        });
    }
    let info = PluginInfo {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        kinds: raw.kinds,
        settings,
        interface,
    };
    Ok((info, declared))
}

/// Returns true for a name of 1 to 64 of `a-z`, `0-9`, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks the name, version, description and kinds, returning every problem.
fn check_identity(raw: &types::Info) -> Vec<String> {
    let mut problems = Vec::new();
    if !valid_name(&raw.name) {
        problems.push(format!(
            "name '{}' is invalid, expected 1 to 64 of a-z, 0-9, '-' and '_'",
            raw.name.escape_debug()
        ));
    }
    let printable = !raw.version.chars().any(super::host::is_hidden);
    if raw.version.trim().is_empty() || raw.version.len() > 64 || !printable {
        problems.push(format!(
            "version '{}' is invalid, expected 1 to 64 printable characters such as 1.0.0",
            raw.version.escape_debug()
        ));
    }
    if raw.description.len() > MAX_DESCRIPTION_BYTES {
        problems.push(format!(
            "description of {} bytes is too long, expected at most {MAX_DESCRIPTION_BYTES}",
            raw.description.len()
        ));
    }

    if raw.kinds.is_empty() || raw.kinds.len() > MAX_KINDS {
        problems.push(format!(
            "{} alert kinds are declared, expected 1 to {MAX_KINDS}",
            raw.kinds.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for kind in &raw.kinds {
        if !valid_name(kind) || !seen.insert(kind.as_str()) {
            problems.push(format!(
                "kind '{}' is invalid or repeated, expected unique names of 1 to 64 of a-z, \
                 0-9, '-' and '_'",
                kind.escape_debug()
            ));
        }
    }
    problems
}

/// Checks the declared settings, returning their descriptions and defaults by name.
fn check_settings(
    specs: Vec<types::SettingSpec>,
    problems: &mut Vec<String>,
) -> (Vec<SettingInfo>, HashMap<String, Value>) {
    if specs.len() > MAX_SETTINGS {
        problems.push(format!(
            "{} settings are declared, expected at most {MAX_SETTINGS}",
            specs.len()
        ));
    }
    let mut declared = HashMap::new();
    let mut settings = Vec::new();
    for spec in specs {
        if !valid_name(&spec.name) || declared.contains_key(&spec.name) {
            problems.push(format!(
                "setting '{}' is invalid or repeated, expected unique names of 1 to 64 of a-z, \
                 0-9, '-' and '_'",
                spec.name.escape_debug()
            ));
        }
        let kind = match spec.kind {
            ValueKind::Flag => "flag",
            ValueKind::Integer => "integer",
            ValueKind::Number => "number",
            ValueKind::Text => "text",
        };
        if kind_name(&spec.default_value) != kind {
            problems.push(format!(
                "setting '{}' is declared as {kind} with a {} default",
                spec.name,
                kind_name(&spec.default_value)
            ));
        }

        settings.push(SettingInfo {
            name: spec.name.clone(),
            kind,
            default: value_json(&spec.default_value),
            description: spec.description,
        });
        declared.insert(spec.name, spec.default_value);
    }
    (settings, declared)
}

/// Loads one file and returns its description, for `gridwatch plugin inspect`.
///
/// # Errors
/// Returns why the file does not load.
pub fn inspect(engine: &PluginEngine, path: &Path) -> Result<PluginInfo, PluginError> {
    LoadedPlugin::load(engine, path).map(|plugin| plugin.info)
}

/// The plugins in use, by file, and the problems of the last reload.
#[derive(Debug, Default)]
pub struct PluginSet {
    /// Loaded plugins in file-name order.
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Problems of the last reload, each naming its file.
    pub problems: Vec<String>,
    /// Increases with every change of `plugins`.
    pub generation: u64,
}

/// The plugin engine, the active set and the folder it reloads from.
pub struct PluginHost {
    /// Engine and linker shared by every plugin.
    pub engine: PluginEngine,
    config: PluginsConfig,
    metrics: Arc<Metrics>,
    active: ArcSwap<PluginSet>,
    reload_lock: Mutex<()>,
}

impl PluginHost {
    /// Builds the engine and loads the plugins folder. A folder that does not exist is an
    /// empty set; a file that fails to load is reported and skipped.
    ///
    /// # Errors
    /// Returns an error when the engine cannot be built.
    pub fn start(config: &PluginsConfig, metrics: Arc<Metrics>) -> Result<PluginHost, PluginError> {
        let host = PluginHost {
            engine: PluginEngine::new(config)?,
            config: config.clone(),
            metrics,
            active: ArcSwap::from_pointee(PluginSet::default()),
            reload_lock: Mutex::new(()),
        };
        host.reload();
        Ok(host)
    }

    /// Builds the engine and loads exactly one file, failing on any problem. Used by
    /// `gridwatch plugin test`; the host does not watch anything.
    ///
    /// # Errors
    /// Returns why the engine or the file did not load.
    pub fn single(
        config: &PluginsConfig,
        metrics: Arc<Metrics>,
        path: &Path,
    ) -> Result<PluginHost, PluginError> {
        let engine = PluginEngine::new(config)?;
        let plugin = LoadedPlugin::load(&engine, path)?;
        let mut config = config.clone();
        config
            .detectors
            .entry(plugin.info.name.clone())
            .or_insert_with(|| DetectorConfig {
                regions: vec!["*".into()],
                history_regions: Vec::new(),
                settings: toml::Table::new(),
                region_settings: BTreeMap::new(),
                fuel_per_call: None,
                fuel_per_reading: None,
            });
        if let Err(problems) = plugin.settings(config.detectors.get(&plugin.info.name)) {
            return Err(PluginError::Invalid {
                path: path.to_owned(),
                detail: problems.join("; "),
            });
        }
        Ok(PluginHost {
            engine,
            config,
            metrics,
            active: ArcSwap::from_pointee(PluginSet {
                plugins: vec![Arc::new(plugin)],
                problems: Vec::new(),
                generation: 1,
            }),
            reload_lock: Mutex::new(()),
        })
    }

    /// Returns the active set.
    pub fn set(&self) -> Arc<PluginSet> {
        self.active.load_full()
    }

    /// Returns the plugins configuration.
    pub fn config(&self) -> &PluginsConfig {
        &self.config
    }

    /// Loads the folder again. Unchanged files keep their loaded plugin; a file that fails to
    /// load keeps its previous version running; removed files unload. Returns the problems.
    pub fn reload(&self) -> Vec<String> {
        let _guard = self.reload_lock.lock();
        let old = self.active.load_full();
        let (plugins, problems) = self.load_folder(&old);

        let outcome = if problems.is_empty() {
            "success"
        } else {
            "failure"
        };
        Metrics::inc(&self.metrics.plugin_reloads, "outcome", outcome);
        for problem in &problems {
            tracing::error!(error = %problem, "plugin not loaded");
        }
        let changed = plugins.len() != old.plugins.len()
            || plugins
                .iter()
                .zip(&old.plugins)
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        let generation = old.generation + u64::from(changed);
        for plugin in plugins
            .iter()
            .filter(|p| !old.plugins.iter().any(|o| Arc::ptr_eq(o, p)))
        {
            let info = &plugin.info;
            self.quarantine_cleared(&info.name);
            tracing::info!(plugin = %info.name, version = %info.version, file = %plugin.file.display(), hash = %plugin.hash, "plugin loaded");
        }
        for plugin in old
            .plugins
            .iter()
            .filter(|o| !plugins.iter().any(|p| p.info.name == o.info.name))
        {
            self.quarantine_cleared(&plugin.info.name);
            tracing::info!(plugin = %plugin.info.name, "plugin unloaded");
        }
        if changed {
            self.warn_unmatched(&plugins);
        }
        self.metrics.plugins_loaded.set(plugins.len() as i64);
        self.active.store(Arc::new(PluginSet {
            plugins,
            problems: problems.clone(),
            generation,
        }));
        problems
    }

    /// Warns about loaded plugins without a config entry and entries without a plugin: both
    /// mean a plugin that runs nowhere, usually from a typo.
    fn warn_unmatched(&self, plugins: &[Arc<LoadedPlugin>]) {
        for plugin in plugins {
            let name = &plugin.info.name;
            match self.config.detectors.get(name) {
                None => {
                    tracing::warn!(plugin = %name, "plugin has no [plugins.detectors.{name}] entry and runs in no region")
                }
                Some(entry) if entry.regions.is_empty() => {
                    tracing::warn!(plugin = %name, "plugin's regions list is empty, so it runs in no region");
                }
                Some(_) => {}
            }
        }
        for name in self.config.detectors.keys() {
            if !plugins.iter().any(|p| &p.info.name == name) {
                tracing::warn!(plugin = %name, "[plugins.detectors.{name}] names no loaded plugin");
            }
        }
    }

    /// Clears the quarantine gauge: a new version starts with a clean record and an unloaded
    /// plugin is not quarantined.
    fn quarantine_cleared(&self, name: &str) {
        let labels = vec![("plugin", name.to_owned())];
        self.metrics
            .plugin_quarantined
            .get_or_create(&labels)
            .set(0);
    }

    fn load_folder(&self, old: &PluginSet) -> (Vec<Arc<LoadedPlugin>>, Vec<String>) {
        let mut problems = Vec::new();
        let files = match wasm_files(&self.config.dir) {
            Ok(files) => files,
            Err(error) => {
                // Keep what runs: a folder that cannot be listed is not an empty folder.
                problems.push(error.to_string());
                return (old.plugins.clone(), problems);
            }
        };
        // Files of running plugins go first, so a new file that reuses a running plugin's name
        // is the one refused.
        let (mut files, new): (Vec<PathBuf>, Vec<PathBuf>) = files
            .into_iter()
            .partition(|file| old.plugins.iter().any(|p| &p.file == file));
        files.extend(new);
        let mut by_name: BTreeMap<String, Arc<LoadedPlugin>> = BTreeMap::new();
        for file in files {
            let Some(plugin) = self.load_file(old, &file, &mut problems) else {
                continue;
            };
            if let Some(first) = by_name.get(&plugin.info.name) {
                problems.push(format!(
                    "plugin '{}' declares the name '{}', already used by '{}'",
                    file.display(),
                    plugin.info.name,
                    first.file.display()
                ));
                continue;
            }
            by_name.insert(plugin.info.name.clone(), plugin);
        }
        (by_name.into_values().collect(), problems)
    }

    /// Loads one file, reusing the old plugin when the content is unchanged and keeping it
    /// when the new content fails.
    fn load_file(
        &self,
        old: &PluginSet,
        file: &Path,
        problems: &mut Vec<String>,
    ) -> Option<Arc<LoadedPlugin>> {
        let previous = old.plugins.iter().find(|p| p.file == file);
        let unchanged = std::fs::read(file)
            .ok()
            .zip(previous)
            .is_some_and(|(bytes, p)| content_hash(&bytes) == p.hash);
        if unchanged {
            return previous.cloned();
        }
        let loaded = LoadedPlugin::load(&self.engine, file).and_then(|plugin| {
            let config = self.config.detectors.get(&plugin.info.name);
            match plugin.settings(config) {
                Ok(_) => Ok(plugin),
                Err(found) => Err(PluginError::Invalid {
                    path: file.to_owned(),
                    detail: found.join("; "),
                }),
            }
        });
        match loaded {
            Ok(plugin) => Some(Arc::new(plugin)),
            Err(error) => {
                let kept = previous.map_or(String::new(), |p| {
                    format!("; version {} keeps running", p.info.version)
                });
                problems.push(format!("{error}{kept}"));
                previous.cloned()
            }
        }
    }

    /// Watches the plugins folder and reloads on change, creating the folder when it is
    /// missing. Dropping the handle stops watching.
    ///
    /// # Errors
    /// Returns an error when the folder cannot be created or it or its parent cannot be
    /// watched.
    pub fn watch(self: &Arc<Self>) -> Result<FolderWatcher, WatchError> {
        // An empty folder is created so a plugin can be dropped in later.
        if let Err(source) = std::fs::create_dir_all(&self.config.dir) {
            return Err(WatchError {
                what: "plugins",
                path: self.config.dir.clone(),
                source: notify::Error::io(source),
            });
        }
        let target: Arc<dyn Reload> = self.clone();
        FolderWatcher::start(
            "plugins",
            &self.config.dir,
            self.config.reload_debounce_ms,
            Arc::downgrade(&target),
        )
    }
}

impl Reload for PluginHost {
    fn reload_after_change(&self) {
        self.reload();
    }
}

/// Lists the `.wasm` files of the folder in name order; a missing folder has none.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PluginError::Folder {
                path: dir.to_owned(),
                error,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Returns true when `plugin` has a config entry that runs it in `region`.
pub(super) fn runs_in(config: &PluginsConfig, plugin: &str, region: &str) -> bool {
    config
        .detectors
        .get(plugin)
        .is_some_and(|detector| detector.runs_in(region))
}

#[cfg(test)]
mod tests {
    use super::{Value, convert_value};

    #[test]
    fn settings_convert_to_declared_kind() {
        let number = Value::Number(1.0);
        let widened = convert_value(&toml::Value::Integer(3), &number);
        assert!(matches!(widened, Some(Value::Number(n)) if n == 3.0));
        let text = convert_value(
            &toml::Value::String("7d".into()),
            &Value::Text(String::new()),
        );
        assert!(matches!(text, Some(Value::Text(t)) if t == "7d"));
        let flag = convert_value(&toml::Value::Boolean(true), &number);
        assert!(flag.is_none(), "a flag is not a number");
    }

    #[test]
    fn long_value_is_cut_in_messages() {
        let long = toml::Value::String("x".repeat(1_000));
        let truncated = super::truncated_value(&long);
        assert!(truncated.ends_with("… (1002 bytes)"), "{truncated}");
        assert!(
            truncated.starts_with(&format!("\"{}…", "x".repeat(79))),
            "{truncated}"
        );
        assert_eq!(super::truncated_value(&toml::Value::Integer(7)), "7");
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let number = Value::Number(1.0);
        for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let converted = convert_value(&toml::Value::Float(bad), &number);
            assert!(converted.is_none(), "{bad} was accepted");
        }
    }
}
