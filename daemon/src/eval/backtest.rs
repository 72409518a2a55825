//! Backtest of a candidate rule set: the alerts it raises over a history, compared with those of
//! the current rules.
//!
//! Alerts are matched by region, meter and kind. A match whose severity, first firing or number
//! of firings differs is reported as changed, with what changed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::alerts::{Alert, Severity};

/// Summary of the alerts with one region, meter and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertSummary {
    /// Highest severity.
    pub severity: Severity,
    /// Reading time of the first firing, Unix milliseconds.
    pub first_seen_ms: i64,
    /// Reading time of the latest firing, Unix milliseconds.
    pub last_seen_ms: i64,
    /// Firings merged into the alerts.
    pub count: u64,
    /// Message of the latest firing.
    pub message: String,
}

/// Kind of difference of an alert between the two rule sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Raised by the candidate rules only.
    Added,
    /// Raised by the current rules only.
    Removed,
    /// Raised by both, with a different severity, first firing or count.
    Changed,
}

/// One difference between the alerts of the current and the candidate rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Kind of difference.
    pub change: Change,
    /// Region of the alert.
    pub region: String,
    /// Meter of the alert.
    pub meter: String,
    /// Alert kind.
    pub kind: String,
    /// The alert under the current rules, if they raised it.
    pub current: Option<AlertSummary>,
    /// The alert under the candidate rules, if they raised it.
    pub candidate: Option<AlertSummary>,
}

/// The comparison of two replays of the same history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Backtest {
    /// Alerts (distinct region, meter and kind) raised by the current rules.
    pub current_alerts: usize,
    /// Alerts raised by the candidate rules.
    pub candidate_alerts: usize,
    /// Alerts raised identically by both.
    pub unchanged: usize,
    /// Every difference, ordered by change, region, meter and kind.
    pub differences: Vec<Difference>,
    /// Failed rule calls with the current rules.
    pub current_rule_errors: u64,
    /// Failed rule calls with the candidate rules.
    pub candidate_rule_errors: u64,
}

impl Backtest {
    /// Returns the number of differences of one kind.
    pub fn count(&self, change: Change) -> usize {
        self.differences
            .iter()
            .filter(|d| d.change == change)
            .count()
    }
}

/// Compares the alerts of the current rules with those of the candidate rules.
pub fn compare(current: &[Alert], candidate: &[Alert]) -> Backtest {
    let current = summarise(current);
    let candidate = summarise(candidate);
    let mut backtest = Backtest {
        current_alerts: current.len(),
        candidate_alerts: candidate.len(),
        ..Backtest::default()
    };
    let mut keys: Vec<&(String, String, String)> = current.keys().chain(candidate.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let before = current.get(key);
        let after = candidate.get(key);
        let change = match (before, after) {
            (Some(_), None) => Change::Removed,
            (None, Some(_)) => Change::Added,
            (Some(before), Some(after)) if differs(before, after) => Change::Changed,
            _ => {
                backtest.unchanged += 1;
                continue;
            }
        };
        let (region, meter, kind) = key.clone();
        backtest.differences.push(Difference {
            change,
            region,
            meter,
            kind,
            current: before.cloned(),
            candidate: after.cloned(),
        });
    }
    backtest.differences.sort_by(|a, b| {
        (a.change, &a.region, &a.meter, &a.kind).cmp(&(b.change, &b.region, &b.meter, &b.kind))
    });
    backtest
}

/// Returns true when severity, first firing or count differ. The message and the latest firing
/// are not compared.
fn differs(before: &AlertSummary, after: &AlertSummary) -> bool {
    before.severity != after.severity
        || before.first_seen_ms != after.first_seen_ms
        || before.count != after.count
}

/// Groups alerts by region, meter and kind.
fn summarise(alerts: &[Alert]) -> BTreeMap<(String, String, String), AlertSummary> {
    let mut groups: BTreeMap<(String, String, String), AlertSummary> = BTreeMap::new();
    for alert in alerts {
        let key = (
            alert.region.clone(),
            alert.meter.clone(),
            alert.kind.clone(),
        );
        let summary = groups.entry(key).or_insert_with(|| AlertSummary {
            severity: alert.severity,
            first_seen_ms: alert.first_seen_ms,
            last_seen_ms: alert.last_seen_ms,
            count: 0,
            message: alert.message.clone(),
        });
        summary.severity = summary.severity.max(alert.severity);
        summary.first_seen_ms = summary.first_seen_ms.min(alert.first_seen_ms);
        if alert.last_seen_ms >= summary.last_seen_ms {
            summary.last_seen_ms = alert.last_seen_ms;
            summary.message = alert.message.clone();
        }
        summary.count += alert.count;
    }
    groups
}

