//! `gridwatch score`: compares the alerts of a replay with a scenario's labels.
//!
//! For each alert kind that labels expect (`mining`, `theft`, `tamper`):
//!
//! - a meter labelled with the kind is found when an alert of that kind first fired at or after
//!   the label's onset. An alert of that kind on any other meter, or before the onset, is false.
//! - precision, recall and F1 count meters, not alerts.
//! - PR-AUC is the average precision over meters ranked by their highest alert score for the
//!   kind: the finding's `score` in the evidence when there is one, else the severity (low 0.25,
//!   medium 0.5, high 0.75, critical 1). Meters without an alert of the kind rank last.
//! - time to detect is the first firing minus the onset, in hours of data.
//!
//! False alerts per 1,000 meter-weeks count every alert on meters labelled `clean` (and,
//! separately, `benign`) over the span of their readings.
//!
//! Transformer meters (label `transformer`) are left out of the scores above. A `bypass` label
//! is scored against the `bypass` alerts of its transformer meter (see [`BypassScore`]), and
//! alerts of other kinds on transformer meters are counted apart.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::scenario::Label;
use crate::alerts::{Alert, Severity};

/// Command-line options of `gridwatch score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Labels, as `gridwatch scenario` writes them.
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Alerts, as `gridwatch replay` writes them.
    #[arg(long, value_name = "FILE")]
    pub alerts: PathBuf,
    /// Score alerts of one kind as another, such as `abnormal_load=theft` for a detector
    /// whose alerts stand for a labelled kind. Repeatable.
    #[arg(long, value_name = "KIND=LABELLED", value_parser = parse_count_as)]
    pub count_as: Vec<(String, String)>,
    /// Print JSON instead of Markdown tables.
    #[arg(long)]
    pub json: bool,
}

fn parse_count_as(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((kind, labelled)) if !kind.is_empty() && !labelled.is_empty() => {
            Ok((kind.to_owned(), labelled.to_owned()))
        }
        _ => Err(format!(
            "invalid --count-as '{text}', expected KIND=LABELLED such as abnormal_load=theft"
        )),
    }
}

/// Errors of `gridwatch score`.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A file could not be read.
    #[error("failed to read '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a label or an alert.
    #[error("invalid line {line} of '{}': {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, starting at 1.
        line: usize,
        /// The problem with the line.
        problem: String,
    },
}

/// Scores of one alert kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindScore {
    /// Meters labelled with the kind.
    pub positives: usize,
    /// Of those, meters found after their onset.
    pub found: usize,
    /// Meters with an alert of the kind that are not found positives.
    pub false_meters: usize,
    /// found / (found + false_meters).
    pub precision: f64,
    /// found / positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Average precision over meters ranked by score.
    pub pr_auc: f64,
    /// Median hours from onset to the first firing, over found meters.
    pub median_hours_to_detect: Option<f64>,
    /// 90th percentile of the same.
    pub p90_hours_to_detect: Option<f64>,
    /// Share of meters without the label (clean or benign) that got an alert of the kind.
    pub false_positive_rate: f64,
    /// Recall per variant (or rig-count group for mining).
    pub recall_by_group: BTreeMap<String, (usize, usize)>,
}

/// The whole score of a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Meters per label.
    pub meters: BTreeMap<String, usize>,
    /// Scores per expected alert kind.
    pub kinds: BTreeMap<String, KindScore>,
    /// Alerts on clean meters per 1,000 meter-weeks.
    pub false_alerts_per_1000_meter_weeks_clean: f64,
    /// Alerts on benign look-alike meters per 1,000 meter-weeks.
    pub false_alerts_per_1000_meter_weeks_benign: f64,
    /// Scores of partial bypasses, when the scenario has transformer meters.
    pub bypass: Option<BypassScore>,
}

/// Hours of data after the onset within which a bypass must be found.
pub const BYPASS_WINDOW_HOURS: i64 = 24;

