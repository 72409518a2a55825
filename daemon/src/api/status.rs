//! The status route: loaded rule files and plugins, their last reload and their error counts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};

/// One rule file of the active set.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleFile {
    /// Path relative to the rules folder, such as `common/mining.rhai`.
    rule: String,
    /// SHA-256 of the file's content, hex encoded.
    content_hash: String,
    /// Calls of its `on_reading` since start-up.
    evaluations: u64,
    /// Time spent in those calls since start-up, seconds.
    evaluation_seconds: f64,
}

/// Outcome of the latest reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadView {
    /// Time the reload finished, Unix milliseconds; `null` where it is not recorded.
    at_ms: Option<i64>,
    /// True when the new files were swapped in.
    succeeded: bool,
    /// Problems of the reload, each naming its file.
    problems: Vec<String>,
}

/// A counter with its labels, from `/metrics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelledCount {
    /// Label values by label name, such as `rule` and `error`.
    labels: BTreeMap<String, String>,
    /// Count since the daemon started.
    count: u64,
}

/// State of the rules.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesStatus {
    /// Generation of the active set: 1 at start-up, one more for each successful reload.
    generation: u64,
    /// True while the files on disk are newer than the active set because the last reload
    /// failed.
    stale: bool,
    /// Rule files of the active set, sorted by path.
    files: Vec<RuleFile>,
    /// The latest reload; `null` when none ran since start-up.
    last_reload: Option<ReloadView>,
    /// Reloads by outcome (`success`, `failure`) since start-up.
    reloads: BTreeMap<String, u64>,
    /// Rule failures by `rule` and `error` class since start-up.
    errors: Vec<LabelledCount>,
}

/// One loaded plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// Plugin name.
    name: String,
    /// The plugin's own version.
    version: String,
    /// File it was loaded from.
    file: String,
    /// SHA-256 of the file, hex encoded.
    content_hash: String,
    /// True while it is quarantined after repeated failures.
    quarantined: bool,
    /// Readings passed to it since start-up.
    readings: u64,
    /// Time spent in its calls since start-up, seconds, with the conversion of the batches and
    /// findings.
    call_seconds: f64,
}

/// State of the detector plugins.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginsStatus {
    /// Increases with every change of the loaded plugins.
    generation: u64,
    /// Loaded plugins in file-name order.
    loaded: Vec<PluginView>,
    /// The latest reload of the folder: its problems, each naming its file. Its time is not
    /// recorded, so `at_ms` is `null`.
    last_reload: ReloadView,
    /// Reloads by outcome (`success`, `failure`) since start-up.
    reloads: BTreeMap<String, u64>,
    /// Failed calls by `plugin` and `cause` since start-up.
    failures: Vec<LabelledCount>,
}

/// Rules and plugins of the running daemon.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusReport {
    /// The Rhai rules.
    rules: Option<RulesStatus>,
    /// The WebAssembly detector plugins.
    plugins: Option<PluginsStatus>,
}

#[utoipa::path(
    get,
    path = "/api/status",
    tag = "service",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rule files and plugins with their reloads and errors", body = StatusReport),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    )
)]
/// Returns the loaded rule files and plugins with their content hashes, the outcome of their
/// latest reload, their error counts and the time spent in them.
pub async fn get_status(State(state): State<ApiState>) -> Result<Json<StatusReport>, ApiError> {
    let metrics = state.metrics.encode();
    let rules = state.rules.as_ref().map(|engine| RulesStatus {
        generation: engine.generation(),
        stale: state.metrics.rules_stale.get() == 1,
        files: engine
            .sources()
            .into_iter()
            .map(|source| {
                let labels = vec![("rule", source.rule.clone())];
                let metrics = &state.metrics;
                RuleFile {
                    evaluations: metrics.rule_evaluations.get_or_create(&labels).get(),
                    evaluation_seconds: metrics
                        .rule_evaluation_seconds
                        .get_or_create(&labels)
                        .get(),
                    rule: source.rule,
                    content_hash: source.content_hash,
                }
            })
            .collect(),
        last_reload: engine.last_reload().map(|record| ReloadView {
            at_ms: Some(record.at_ms),
            succeeded: record.problems.is_empty(),
            problems: record.problems,
        }),
        reloads: by_label(&metrics, "gridwatch_rule_reloads_total", "outcome"),
        errors: labelled(&metrics, "gridwatch_rule_errors_total"),
    });
    let plugins = state.plugins.as_ref().map(|host| {
        let set = host.set();
        let quarantined = labelled(&metrics, "gridwatch_plugin_quarantined");
        let is_quarantined = |name: &str| {
            quarantined
                .iter()
                .any(|q| q.count > 0 && q.labels.get("plugin").is_some_and(|p| p == name))
        };
        PluginsStatus {
            generation: set.generation,
            loaded: set
                .plugins
                .iter()
                .map(|plugin| {
                    let labels = vec![("plugin", plugin.info.name.clone())];
                    let metrics = &state.metrics;
                    PluginView {
                        name: plugin.info.name.clone(),
                        version: plugin.info.version.clone(),
                        file: plugin.file.display().to_string(),
                        content_hash: plugin.hash.clone(),
                        quarantined: is_quarantined(&plugin.info.name),
                        readings: metrics.plugin_readings.get_or_create(&labels).get(),
                        call_seconds: metrics.plugin_call_seconds.get_or_create(&labels).get(),
                    }
                })
                .collect(),
            last_reload: ReloadView {
                at_ms: None,
                succeeded: set.problems.is_empty(),
                problems: set.problems.clone(),
            },
            reloads: by_label(&metrics, "gridwatch_plugin_reloads_total", "outcome"),
            failures: labelled(&metrics, "gridwatch_plugin_failures_total"),
        }
    });
    Ok(Json(StatusReport { rules, plugins }))
}

/// Returns every sample of a labelled metric in the OpenMetrics text, such as
/// `gridwatch_rule_errors_total{rule="common/a.rhai",error="runtime"} 3`.
// NOTE: label values are read up to the next quote, so a value with an escaped quote is cut
// short. Rule paths, plugin names and the fixed label values have none.
fn labelled(text: &str, name: &str) -> Vec<LabelledCount> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let mut parsed = BTreeMap::new();
            for pair in labels.split("\",") {
                let (key, value) = pair.split_once("=\"")?;
                parsed.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
            }
            let count = value.trim().parse::<f64>().ok()?;
            Some(LabelledCount {
                labels: parsed,
                count: count as u64,
            })
        })
        .collect()
}

fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    labelled(text, name)
        .into_iter()
        .filter_map(|sample| Some((sample.labels.get(label)?.clone(), sample.count)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_reads_every_label() {
        let text = "# TYPE gridwatch_rule_errors counter\n\
                    gridwatch_rule_errors_total{rule=\"common/a.rhai\",error=\"runtime\"} 3\n\
                    gridwatch_rule_errors_total{rule=\"north/b.rhai\",error=\"operations\"} 1\n\
                    gridwatch_rule_reloads_total{outcome=\"failure\"} 2\n";
        let samples = labelled(text, "gridwatch_rule_errors_total");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["rule"], "common/a.rhai");
        assert_eq!(samples[0].labels["error"], "runtime");
        assert_eq!(samples[0].count, 3);
        assert_eq!(samples[1].labels["error"], "operations");
        let reloads = by_label(text, "gridwatch_rule_reloads_total", "outcome");
        assert_eq!(reloads["failure"], 2);
    }
}
