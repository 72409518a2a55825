//! The `gridwatch webhooks` commands: list dead letters, queue them again, and enable a webhook
//! that was disabled after its endpoint returned 410 Gone.
//!
//! They open the redb file named by `store.path` directly. redb locks the file while the daemon
//! runs, so the daemon must be stopped first; the commands then fail with [`AdminError::StoreInUse`]
//! instead of waiting.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::store::outbox::{self, DeadLetter, DeadLetterFilter, DisabledWebhook};
use crate::store::{Store, StoreError};

/// Arguments of `gridwatch webhooks`.
#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    /// The command to run.
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

/// A `gridwatch webhooks` command.
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Lists deliveries that were given up, oldest first.
    DeadLetters {
        /// The configuration file.
        #[command(flatten)]
        config: ConfigArg,
        /// Maximum number of dead letters listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Lists only the dead letters of this webhook.
        #[arg(long, value_name = "NAME")]
        webhook: Option<String>,
        /// Prints a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Moves dead letters back into the outbox; each keeps its webhook-id and is sent when the
    /// daemon runs.
    Retry {
        /// The configuration file.
        #[command(flatten)]
        config: ConfigArg,
        /// The dead letters to queue again.
        #[command(flatten)]
        target: RetryTarget,
    },
    /// Enables a webhook that was disabled after its endpoint returned 410 Gone.
    Enable {
        /// The configuration file.
        #[command(flatten)]
        config: ConfigArg,
        /// Webhook name, as in the configuration.
        name: String,
    },
}

/// The `--config` option of every `gridwatch webhooks` command.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file; its `store.path` names the database.
    #[arg(long, value_name = "FILE", default_value = "config/gridwatch.toml")]
    pub config: PathBuf,
}

/// The dead letters that `gridwatch webhooks retry` queues again; exactly one option is required.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct RetryTarget {
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
    /// Every dead letter of this webhook.
    #[arg(long, value_name = "NAME")]
    pub webhook: Option<String>,
    /// The dead letter with this webhook-id (`msg_<ULID>`).
    #[arg(long, value_name = "MSG_ID")]
    pub id: Option<String>,
}

impl RetryTarget {
    fn filter(&self) -> DeadLetterFilter {
        match (&self.webhook, &self.id) {
            (Some(name), _) => DeadLetterFilter::Webhook(name.clone()),
            (None, Some(id)) => DeadLetterFilter::Id(id.clone()),
            (None, None) => DeadLetterFilter::All,
        }
    }
}

/// A `gridwatch webhooks` command that failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configured store file does not exist.
    #[error("alert store '{0}' not found: check store.path in the configuration")]
    MissingStore(PathBuf),
    /// Another process, normally the daemon, has the store file open.
    #[error(
        "alert store '{0}' is in use, probably by the running daemon: stop `gridwatch run` and \
         run this command again"
    )]
    StoreInUse(PathBuf),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `retry --id` named no dead letter.
    #[error("dead letter '{0}' not found: list them with `gridwatch webhooks dead-letters`")]
    NoSuchDeadLetter(String),
    /// `enable` named a webhook that is neither disabled nor configured.
    #[error("webhook '{0}' is not disabled and not configured")]
    UnknownWebhook(String),
    /// Writing to standard output failed.
    #[error("failed to write output: {0}")]
    Output(#[from] std::io::Error),
    /// The JSON listing could not be encoded.
    #[error("failed to encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl AdminError {
    /// Returns the process exit status for this error:
    /// [`crate::app::EXIT_STORE_UNAVAILABLE`] when the store is missing, locked or cannot be
    /// opened, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::MissingStore(_)
            | AdminError::StoreInUse(_)
            | AdminError::Store(StoreError::Open { .. } | StoreError::CreateDir { .. }) => {
                crate::app::EXIT_STORE_UNAVAILABLE
            }
            _ => 1,
        }
    }
}

/// Runs a `gridwatch webhooks` command and writes its report to `out`.
///
/// # Errors
/// Returns an error when the configuration is invalid, the store is missing, locked or failing,
/// a named dead letter or webhook does not exist, or `out` cannot be written.
pub fn run(args: &WebhooksArgs, out: &mut dyn Write) -> Result<(), AdminError> {
    match &args.command {
        WebhooksCommand::DeadLetters {
            config,
            limit,
            webhook,
            json,
        } => {
            let (_, store) = open(&config.config)?;
            let filter = webhook
                .clone()
                .map_or(DeadLetterFilter::All, DeadLetterFilter::Webhook);
            let letters = outbox::dead_letters_matching(&store.db(), &filter, *limit)?;
            if *json {
                return print_json(&letters, out);
            }
            let disabled = outbox::disabled_webhooks(&store.db())?;
            print_table(&letters, &disabled, out)
        }
        WebhooksCommand::Retry { config, target } => {
            let (_, store) = open(&config.config)?;
            retry(&store, target, out)
        }
        WebhooksCommand::Enable { config, name } => {
            let (config, store) = open(&config.config)?;
            enable(&config, &store, name, out)
        }
    }
}

/// Loads the configuration and opens its store, without creating a missing file.
fn open(path: &Path) -> Result<(Config, Store), AdminError> {
    let config = Config::load(path)?;
    let store_path = config.store.path.clone();
    if !store_path.exists() {
        return Err(AdminError::MissingStore(store_path));
    }
    match Store::open(&store_path) {
        Ok(store) => Ok((config, store)),
        Err(StoreError::Open {
            source: redb::DatabaseError::DatabaseAlreadyOpen,
            ..
        }) => Err(AdminError::StoreInUse(store_path)),
        Err(error) => Err(error.into()),
    }
}