/// Suspects in an alert's evidence among which the bypassed meter must be.
pub const BYPASS_TOP_SUSPECTS: usize = 3;

/// Share of transformer energy from which a bypass counts as large.
pub const LARGE_BYPASS_SHARE: f64 = 0.05;

/// Scores of partial bypasses under transformer meters.
///
/// A bypassed meter is found when a `bypass` alert on its transformer meter first fired at or
/// after the onset and within [`BYPASS_WINDOW_HOURS`] hours of data after it. It is ranked
/// when it is also among the first [`BYPASS_TOP_SUSPECTS`] meters of that alert's `suspects`
/// evidence, a comma-separated list. The stored evidence is that of the alert's latest firing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BypassScore {
    /// Bypassed meters.
    pub cases: usize,
    /// Of those, found within the window.
    pub found: usize,
    /// Of those found, the ones with the bypassed meter among the top suspects.
    pub ranked: usize,
    /// ranked / cases.
    pub ranked_share: f64,
    /// Median hours from onset to the first firing, over found meters.
    pub median_hours_to_detect: Option<f64>,
    /// 90th percentile of the same.
    pub p90_hours_to_detect: Option<f64>,
    /// Cases by share of transformer energy (`< 5 %`, `>= 5 %`): cases, found, ranked.
    pub by_share: BTreeMap<String, (usize, usize, usize)>,
    /// Transformer meters without a bypass.
    pub balanced_transformers: usize,
    /// Of those, transformers with a `bypass` alert.
    pub false_transformers: usize,
    /// `bypass` alerts on transformers without a bypass, and on bypassed transformers before
    /// the onset, per 1,000 transformer-weeks.
    pub false_alerts_per_1000_transformer_weeks: f64,
    /// Alerts of other kinds on transformer meters.
    pub other_alerts_on_transformers: usize,
}

/// Reads both files and prints the report.
///
/// # Errors
/// Returns an error when a file cannot be read or a line cannot be parsed.
pub fn run(args: &ScoreArgs, out: &mut dyn std::io::Write) -> Result<Report, ScoreError> {
    let labels: Vec<Label> = read_lines(&args.labels, |label: &Label| {
        match (&label.expected_kind, label.onset_ms) {
            (Some(kind), None) => Err(format!(
                "label of meter '{}' expects kind '{kind}' but has no onset_ms; expected the \
                 onset in Unix milliseconds",
                label.meter
            )),
            _ => Ok(()),
        }
    })?;
    let mut alerts: Vec<Alert> = read_lines(&args.alerts, |_| Ok(()))?;
    for alert in &mut alerts {
        if let Some((_, labelled)) = args.count_as.iter().find(|(kind, _)| *kind == alert.kind) {
            alert.kind.clone_from(labelled);
        }
    }
    let report = score(&labels, &alerts);
    let io = |source| ScoreError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        writeln!(out, "{text}").map_err(io)?;
    } else {
        write!(out, "{}", markdown(&report)).map_err(io)?;
    }
    Ok(report)
}

/// Reads one JSON value per line, each passing `check`.
fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<Vec<T>, ScoreError> {
    let io = |source| ScoreError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(&line)
            .map_err(|e| e.to_string())
            .and_then(|item| check(&item).map(|()| item))
            .map_err(|problem| ScoreError::Line {
                path: path.to_owned(),
                line: i + 1,
                problem,
            })?;
        items.push(item);
    }
    Ok(items)
}

/// Scores alerts against labels.
pub fn score(labels: &[Label], alerts: &[Alert]) -> Report {
    let mut by_meter: HashMap<(&str, &str), Vec<&Alert>> = HashMap::new();
    for alert in alerts {
        by_meter
            .entry((&alert.region, &alert.meter))
            .or_default()
            .push(alert);
    }
    let mut report = Report::default();
    for label in labels {
        *report.meters.entry(label.label.clone()).or_default() += 1;
    }
    let customers: Vec<Label> = labels
        .iter()
        .filter(|l| l.label != "transformer")
        .cloned()
        .collect();
    for kind in ["mining", "theft", "tamper"] {
        report
            .kinds
            .insert(kind.to_owned(), score_kind(kind, &customers, &by_meter));
    }
    report.bypass = score_bypass(labels, &by_meter);
    report.false_alerts_per_1000_meter_weeks_clean = false_alert_rate("clean", labels, &by_meter);
    report.false_alerts_per_1000_meter_weeks_benign = false_alert_rate("benign", labels, &by_meter);
    report
}

