//! Discovery and compilation of the rules folder into a [`RuleSet`].

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, Engine, Module, OptimizationLevel, Scope, Shared};
use sha2::{Digest, Sha256};

use super::RuleProblem;
use super::api::{self, ParamMisses};
use super::params::{self, PARAMS_FILE, Params};
use crate::alerts::AlertSource;
use crate::config::RulesConfig;

/// File extension of rule files.
const RULE_EXTENSION: &str = ".rhai";

/// Name of the function every rule file defines.
pub(super) const ENTRY_POINT: &str = "on_reading";

/// A complete, compiled rules folder.
pub(super) struct RuleSet {
    /// 1 for the first set, one more for every set swapped in after it.
    pub generation: u64,
    /// Rule files in the set, common and region ones.
    pub files: usize,
    /// Rules per region folder: the common rules, then the region's own.
    regions: HashMap<String, RegionRules>,
    /// The common rules with the common parameters, for regions without a folder.
    fallback: RegionRules,
}

/// The rules that run for one region, with the engine that contains its parameters.
pub(super) struct RegionRules {
    pub engine: Engine,
    pub rules: Vec<CompiledRule>,
}

/// One rule file compiled for one region.
pub(super) struct CompiledRule {
    /// Path relative to the rules folder, such as `common/mining.rhai`.
    pub name: Arc<str>,
    /// Attached to every alert the rule raises.
    pub source: AlertSource,
    pub ast: AST,
    /// Counters of calls and time, taken from the metrics on the first call.
    pub timing: std::sync::OnceLock<RuleTiming>,
}

/// A rule's evaluation counters, cloned from the metrics families so that a call updates them
/// without a label lookup.
pub(super) struct RuleTiming {
    pub calls: prometheus_client::metrics::counter::Counter,
    pub seconds: crate::metrics::SecondsCounter,
}

/// A rule file read and parsed, before it is optimized for a region.
struct ParsedFile {
    name: Arc<str>,
    path: PathBuf,
    text: String,
    hash: String,
    ast: AST,
}

/// A sub-folder of the rules folder.
struct Folder {
    name: String,
    files: Vec<ParsedFile>,
    params: Params,
}

impl RuleSet {
    /// Reads, parses and compiles the rules folder.
    ///
    /// Returns every problem found; a set is returned only when there are none.
    pub fn compile(config: &RulesConfig, generation: u64) -> Result<RuleSet, Vec<RuleProblem>> {
        let standard = api::standard_package();
        let parser = api::base_engine(config, &standard);
        let mut problems = Vec::new();
        let (common, regions) = discover(config, &parser, &mut problems)?;

        let files = common.files.len() + regions.iter().map(|f| f.files.len()).sum::<usize>();
        let compiler = Compiler {
            config,
            standard,
            common: &common,
        };
        let fallback = compiler.region(None, &mut problems);
        let regions: HashMap<String, RegionRules> = regions
            .iter()
            .map(|folder| {
                (
                    folder.name.clone(),
                    compiler.region(Some(folder), &mut problems),
                )
            })
            .collect();

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RuleSet {
            generation,
            files,
            regions,
            fallback,
        })
    }

    /// Returns the rules for readings of `region`.
    pub fn rules_for(&self, region: &str) -> &RegionRules {
        self.regions.get(region).unwrap_or(&self.fallback)
    }

    /// Returns the number of region folders.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Returns the source of every rule file in the set, sorted by path.
    pub fn sources(&self) -> Vec<AlertSource> {
        let mut sources: Vec<AlertSource> = std::iter::once(&self.fallback)
            .chain(self.regions.values())
            .flat_map(|region| region.rules.iter().map(|rule| rule.source.clone()))
            .collect();
        sources.sort_by(|a, b| a.rule.cmp(&b.rule));
        sources.dedup_by(|a, b| a.rule == b.rule);
        sources
    }
}

/// Reads the common folder and every region folder. Fails at once when the rules folder itself
/// cannot be read.
fn discover(
    config: &RulesConfig,
    parser: &Engine,
    problems: &mut Vec<RuleProblem>,
) -> Result<(Folder, Vec<Folder>), Vec<RuleProblem>> {
    let dir = &config.dir;
    let entries = fs::read_dir(dir).map_err(|e| {
        vec![problem(
            dir,
            None,
            None,
            format!("failed to read rules folder: {e}"),
        )]
    })?;

    let mut common = None;
    let mut regions = Vec::new();
    for (name, path) in visible_entries(dir, entries, problems) {
        // `fs::metadata` follows symbolic links, as ConfigMap mounts need.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let folder = read_folder(&name, &path, parser, problems);
                if name == config.common_folder {
                    common = Some(folder);
                } else {
                    regions.push(folder);
                }
            }
            Ok(_) if name.ends_with(RULE_EXTENSION) => {
                let message = format!(
                    "rule file outside a folder, move it to {}/ or a region folder",
                    config.common_folder
                );
                problems.push(problem(&path, None, None, message));
            }
            Ok(_) => {}
            Err(e) => problems.push(problem(&path, None, None, format!("failed to read: {e}"))),
        }
    }

    let common = common.unwrap_or_else(|| Folder {
        name: config.common_folder.clone(),
        files: Vec::new(),
        params: Params::new(),
    });
    regions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((common, regions))
}

