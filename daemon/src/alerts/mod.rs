//! Alerts: severities, drafts raised by rules and the stored alert record.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ulid::Ulid;

/// Alert severity, ordered from lowest to highest.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; no action expected.
    #[default]
    Info,
    /// Low priority.
    Low,
    /// Needs attention within days.
    Medium,
    /// Needs attention today.
    High,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Returns the lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a lowercase name.
    ///
    /// # Errors
    /// Returns a message naming the value and the accepted names.
    pub fn parse(text: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "invalid severity '{text}', expected one of info, low, medium, high, critical"
                )
            })
    }
}

/// Origin of an alert: the rule file and its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertSource {
    /// Rule file path relative to the rules folder, such as `common/mining.rhai`.
    pub rule: String,
    /// SHA-256 of the rule file's content, hex encoded.
    pub content_hash: String,
}

/// An alert raised by a rule for one reading, before it is merged with stored alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDraft {
    /// Alert kind such as `mining` or `tamper`.
    pub kind: String,
    /// Severity.
    pub severity: Severity,
    /// One-line message for operators.
    pub message: String,
    /// The statistics that fired the alert.
    pub evidence: Value,
    /// Rule that raised it.
    pub source: AlertSource,
}

/// Lifecycle state of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Firing and not yet handled.
    Open,
    /// Seen by an operator.
    Acknowledged,
    /// Closed.
    Resolved,
}

impl AlertStatus {
    /// Returns the lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// Parses a lowercase name.
    ///
    /// # Errors
    /// Returns a message naming the value and the accepted names.
    pub fn parse(text: &str) -> Result<AlertStatus, String> {
        [
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            AlertStatus::Resolved,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| {
            format!("invalid status '{text}', expected one of open, acknowledged, resolved")
        })
    }
}

/// Kind of operator action on an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Set the status to acknowledged.
    Acknowledge,
    /// Set the status to resolved.
    Resolve,
    /// Added a comment and left the status as it was.
    Comment,
}

/// One operator action on an alert, as recorded by the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertAction {
    /// Kind of action.
    pub action: ActionKind,
    /// Name of the API token that did it.
    pub by: String,
    /// Time it was recorded, Unix milliseconds.
    pub at_ms: i64,
    /// Operator's comment; required for `comment`, optional otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// Time-ordered id, a ULID.
    #[schema(value_type = String, example = "01JNF4X8ZK2W6V9Q3T7R5M1C0D")]
    pub id: Ulid,
    /// Alert kind.
    pub kind: String,
    /// Highest severity seen while open.
    pub severity: Severity,
    /// Meter id.
    pub meter: String,
    /// Region.
    pub region: String,
    /// Message of the latest firing.
    pub message: String,
    /// Evidence of the latest firing.
    #[schema(value_type = Object)]
    pub evidence: Value,
    /// Rule that raised the latest firing.
    pub source: AlertSource,
    /// Reading time of the first firing, Unix milliseconds.
    pub first_seen_ms: i64,
    /// Reading time of the latest firing, Unix milliseconds.
    pub last_seen_ms: i64,
    /// Number of firings merged into this alert.
    pub count: u64,
    /// Lifecycle state.
    pub status: AlertStatus,
    /// Operator actions, oldest first. Rows stored before actions existed decode with none.
    #[serde(default)]
    pub actions: Vec<AlertAction>,
}

/// A change to a stored alert, which decides whether a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    /// A new alert was opened.
    Opened,
    /// An open alert's severity went up.
    Escalated,
    /// An open alert fired again at the same or a lower severity.
    Repeated,
    /// An operator acknowledged an open alert.
    Acknowledged,
    /// An operator resolved an alert.
    Resolved,
}

impl AlertChange {
    /// Returns the webhook event type, or `None` when no notification is sent.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            AlertChange::Opened => Some("alert.opened"),
            AlertChange::Escalated => Some("alert.escalated"),
            AlertChange::Repeated => None,
            AlertChange::Acknowledged => Some("alert.acknowledged"),
            AlertChange::Resolved => Some("alert.resolved"),
        }
    }
}

impl Alert {
    /// Opens a new alert from a draft.
    pub fn open(id: Ulid, draft: AlertDraft, region: &str, meter: &str, ts_ms: i64) -> Alert {
        Alert {
            id,
            kind: draft.kind,
            severity: draft.severity,
            meter: meter.to_owned(),
            region: region.to_owned(),
            message: draft.message,
            evidence: draft.evidence,
            source: draft.source,
            first_seen_ms: ts_ms,
            last_seen_ms: ts_ms,
            count: 1,
            status: AlertStatus::Open,
            actions: Vec::new(),
        }
    }

    /// Merges a new firing into this open alert and returns what changed.
    pub fn merge(&mut self, draft: AlertDraft, ts_ms: i64) -> AlertChange {
        let change = if draft.severity > self.severity {
            AlertChange::Escalated
        } else {
            AlertChange::Repeated
        };
        self.severity = self.severity.max(draft.severity);
        self.message = draft.message;
        self.evidence = draft.evidence;
        self.source = draft.source;
        self.first_seen_ms = self.first_seen_ms.min(ts_ms);
        self.last_seen_ms = self.last_seen_ms.max(ts_ms);
        self.count += 1;
        change
    }
}