/// Scores bypass labels against the `bypass` alerts of their transformer meters; `None` when
/// the labels have no transformer meter.
fn score_bypass(
    labels: &[Label],
    by_meter: &HashMap<(&str, &str), Vec<&Alert>>,
) -> Option<BypassScore> {
    let transformers: Vec<&Label> = labels.iter().filter(|l| l.label == "transformer").collect();
    if transformers.is_empty() {
        return None;
    }
    let mut s = BypassScore::default();
    let mut hours = Vec::new();
    let window_ms = BYPASS_WINDOW_HOURS * 3_600_000;
    for label in labels.iter().filter(|l| l.label == "bypass") {
        let Some(onset) = label.onset_ms else {
            continue;
        };
        let param = |name: &str| label.params.get(name).and_then(Value::as_str);
        let transformer = (
            param("transformer_region").unwrap_or_default(),
            param("transformer").unwrap_or_default(),
        );
        let share = label
            .params
            .get("transformer_share")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let group = if share >= LARGE_BYPASS_SHARE {
            ">= 5 %"
        } else {
            "< 5 %"
        };
        let found = by_meter
            .get(&transformer)
            .into_iter()
            .flatten()
            .filter(|a| a.kind == "bypass")
            .filter(|a| (onset..=onset + window_ms).contains(&a.first_seen_ms))
            .min_by_key(|a| a.first_seen_ms);
        let ranked = found.is_some_and(|alert| {
            let suspects = alert
                .evidence
                .get("suspects")
                .and_then(Value::as_str)
                .unwrap_or_default();
            suspects
                .split(',')
                .take(BYPASS_TOP_SUSPECTS)
                .any(|m| m.trim() == label.meter)
        });
        s.cases += 1;
        let counts = s.by_share.entry(group.to_owned()).or_default();
        counts.0 += 1;
        if let Some(alert) = found {
            s.found += 1;
            counts.1 += 1;
            hours.push((alert.first_seen_ms - onset) as f64 / 3_600_000.0);
        }
        if ranked {
            s.ranked += 1;
            counts.2 += 1;
        }
    }
    s.ranked_share = ratio(s.ranked, s.cases);
    hours.sort_by(f64::total_cmp);
    s.median_hours_to_detect = quantile(&hours, 0.5);
    s.p90_hours_to_detect = quantile(&hours, 0.9);

    let mut false_alerts = 0;
    let mut weeks = 0.0;
    for label in &transformers {
        let key = (label.region.as_str(), label.meter.as_str());
        let alerts = by_meter.get(&key).map(Vec::as_slice).unwrap_or_default();
        let (bypass, other): (Vec<&Alert>, Vec<&Alert>) =
            alerts.iter().partition(|a| a.kind == "bypass");
        s.other_alerts_on_transformers += other.len();
        weeks += (label.last_ms - label.first_ms).max(0) as f64 / (7.0 * 86_400_000.0);
        match label.onset_ms {
            None => {
                s.balanced_transformers += 1;
                s.false_transformers += usize::from(!bypass.is_empty());
                false_alerts += bypass.len();
            }
            Some(onset) => {
                false_alerts += bypass.iter().filter(|a| a.first_seen_ms < onset).count();
            }
        }
    }
    if weeks > 0.0 {
        s.false_alerts_per_1000_transformer_weeks = false_alerts as f64 * 1000.0 / weeks;
    }
    Some(s)
}

