//! Rule parameters from `params.toml`: common defaults merged with per-region overrides.

use std::collections::HashMap;
use std::path::Path;

use rhai::{Array, Dynamic};

use super::RuleProblem;

/// Parameter values of one region, ready to hand to Rhai.
pub(super) type Params = HashMap<String, Dynamic>;

/// File name of the parameter file in the common folder and in each region folder.
pub(super) const PARAMS_FILE: &str = "params.toml";

/// Reads one `params.toml`; a missing file yields no parameters.
pub(super) fn read(path: &Path, problems: &mut Vec<RuleProblem>) -> Params {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Params::new(),
        Err(e) => {
            problems.push(problem(
                path,
                None,
                format!("failed to read parameter file: {e}"),
            ));
            return Params::new();
        }
    };
    parse(path, &text, problems)
}

/// Parses parameter text. Keys must be flat; values are numbers, booleans, strings or arrays of
/// those.
pub(super) fn parse(path: &Path, text: &str, problems: &mut Vec<RuleProblem>) -> Params {
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => {
            let position = e.span().map(|span| line_column(text, span.start));
            problems.push(RuleProblem {
                path: path.to_owned(),
                line: position.map(|(line, _)| line),
                column: position.map(|(_, column)| column),
                message: format!("invalid TOML: {}", e.message().trim()),
            });
            return Params::new();
        }
    };

    let mut params = Params::with_capacity(table.len());
    for (key, value) in table {
        match to_dynamic(&value) {
            Ok(value) => {
                params.insert(key, value);
            }
            Err(expected) => {
                let line = find_key_line(text, &key);
                let message = format!("parameter '{key}': {expected}");
                problems.push(problem(path, line, message));
            }
        }
    }
    params
}

/// Returns the region's parameters: the common defaults with the region's keys replacing them.
pub(super) fn merge(common: &Params, region: &Params) -> Params {
    let mut merged = common.clone();
    merged.extend(region.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

fn to_dynamic(value: &toml::Value) -> Result<Dynamic, &'static str> {
    match value {
        toml::Value::String(s) => Ok(Dynamic::from(s.clone())),
        toml::Value::Integer(i) => Ok(Dynamic::from_int(*i)),
        toml::Value::Float(f) => Ok(Dynamic::from_float(*f)),
        toml::Value::Boolean(b) => Ok(Dynamic::from_bool(*b)),
        toml::Value::Array(items) => {
            let array = items.iter().map(to_dynamic).collect::<Result<Array, _>>()?;
            Ok(Dynamic::from_array(array))
        }
        toml::Value::Table(_) => {
            Err("tables are not supported, use flat keys such as mining_min_base_kw")
        }
        toml::Value::Datetime(_) => {
            Err("dates are not supported, use Unix milliseconds or a string")
        }
    }
}

fn problem(path: &Path, line: Option<usize>, message: String) -> RuleProblem {
    RuleProblem {
        path: path.to_owned(),
        line,
        column: None,
        message,
    }
}

/// Returns the 1-based line and column of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Returns the line on which a top-level key is defined, for messages about its value.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || line.starts_with(&format!("[{key}]"))
        })
        .map(|index| index + 1)
}