impl fmt::Display for Backtest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "current rules: {} alerts, candidate rules: {} alerts",
            self.current_alerts, self.candidate_alerts
        )?;
        writeln!(
            f,
            "added {}, removed {}, changed {}, unchanged {}",
            self.count(Change::Added),
            self.count(Change::Removed),
            self.count(Change::Changed),
            self.unchanged
        )?;
        if self.current_rule_errors + self.candidate_rule_errors > 0 {
            writeln!(
                f,
                "failed rule calls: current {}, candidate {}; their alerts are missing from the \
                 comparison, see the warnings above",
                self.current_rule_errors, self.candidate_rule_errors
            )?;
        }
        for difference in &self.differences {
            write!(
                f,
                "{:<8} {}/{} {}",
                format!("{:?}", difference.change).to_lowercase(),
                difference.region,
                difference.meter,
                difference.kind
            )?;
            match (&difference.current, &difference.candidate) {
                (None, Some(after)) | (Some(after), None) => write!(
                    f,
                    ": {}, first firing {}, {} firings",
                    after.severity.as_str(),
                    time(after.first_seen_ms),
                    after.count
                )?,
                (Some(before), Some(after)) => {
                    let mut parts = Vec::new();
                    if before.severity != after.severity {
                        parts.push(format!(
                            "severity {} -> {}",
                            before.severity.as_str(),
                            after.severity.as_str()
                        ));
                    }
                    if before.first_seen_ms != after.first_seen_ms {
                        let hours = (after.first_seen_ms - before.first_seen_ms) as f64 / 3.6e6;
                        let direction = if hours < 0.0 { "earlier" } else { "later" };
                        parts.push(format!(
                            "first firing {} -> {} ({:.1} h {direction})",
                            time(before.first_seen_ms),
                            time(after.first_seen_ms),
                            hours.abs()
                        ));
                    }
                    if before.count != after.count {
                        parts.push(format!("firings {} -> {}", before.count, after.count));
                    }
                    write!(f, ": {}", parts.join(", "))?;
                }
                (None, None) => {}
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Formats Unix milliseconds as RFC 3339 in UTC.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use ulid::Ulid;

    use super::*;
    use crate::alerts::{AlertDraft, AlertSource};

    fn alert(meter: &str, kind: &str, severity: Severity, first_ms: i64, count: u64) -> Alert {
        let draft = AlertDraft {
            kind: kind.into(),
            severity,
            message: format!("{kind} on {meter}"),
            evidence: serde_json::json!({}),
            source: AlertSource {
                rule: "common/test.rhai".into(),
                content_hash: String::new(),
            },
        };
        let mut alert = Alert::open(Ulid::new(), draft, "south", meter, first_ms);
        alert.count = count;
        alert
    }

    #[test]
    fn compare_sorts_alerts_into_changes() {
        let current = vec![
            alert("m1", "mining", Severity::Medium, 1_000, 3),
            alert("m2", "mining", Severity::Medium, 1_000, 3),
            alert("m3", "tamper", Severity::High, 1_000, 1),
            alert("m4", "mining", Severity::Low, 7_200_000, 2),
        ];
        let candidate = vec![
            alert("m1", "mining", Severity::Medium, 1_000, 3),
            alert("m2", "mining", Severity::High, 1_000, 3),
            alert("m4", "mining", Severity::Low, 0, 2),
            alert("m5", "mining", Severity::Low, 5_000, 1),
        ];
        let backtest = compare(&current, &candidate);

        assert_eq!(backtest.current_alerts, 4);
        assert_eq!(backtest.candidate_alerts, 4);
        assert_eq!(backtest.unchanged, 1);
        let changes: Vec<(Change, &str)> = backtest
            .differences
            .iter()
            .map(|d| (d.change, d.meter.as_str()))
            .collect();
        assert_eq!(
            changes,
            vec![
                (Change::Added, "m5"),
                (Change::Removed, "m3"),
                (Change::Changed, "m2"),
                (Change::Changed, "m4"),
            ]
        );

        let text = backtest.to_string();
        assert!(
            text.contains("added 1, removed 1, changed 2, unchanged 1"),
            "{text}"
        );
        assert!(text.contains("severity medium -> high"), "{text}");
        assert!(text.contains("(2.0 h earlier)"), "{text}");
    }

    #[test]
    fn compare_merges_alerts_of_one_meter_and_kind() {
        let current = vec![alert("m1", "mining", Severity::Medium, 1_000, 4)];
        let candidate = vec![
            alert("m1", "mining", Severity::Medium, 1_000, 1),
            alert("m1", "mining", Severity::Low, 9_000, 3),
        ];
        let backtest = compare(&current, &candidate);
        assert_eq!(backtest.candidate_alerts, 1);
        assert_eq!(backtest.unchanged, 1);
        assert!(backtest.differences.is_empty());
    }

    #[test]
    fn compare_of_same_alerts_has_no_differences() {
        let alerts = vec![alert("m1", "mining", Severity::Medium, 1_000, 4)];
        let backtest = compare(&alerts, &alerts);
        assert_eq!(backtest.unchanged, 1);
        assert!(backtest.differences.is_empty());
    }
}