fn alerts_of<'a>(
    by_meter: &'a HashMap<(&str, &str), Vec<&Alert>>,
    label: &Label,
    kind: &str,
) -> Vec<&'a Alert> {
    let key = (label.region.as_str(), label.meter.as_str());
    let alerts = by_meter.get(&key).map(Vec::as_slice).unwrap_or_default();
    alerts.iter().copied().filter(|a| a.kind == kind).collect()
}

fn score_kind(
    kind: &str,
    labels: &[Label],
    by_meter: &HashMap<(&str, &str), Vec<&Alert>>,
) -> KindScore {
    let mut s = KindScore::default();
    let mut ranked: Vec<(f64, bool)> = Vec::with_capacity(labels.len());
    let mut hours = Vec::new();
    let mut negatives = 0;
    let mut false_negatives_flagged = 0;
    for label in labels {
        let alerts = alerts_of(by_meter, label, kind);
        let positive = label.expected_kind.as_deref() == Some(kind);
        let onset = label.onset_ms.unwrap_or(i64::MIN);
        let first_after = alerts
            .iter()
            .filter(|a| a.first_seen_ms >= onset)
            .map(|a| a.first_seen_ms)
            .min();
        let found = positive && first_after.is_some();
        ranked.push((
            alerts.iter().map(|a| alert_score(a)).fold(0.0, f64::max),
            positive,
        ));
        if positive {
            s.positives += 1;
            let group = s.recall_by_group.entry(group_of(label)).or_default();
            group.0 += 1;
            if let Some(first) = first_after {
                s.found += 1;
                group.1 += 1;
                if let Some(onset_ms) = label.onset_ms {
                    hours.push((first - onset_ms) as f64 / 3_600_000.0);
                }
            }
        }
        if !alerts.is_empty() && !found {
            s.false_meters += 1;
        }
        if label.expected_kind.is_none() {
            negatives += 1;
            if !alerts.is_empty() {
                false_negatives_flagged += 1;
            }
        }
    }
    s.precision = ratio(s.found, s.found + s.false_meters);
    s.recall = ratio(s.found, s.positives);
    s.f1 = if s.precision + s.recall > 0.0 {
        2.0 * s.precision * s.recall / (s.precision + s.recall)
    } else {
        0.0
    };
    s.pr_auc = average_precision(&mut ranked);
    hours.sort_by(f64::total_cmp);
    s.median_hours_to_detect = quantile(&hours, 0.5);
    s.p90_hours_to_detect = quantile(&hours, 0.9);
    s.false_positive_rate = ratio(false_negatives_flagged, negatives);
    s
}

/// Groups mining meters by rig count (`1 rig`, `2+ rigs`) and others by variant.
fn group_of(label: &Label) -> String {
    if label.label == "mining" {
        let rigs = label
            .params
            .get("rigs")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        return if rigs == 1 {
            "1 rig".into()
        } else {
            "2+ rigs".into()
        };
    }
    label.variant.clone()
}

fn alert_score(alert: &Alert) -> f64 {
    if let Some(score) = alert.evidence.get("score").and_then(Value::as_f64) {
        return score;
    }
    match alert.severity {
        Severity::Info => 0.1,
        Severity::Low => 0.25,
        Severity::Medium => 0.5,
        Severity::High => 0.75,
        Severity::Critical => 1.0,
    }
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        return 0.0;
    }
    numerator as f64 / denominator as f64
}

/// Returns the average precision of meters ranked by score, highest first; ties share a rank.
fn average_precision(ranked: &mut [(f64, bool)]) -> f64 {
    let positives = ranked.iter().filter(|(_, p)| *p).count();
    if positives == 0 {
        return 0.0;
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut seen, mut hits, mut sum) = (0, 0, 0.0);
    let mut i = 0;
    while i < ranked.len() && ranked[i].0 > 0.0 {
        let score = ranked[i].0;
        let tied = ranked[i..].iter().take_while(|(s, _)| *s == score).count();
        let tied_hits = ranked[i..i + tied].iter().filter(|(_, p)| *p).count();
        seen += tied;
        hits += tied_hits;
        sum += tied_hits as f64 * hits as f64 / seen as f64;
        i += tied;
    }
    sum / positives as f64
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[index])
}