/// Returns the entries whose names do not start with `.`, sorted by name. Hidden entries are
/// editor swap files and the `..data` and `..<timestamp>` folders of Kubernetes volumes.
fn visible_entries(
    dir: &Path,
    entries: fs::ReadDir,
    problems: &mut Vec<RuleProblem>,
) -> Vec<(String, PathBuf)> {
    let mut visible = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(problem(
                    dir,
                    None,
                    None,
                    format!("failed to list folder: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        match entry.file_name().into_string() {
            Ok(name) if name.starts_with('.') => {}
            Ok(name) => visible.push((name, path)),
            Err(_) => problems.push(problem(&path, None, None, "name is not UTF-8".into())),
        }
    }
    visible.sort();
    visible
}

fn read_folder(
    name: &str,
    path: &Path,
    parser: &Engine,
    problems: &mut Vec<RuleProblem>,
) -> Folder {
    let mut folder = Folder {
        name: name.to_owned(),
        files: Vec::new(),
        params: Params::new(),
    };
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(problem(
                path,
                None,
                None,
                format!("failed to read folder: {e}"),
            ));
            return folder;
        }
    };

    for (file_name, file_path) in visible_entries(path, entries, problems) {
        if file_name == PARAMS_FILE {
            folder.params = params::read(&file_path, problems);
        } else if file_name.ends_with(RULE_EXTENSION) && file_path.is_file() {
            let rule_name: Arc<str> = format!("{name}/{file_name}").into();
            if let Some(file) = parse_file(rule_name, file_path, parser, problems) {
                folder.files.push(file);
            }
        }
    }
    folder
}

fn parse_file(
    name: Arc<str>,
    path: PathBuf,
    parser: &Engine,
    problems: &mut Vec<RuleProblem>,
) -> Option<ParsedFile> {
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(problem(
                &path,
                None,
                None,
                format!("failed to read rule file: {e}"),
            ));
            return None;
        }
    };
    let hash = format!("{:x}", Sha256::digest(&bytes));
    let Ok(text) = String::from_utf8(bytes) else {
        problems.push(problem(
            &path,
            None,
            None,
            "rule file is not valid UTF-8".into(),
        ));
        return None;
    };

    let ast = match parser.compile(&text) {
        Ok(ast) => ast,
        Err(e) => {
            let (line, column) = (e.position().line(), e.position().position());
            problems.push(problem(&path, line, column, e.err_type().to_string()));
            return None;
        }
    };
    if let Some(message) = check_entry_point(&ast) {
        problems.push(problem(&path, None, None, message));
        return None;
    }
    Some(ParsedFile {
        name,
        path,
        text,
        hash,
        ast,
    })
}

/// Returns a message when the file lacks `on_reading(reading, meter)`.
fn check_entry_point(ast: &AST) -> Option<String> {
    let mut arities = ast
        .iter_functions()
        .filter(|f| f.name == ENTRY_POINT)
        .map(|f| f.params.len());
    match arities.find(|&n| n == 2) {
        Some(_) => None,
        None => Some(format!(
            "missing function {ENTRY_POINT}(reading, meter): every rule file must define it"
        )),
    }
}

/// Builds the per-region copies of parsed rules.
struct Compiler<'a> {
    config: &'a RulesConfig,
    standard: Shared<Module>,
    common: &'a Folder,
}

impl Compiler<'_> {
    /// Compiles the common rules and `folder`'s rules with the parameters that apply to it, or
    /// the common rules alone with the common parameters when `folder` is `None`.
    fn region(&self, folder: Option<&Folder>, problems: &mut Vec<RuleProblem>) -> RegionRules {
        let common_name = &self.common.name;
        let (label, expected, params) = match folder {
            Some(f) => (
                format!("region '{}'", f.name),
                format!("{common_name}/{PARAMS_FILE} or {}/{PARAMS_FILE}", f.name),
                params::merge(&self.common.params, &f.params),
            ),
            None => (
                "regions without a folder".to_owned(),
                format!("{common_name}/{PARAMS_FILE}"),
                self.common.params.clone(),
            ),
        };

        let misses = ParamMisses::default();
        let engine = api::region_engine(
            self.config,
            &self.standard,
            &label,
            Arc::new(params),
            misses.clone(),
        );
        let own_files = folder.map_or(&[][..], |f| &f.files[..]);
        let mut rules = Vec::with_capacity(self.common.files.len() + own_files.len());
        for file in self.common.files.iter().chain(own_files) {
            misses.start();
            let ast = engine.optimize_ast(&Scope::new(), file.ast.clone(), OptimizationLevel::Full);
            for name in dedup(misses.finish()) {
                let (line, column) = find_param_call(&file.text, &name).unzip();
                let message =
                    format!("unknown parameter '{name}' for {label}, expected it in {expected}");
                problems.push(problem(&file.path, line, column, message));
            }
            let source = AlertSource {
                rule: file.name.to_string(),
                content_hash: file.hash.clone(),
            };
            rules.push(CompiledRule {
                name: file.name.clone(),
                source,
                ast,
                timing: std::sync::OnceLock::new(),
            });
        }
        RegionRules { engine, rules }
    }
}

fn dedup(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

/// Returns the line and column of the first `param("name")` call in a rule's text.
fn find_param_call(text: &str, name: &str) -> Option<(usize, usize)> {
    let quoted = format!("\"{name}\"");
    let mut from = 0;
    while let Some(found) = text[from..].find("param") {
        let start = from + found;
        let rest = text[start + "param".len()..].trim_start();
        if let Some(argument) = rest.strip_prefix('(')
            && argument.trim_start().starts_with(&quoted)
        {
            return Some(params::line_column(text, start));
        }
        from = start + "param".len();
    }
    None
}

fn problem(
    path: &Path,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
) -> RuleProblem {
    RuleProblem {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}