fn retry(store: &Store, target: &RetryTarget, out: &mut dyn Write) -> Result<(), AdminError> {
    let filter = target.filter();
    let moved = outbox::requeue_dead_letters(&store.db(), &filter, now_ms())?;
    let found = moved.requeued + moved.held_back;
    if let (DeadLetterFilter::Id(id), 0) = (&filter, found) {
        return Err(AdminError::NoSuchDeadLetter(id.clone()));
    }

    writeln!(out, "requeued {} dead letters", moved.requeued)?;
    if moved.held_back > 0 {
        let names: Vec<String> = outbox::disabled_webhooks(&store.db())?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        writeln!(
            out,
            "held back {} dead letters of disabled webhooks ({}); run \
             `gridwatch webhooks enable NAME` first",
            moved.held_back,
            names.join(", ")
        )?;
    }
    Ok(())
}

fn enable(
    config: &Config,
    store: &Store,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let Some(record) = outbox::enable_webhook(&store.db(), name)? else {
        if config.webhooks.iter().any(|hook| hook.name == name) {
            writeln!(out, "webhook '{name}' is not disabled")?;
            return Ok(());
        }
        return Err(AdminError::UnknownWebhook(name.to_owned()));
    };

    let filter = DeadLetterFilter::Webhook(name.to_owned());
    let waiting = outbox::dead_letters_matching(&store.db(), &filter, usize::MAX)?.len();
    writeln!(
        out,
        "enabled webhook '{name}', disabled since {}: {}",
        format_ms(record.disabled_ms),
        record.reason
    )?;
    if waiting > 0 {
        writeln!(
            out,
            "its {waiting} dead letters stay; queue them with \
             `gridwatch webhooks retry --webhook {name}`"
        )?;
    }
    Ok(())
}

/// One dead letter in the JSON listing.
#[derive(Serialize)]
struct DeadLetterRow<'a> {
    id: &'a str,
    webhook: &'a str,
    alert_id: String,
    event_type: &'a str,
    attempts: u32,
    created: String,
    created_ms: i64,
    dead_lettered: String,
    dead_lettered_ms: i64,
    last_error: Option<&'a str>,
}

impl<'a> DeadLetterRow<'a> {
    fn new(letter: &'a DeadLetter) -> DeadLetterRow<'a> {
        let delivery = &letter.delivery;
        DeadLetterRow {
            id: &delivery.id,
            webhook: &delivery.webhook,
            alert_id: delivery.alert_id.to_string(),
            event_type: &delivery.event_type,
            attempts: delivery.attempts,
            created: format_ms(delivery.created_ms),
            created_ms: delivery.created_ms,
            dead_lettered: format_ms(letter.dead_lettered_ms),
            dead_lettered_ms: letter.dead_lettered_ms,
            last_error: delivery.last_error.as_deref(),
        }
    }
}

fn print_json(letters: &[DeadLetter], out: &mut dyn Write) -> Result<(), AdminError> {
    let rows: Vec<DeadLetterRow<'_>> = letters.iter().map(DeadLetterRow::new).collect();
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)?;
    Ok(())
}

const TABLE_HEADER: [&str; 7] = [
    "ID",
    "WEBHOOK",
    "ALERT ID",
    "EVENT TYPE",
    "ATTEMPTS",
    "CREATED",
    "LAST ERROR",
];

/// Writes the dead letters as a table with aligned columns, then one line per disabled webhook.
fn print_table(
    letters: &[DeadLetter],
    disabled: &[(String, DisabledWebhook)],
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    if letters.is_empty() {
        writeln!(out, "no dead letters")?;
    } else {
        let mut rows = vec![TABLE_HEADER.map(str::to_owned)];
        rows.extend(letters.iter().map(table_row));
        write_aligned(&rows, out)?;
    }

    let with_letters: HashSet<&str> = letters
        .iter()
        .map(|letter| letter.delivery.webhook.as_str())
        .collect();
    for (name, record) in disabled {
        let url = if record.url.is_empty() {
            "-"
        } else {
            &record.url
        };
        let then = if with_letters.contains(name.as_str()) {
            ", then retry its dead letters"
        } else {
            ""
        };
        writeln!(
            out,
            "webhook '{name}' ({url}) disabled since {}: {}; enable it with \
             `gridwatch webhooks enable {name}`{then}",
            format_ms(record.disabled_ms),
            record.reason,
        )?;
    }
    Ok(())
}

fn table_row(letter: &DeadLetter) -> [String; 7] {
    let delivery = &letter.delivery;
    // A multi-line error would break the table, so its line breaks become spaces.
    let last_error = delivery
        .last_error
        .as_deref()
        .unwrap_or("-")
        .replace(['\n', '\r'], " ");
    [
        delivery.id.clone(),
        delivery.webhook.clone(),
        delivery.alert_id.to_string(),
        delivery.event_type.clone(),
        delivery.attempts.to_string(),
        format_ms(delivery.created_ms),
        last_error,
    ]
}

/// Writes rows with every column but the last padded to its widest cell.
pub(crate) fn write_aligned<R: AsRef<[String]>>(
    rows: &[R],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let columns = rows.first().map_or(0, |row| row.as_ref().len());
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let row = row.as_ref();
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Formats Unix milliseconds as RFC 3339 UTC, or the raw number when it is out of range.
fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |time| time.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