fn false_alert_rate(
    label: &str,
    labels: &[Label],
    by_meter: &HashMap<(&str, &str), Vec<&Alert>>,
) -> f64 {
    let mut alerts = 0;
    let mut weeks = 0.0;
    for l in labels.iter().filter(|l| l.label == label) {
        let key = (l.region.as_str(), l.meter.as_str());
        alerts += by_meter.get(&key).map_or(0, Vec::len);
        weeks += (l.last_ms - l.first_ms).max(0) as f64 / (7.0 * 86_400_000.0);
    }
    if weeks == 0.0 {
        return 0.0;
    }
    alerts as f64 * 1000.0 / weeks
}

/// Formats the report as Markdown tables.
pub fn markdown(report: &Report) -> String {
    let mut text = String::new();
    let meters: Vec<String> = report
        .meters
        .iter()
        .map(|(l, n)| format!("{l} {n}"))
        .collect();
    text.push_str(&format!("meters: {}\n\n", meters.join(", ")));
    text.push_str("| kind | labelled | found | false meters | precision | recall | F1 | PR-AUC | median h to detect | p90 h | FPR |\n");
    text.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (kind, s) in &report.kinds {
        let hours = |h: Option<f64>| h.map_or("-".to_owned(), |h| format!("{h:.1}"));
        text.push_str(&format!(
            "| {kind} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.3} |\n",
            s.positives,
            s.found,
            s.false_meters,
            s.precision,
            s.recall,
            s.f1,
            s.pr_auc,
            hours(s.median_hours_to_detect),
            hours(s.p90_hours_to_detect),
            s.false_positive_rate
        ));
    }
    text.push_str("\n| kind | group | found / labelled |\n|---|---|---|\n");
    for (kind, s) in &report.kinds {
        for (group, (labelled, found)) in &s.recall_by_group {
            text.push_str(&format!("| {kind} | {group} | {found} / {labelled} |\n"));
        }
    }
    text.push_str(&format!(
        "\nfalse alerts per 1,000 meter-weeks: clean {:.1}, benign look-alikes {:.1}\n",
        report.false_alerts_per_1000_meter_weeks_clean,
        report.false_alerts_per_1000_meter_weeks_benign
    ));
    if let Some(bypass) = &report.bypass {
        text.push_str(&bypass_markdown(bypass));
    }
    text
}

fn bypass_markdown(s: &BypassScore) -> String {
    let hours = |h: Option<f64>| h.map_or("-".to_owned(), |h| format!("{h:.1}"));
    let mut text = format!(
        "\n| bypass | cases | found in {BYPASS_WINDOW_HOURS} h | in top {BYPASS_TOP_SUSPECTS} \
         suspects | share in top {BYPASS_TOP_SUSPECTS} | median h to detect | p90 h | \
         transformers without bypass | of those alerted | false alerts per 1,000 \
         transformer-weeks |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    text.push_str(&format!(
        "| all | {} | {} | {} | {:.3} | {} | {} | {} | {} | {:.1} |\n",
        s.cases,
        s.found,
        s.ranked,
        s.ranked_share,
        hours(s.median_hours_to_detect),
        hours(s.p90_hours_to_detect),
        s.balanced_transformers,
        s.false_transformers,
        s.false_alerts_per_1000_transformer_weeks
    ));
    for (group, (cases, found, ranked)) in &s.by_share {
        text.push_str(&format!(
            "| {group} of transformer energy | {cases} | {found} | {ranked} | {:.3} | | | | | |\n",
            ratio(*ranked, *cases)
        ));
    }
    text.push_str(&format!(
        "\nalerts of other kinds on transformer meters: {}\n",
        s.other_alerts_on_transformers
    ));
    text
}
