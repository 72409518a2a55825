//! Webhook outbox and dead-letter tables.
//!
//! Each delivery gets a sequence number when it is enqueued, and [`OUTBOX`] stores it under that
//! number. Deliveries of one alert to one webhook form a chain, ordered by sequence number in
//! [`OUTBOX_CHAINS`]. Only the first pending delivery of each chain is listed in [`OUTBOX_DUE`],
//! keyed by its next attempt time, so the worker finds due work with one range scan and never gets
//! a later event of an alert while an earlier one is pending. Removing a chain's first delivery
//! (sent, dead-lettered or set aside) lists the next one.
//!
//! A webhook whose endpoint answered 410 Gone is listed in [`DISABLED_WEBHOOKS`] until an operator
//! enables it again. While it is listed, [`enqueue`] writes its new deliveries straight to
//! [`DEAD_LETTERS`] and [`requeue_dead_letters`] leaves its dead letters where they are.
//!
//! Records are a format version byte followed by the postcard encoding.

use std::collections::{BTreeMap, HashSet};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::StoreError;

/// Pending deliveries by sequence number, encoded [`Delivery`] records.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// First pending delivery of each chain, by `(next_attempt_ms, sequence number)`.
pub const OUTBOX_DUE: TableDefinition<(i64, u64), ()> = TableDefinition::new("outbox_due");
/// Pending deliveries by `(webhook, alert id, sequence number)`, which orders each chain.
pub const OUTBOX_CHAINS: TableDefinition<(&str, u128, u64), ()> =
    TableDefinition::new("outbox_chains");
/// The next sequence number, under the key [`NEXT_SEQUENCE_KEY`].
pub const OUTBOX_SEQUENCE: TableDefinition<&str, u64> = TableDefinition::new("outbox_sequence");
/// Deliveries that were given up, by their original sequence number, encoded [`DeadLetter`]s.
pub const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Outbox records that failed to decode, kept byte for byte for inspection.
pub const OUTBOX_UNREADABLE: TableDefinition<u64, &[u8]> =
    TableDefinition::new("outbox_unreadable");
/// Disabled webhooks by name, encoded [`DisabledWebhook`] records.
pub const DISABLED_WEBHOOKS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("disabled_webhooks");

/// Key of the counter in [`OUTBOX_SEQUENCE`].
pub const NEXT_SEQUENCE_KEY: &str = "next";

const OUTBOX_NAME: &str = "outbox";
const DEAD_LETTERS_NAME: &str = "dead_letters";
const DISABLED_WEBHOOKS_NAME: &str = "disabled_webhooks";
const FORMAT_VERSION: u8 = 1;

/// One webhook message for one endpoint, with its retry state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The `webhook-id` header, `msg_<ULID>`. It stays the same across retries and requeues.
    pub id: String,
    /// Name of the configured webhook.
    pub webhook: String,
    /// Alert the message is about.
    pub alert_id: Ulid,
    /// Event type, such as `alert.opened`.
    pub event_type: String,
    /// JSON payload, built once at enqueue time and sent unchanged on every attempt.
    pub body: Vec<u8>,
    /// Time the delivery entered the outbox, Unix milliseconds. A requeue resets it.
    pub created_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Earliest time of the next attempt, Unix milliseconds.
    pub next_attempt_ms: i64,
    /// Error of the latest failed attempt.
    pub last_error: Option<String>,
}

/// A delivery waiting in the outbox, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Sequence number, the key in [`OUTBOX`].
    pub seq: u64,
    /// The delivery.
    pub delivery: Delivery,
}

/// An entry returned by [`due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueEntry {
    /// A delivery ready for an attempt.
    Ready(Pending),
    /// A record that failed to decode; pass its number to [`set_aside_unreadable`].
    Unreadable {
        /// Sequence number.
        seq: u64,
        /// Decoder message.
        error: String,
    },
}

/// A delivery that was given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Sequence number it had in the outbox, the key in [`DEAD_LETTERS`].
    pub seq: u64,
    /// The delivery as it was after its last attempt, with `last_error` set.
    pub delivery: Delivery,
    /// Time it was moved to the dead-letter table, Unix milliseconds.
    pub dead_lettered_ms: i64,
}

/// A webhook that is no longer sent to until an operator enables it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledWebhook {
    /// Endpoint URL at the time it was disabled, without user info, query or fragment.
    pub url: String,
    /// Time it was disabled, Unix milliseconds.
    pub disabled_ms: i64,
    /// Reason it was disabled, such as "endpoint returned 410 Gone".
    pub reason: String,
}

/// Outcome of [`disable_webhook`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disabled {
    /// True when the webhook was not disabled before this call.
    pub newly_disabled: bool,
    /// Pending deliveries moved to the dead-letter table.
    pub dead_lettered: usize,
}

/// Outcome of [`requeue_dead_letters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Dead letters moved back into the outbox.
    pub requeued: usize,
    /// Matching dead letters left in place because their webhook is disabled.
    pub held_back: usize,
}

/// Dead letters chosen by [`dead_letters_matching`] and [`requeue_dead_letters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterFilter {
    /// Every dead letter.
    All,
    /// Dead letters of one webhook, by name.
    Webhook(String),
    /// One dead letter, by its `webhook-id`.
    Id(String),
}

impl DeadLetterFilter {
    fn matches(&self, delivery: &Delivery) -> bool {
        match self {
            DeadLetterFilter::All => true,
            DeadLetterFilter::Webhook(name) => delivery.webhook == *name,
            DeadLetterFilter::Id(id) => delivery.id == *id,
        }
    }
}

/// Record counts of the outbox tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Deliveries waiting in the outbox.
    pub outbox: u64,
    /// Deliveries in the dead-letter table.
    pub dead_letters: u64,
    /// Records set aside because they failed to decode.
    pub unreadable: u64,
}

/// Creates the outbox tables.
///
/// # Errors
/// Returns an error when a table cannot be opened.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(OUTBOX)?;
    txn.open_table(OUTBOX_DUE)?;
    txn.open_table(OUTBOX_CHAINS)?;
    txn.open_table(OUTBOX_SEQUENCE)?;
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(OUTBOX_UNREADABLE)?;
    txn.open_table(DISABLED_WEBHOOKS)?;
    Ok(())
}

/// Adds a delivery to the outbox inside the caller's transaction, so it commits together with
/// the alert it reports. Deliveries of the same alert and webhook go out in enqueue order.
///
/// A delivery for a disabled webhook goes to the dead-letter table instead, with the reason the
/// webhook was disabled as its last error.
///
/// # Errors
/// Returns an error when a table cannot be written.
pub fn enqueue(txn: &WriteTransaction, delivery: &Delivery) -> Result<(), StoreError> {
    let seq = next_sequence(txn)?;
    let Some(reason) = disabled_reason(txn, &delivery.webhook)? else {
        return insert_pending(txn, seq, delivery);
    };

    let letter = DeadLetter {
        seq,
        delivery: Delivery {
            last_error: Some(format!("webhook disabled: {reason}")),
            ..delivery.clone()
        },
        dead_lettered_ms: delivery.created_ms,
    };
    txn.open_table(DEAD_LETTERS)?
        .insert(seq, encode(DEAD_LETTERS_NAME, &letter)?.as_slice())?;
    Ok(())
}

/// Returns up to `limit` deliveries whose next attempt is at or before `now_ms`, earliest first,
/// skipping the sequence numbers in `exclude` (for example attempts still in flight).
///
/// # Errors
/// Returns an error when the database cannot be read. A record that fails to decode is returned
/// as [`DueEntry::Unreadable`] instead.
pub fn due(
    db: &Database,
    now_ms: i64,
    limit: usize,
    exclude: &HashSet<u64>,
) -> Result<Vec<DueEntry>, StoreError> {
    let txn = db.begin_read()?;
    let due_table = txn.open_table(OUTBOX_DUE)?;
    let outbox = txn.open_table(OUTBOX)?;
    let mut entries = Vec::new();
    for row in due_table.range((i64::MIN, 0)..=(now_ms, u64::MAX))? {
        if entries.len() >= limit {
            break;
        }
        let (_, seq) = row?.0.value();
        if exclude.contains(&seq) {
            continue;
        }
        let Some(bytes) = outbox.get(seq)? else {
            continue;
        };
        let entry = match decode::<Delivery>(OUTBOX_NAME, bytes.value()) {
            Ok(delivery) => DueEntry::Ready(Pending { seq, delivery }),
            Err(error) => DueEntry::Unreadable {
                seq,
                error: error.to_string(),
            },
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// Returns the time of the earliest scheduled attempt, or `None` when nothing is scheduled.
///
/// # Errors
/// Returns an error when the database cannot be read.
pub fn next_due_ms(db: &Database) -> Result<Option<i64>, StoreError> {
    let txn = db.begin_read()?;
    let due_table = txn.open_table(OUTBOX_DUE)?;
    Ok(due_table.first()?.map(|(key, _)| key.value().0))
}

/// Deletes a delivered message and lists the next one of its chain. Returns false when the
/// sequence number is not in the outbox.
///
/// # Errors
/// Returns an error when the database cannot be written or the record fails to decode.
pub fn complete(db: &Database, seq: u64) -> Result<bool, StoreError> {
    let txn = db.begin_write()?;
    let removed = remove_pending(&txn, seq)?.is_some();
    txn.commit()?;
    Ok(removed)
}

/// Records a failed attempt and schedules the next one. Returns false when the sequence number
/// is not in the outbox.
///
/// # Errors
/// Returns an error when the database cannot be written or the record fails to decode.
pub fn reschedule(
    db: &Database,
    seq: u64,
    attempts: u32,
    next_attempt_ms: i64,
    last_error: &str,
) -> Result<bool, StoreError> {
    let txn = db.begin_write()?;
    let found = reschedule_in(&txn, seq, attempts, next_attempt_ms, last_error)?;
    txn.commit()?;
    Ok(found)
}

fn reschedule_in(
    txn: &WriteTransaction,
    seq: u64,
    attempts: u32,
    next_attempt_ms: i64,
    last_error: &str,
) -> Result<bool, StoreError> {
    let mut outbox = txn.open_table(OUTBOX)?;
    let Some(bytes) = outbox.get(seq)?.map(|guard| guard.value().to_vec()) else {
        return Ok(false);
    };
    let mut delivery: Delivery = decode(OUTBOX_NAME, &bytes)?;

    let mut due_table = txn.open_table(OUTBOX_DUE)?;
    let was_listed = due_table.remove((delivery.next_attempt_ms, seq))?.is_some();
    delivery.attempts = attempts;
    delivery.next_attempt_ms = next_attempt_ms;
    delivery.last_error = Some(last_error.to_owned());
    outbox.insert(seq, encode(OUTBOX_NAME, &delivery)?.as_slice())?;

    // Only the first delivery of a chain is listed; a later one stays unlisted until its turn.
    if was_listed {
        due_table.insert((next_attempt_ms, seq), ())?;
    }
    Ok(true)
}

/// Moves a delivery to the dead-letter table with its last error and lists the next one of its
/// chain. Returns false when the sequence number is not in the outbox.
///
/// # Errors
/// Returns an error when the database cannot be written or the record fails to decode.
pub fn move_to_dead_letters(
    db: &Database,
    seq: u64,
    last_error: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let txn = db.begin_write()?;
    let Some(mut delivery) = remove_pending(&txn, seq)? else {
        return Ok(false);
    };
    delivery.last_error = Some(last_error.to_owned());
    let letter = DeadLetter {
        seq,
        delivery,
        dead_lettered_ms: now_ms,
    };
    txn.open_table(DEAD_LETTERS)?
        .insert(seq, encode(DEAD_LETTERS_NAME, &letter)?.as_slice())?;
    txn.commit()?;
    Ok(true)
}

/// Moves a record that fails to decode to [`OUTBOX_UNREADABLE`], byte for byte, and lists the
/// next delivery of its chain. Returns false when the sequence number is not in the outbox.
///
/// # Errors
/// Returns an error when the database cannot be written.
pub fn set_aside_unreadable(db: &Database, seq: u64) -> Result<bool, StoreError> {
    let txn = db.begin_write()?;
    let Some(bytes) = txn
        .open_table(OUTBOX)?
        .remove(seq)?
        .map(|guard| guard.value().to_vec())
    else {
        return Ok(false);
    };
    txn.open_table(OUTBOX_UNREADABLE)?
        .insert(seq, bytes.as_slice())?;

    // The record cannot name its chain, so the index entries are found by scanning. This path
    // only runs for damaged records.
    txn.open_table(OUTBOX_DUE)?
        .retain(|(_, due_seq), ()| due_seq != seq)?;
    let mut chain = None;
    txn.open_table(OUTBOX_CHAINS)?
        .retain(|(webhook, alert, chain_seq), ()| {
            if chain_seq == seq {
                chain = Some((webhook.to_owned(), alert));
            }
            chain_seq != seq
        })?;
    if let Some((webhook, alert)) = chain {
        list_chain_head(&txn, &webhook, alert)?;
    }
    txn.commit()?;
    Ok(true)
}

/// Returns up to `limit` dead letters, oldest sequence number first.
///
/// # Errors
/// Returns an error when the database cannot be read or a record fails to decode.
pub fn dead_letters(db: &Database, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    dead_letters_matching(db, &DeadLetterFilter::All, limit)
}

/// Returns up to `limit` dead letters that match `filter`, oldest sequence number first.
///
/// # Errors
/// Returns an error when the database cannot be read or a record fails to decode.
pub fn dead_letters_matching(
    db: &Database,
    filter: &DeadLetterFilter,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(DEAD_LETTERS)?;
    let mut letters = Vec::new();
    for row in table.range(..)? {
        if letters.len() >= limit {
            break;
        }
        let (_, bytes) = row?;
        let letter: DeadLetter = decode(DEAD_LETTERS_NAME, bytes.value())?;
        if filter.matches(&letter.delivery) {
            letters.push(letter);
        }
    }
    Ok(letters)
}

/// Moves the dead letters that match `filter` back into the outbox, due at `now_ms`. Each keeps
/// its `webhook-id` and last error. Its attempt count restarts at 0, and its age counts from
/// `now_ms`, so it gets a full `max_age_secs` again.
///
/// Dead letters of a disabled webhook stay in the dead-letter table and are counted in
/// [`Requeued::held_back`], because the worker would only move them back.
///
/// # Errors
/// Returns an error when the database cannot be written or a record fails to decode.
pub fn requeue_dead_letters(
    db: &Database,
    filter: &DeadLetterFilter,
    now_ms: i64,
) -> Result<Requeued, StoreError> {
    let txn = db.begin_write()?;
    let mut chosen = Vec::new();
    let mut held_back = 0;
    {
        let table = txn.open_table(DEAD_LETTERS)?;
        let disabled = txn.open_table(DISABLED_WEBHOOKS)?;
        for row in table.range(..)? {
            let (key, bytes) = row?;
            let letter: DeadLetter = decode(DEAD_LETTERS_NAME, bytes.value())?;
            if !filter.matches(&letter.delivery) {
                continue;
            }
            if disabled.get(letter.delivery.webhook.as_str())?.is_some() {
                held_back += 1;
            } else {
                chosen.push((key.value(), letter.delivery));
            }
        }
    }

    // NOTE: a requeued delivery goes to the end of its chain, so it can arrive after a later
    // event of the same alert that was delivered while it sat in the dead-letter table.
    for (old_seq, mut delivery) in chosen.iter().cloned() {
        txn.open_table(DEAD_LETTERS)?.remove(old_seq)?;
        delivery.attempts = 0;
        delivery.created_ms = now_ms;
        delivery.next_attempt_ms = now_ms;
        let seq = next_sequence(&txn)?;
        insert_pending(&txn, seq, &delivery)?;
    }
    txn.commit()?;
    Ok(Requeued {
        requeued: chosen.len(),
        held_back,
    })
}

/// Disables a webhook and moves its pending deliveries to the dead-letter table with
/// `record.reason` as their last error, except the sequence numbers in `keep` (attempts still in
/// flight, whose outcome the caller records). A webhook that is already disabled keeps its
/// original record.
///
/// # Errors
/// Returns an error when the database cannot be written or a record fails to decode.
pub fn disable_webhook(
    db: &Database,
    name: &str,
    record: &DisabledWebhook,
    keep: &HashSet<u64>,
) -> Result<Disabled, StoreError> {
    let txn = db.begin_write()?;
    let newly_disabled = {
        let mut table = txn.open_table(DISABLED_WEBHOOKS)?;
        let known = table.get(name)?.is_some();
        if !known {
            table.insert(name, encode(DISABLED_WEBHOOKS_NAME, record)?.as_slice())?;
        }
        !known
    };

    let mut pending = Vec::new();
    for row in txn
        .open_table(OUTBOX_CHAINS)?
        .range((name, 0, 0)..=(name, u128::MAX, u64::MAX))?
    {
        let (_, _, seq) = row?.0.value();
        if !keep.contains(&seq) {
            pending.push(seq);
        }
    }
    for &seq in &pending {
        let Some(mut delivery) = remove_pending(&txn, seq)? else {
            continue;
        };
        delivery.last_error = Some(record.reason.clone());
        let letter = DeadLetter {
            seq,
            delivery,
            dead_lettered_ms: record.disabled_ms,
        };
        txn.open_table(DEAD_LETTERS)?
            .insert(seq, encode(DEAD_LETTERS_NAME, &letter)?.as_slice())?;
    }
    txn.commit()?;
    Ok(Disabled {
        newly_disabled,
        dead_lettered: pending.len(),
    })
}

/// Enables a disabled webhook again and returns the record it had, or `None` when it was not
/// disabled. Its dead letters stay where they are.
///
/// # Errors
/// Returns an error when the database cannot be written or the record fails to decode.
pub fn enable_webhook(db: &Database, name: &str) -> Result<Option<DisabledWebhook>, StoreError> {
    let txn = db.begin_write()?;
    let removed = txn
        .open_table(DISABLED_WEBHOOKS)?
        .remove(name)?
        .map(|guard| guard.value().to_vec());
    let record = removed
        .map(|bytes| decode(DISABLED_WEBHOOKS_NAME, &bytes))
        .transpose()?;
    txn.commit()?;
    Ok(record)
}

/// Returns every disabled webhook with its record, by name.
///
/// # Errors
/// Returns an error when the database cannot be read or a record fails to decode.
pub fn disabled_webhooks(db: &Database) -> Result<Vec<(String, DisabledWebhook)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(DISABLED_WEBHOOKS)?;
    let mut disabled = Vec::new();
    for row in table.iter()? {
        let (name, bytes) = row?;
        let record = decode(DISABLED_WEBHOOKS_NAME, bytes.value())?;
        disabled.push((name.value().to_owned(), record));
    }
    Ok(disabled)
}

/// Returns the record counts of the outbox tables.
///
/// # Errors
/// Returns an error when the database cannot be read.
pub fn depth(db: &Database) -> Result<Depth, StoreError> {
    let txn = db.begin_read()?;
    Ok(Depth {
        outbox: txn.open_table(OUTBOX)?.len()?,
        dead_letters: txn.open_table(DEAD_LETTERS)?.len()?,
        unreadable: txn.open_table(OUTBOX_UNREADABLE)?.len()?,
    })
}

/// Record counts of one webhook, from [`webhook_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// Deliveries waiting in the outbox.
    pub outbox: u64,
    /// Deliveries in the dead-letter table.
    pub dead_letters: u64,
}

/// Returns the outbox and dead-letter counts of every webhook that has either, by name.
///
/// # Errors
/// Returns an error when the database cannot be read or a dead letter fails to decode.
pub fn webhook_counts(db: &Database) -> Result<BTreeMap<String, WebhookCounts>, StoreError> {
    let txn = db.begin_read()?;
    let mut counts: BTreeMap<String, WebhookCounts> = BTreeMap::new();
    for row in txn.open_table(OUTBOX_CHAINS)?.iter()? {
        let (key, _) = row?;
        let (webhook, _, _) = key.value();
        counts.entry(webhook.to_owned()).or_default().outbox += 1;
    }
    for row in txn.open_table(DEAD_LETTERS)?.iter()? {
        let letter: DeadLetter = decode(DEAD_LETTERS_NAME, row?.1.value())?;
        counts
            .entry(letter.delivery.webhook)
            .or_default()
            .dead_letters += 1;
    }
    Ok(counts)
}

/// Returns why `webhook` is disabled, or `None` when it is not. A record that fails to decode
/// still disables the webhook, because only an operator may enable it again.
fn disabled_reason(txn: &WriteTransaction, webhook: &str) -> Result<Option<String>, StoreError> {
    let table = txn.open_table(DISABLED_WEBHOOKS)?;
    let Some(bytes) = table.get(webhook)? else {
        return Ok(None);
    };
    let reason = decode::<DisabledWebhook>(DISABLED_WEBHOOKS_NAME, bytes.value())
        .map_or_else(|error| error.to_string(), |record| record.reason);
    Ok(Some(reason))
}

fn next_sequence(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut table = txn.open_table(OUTBOX_SEQUENCE)?;
    let seq = table
        .get(NEXT_SEQUENCE_KEY)?
        .map_or(1, |guard| guard.value());
    table.insert(NEXT_SEQUENCE_KEY, seq + 1)?;
    Ok(seq)
}

fn insert_pending(txn: &WriteTransaction, seq: u64, delivery: &Delivery) -> Result<(), StoreError> {
    let alert = u128::from(delivery.alert_id);
    let webhook = delivery.webhook.as_str();
    txn.open_table(OUTBOX)?
        .insert(seq, encode(OUTBOX_NAME, delivery)?.as_slice())?;

    let mut chains = txn.open_table(OUTBOX_CHAINS)?;
    let is_first = chains
        .range((webhook, alert, 0)..(webhook, alert, seq))?
        .next()
        .is_none();
    chains.insert((webhook, alert, seq), ())?;
    if is_first {
        txn.open_table(OUTBOX_DUE)?
            .insert((delivery.next_attempt_ms, seq), ())?;
    }
    Ok(())
}

/// Removes a pending delivery from every outbox table and lists the next one of its chain.
fn remove_pending(txn: &WriteTransaction, seq: u64) -> Result<Option<Delivery>, StoreError> {
    let Some(bytes) = txn
        .open_table(OUTBOX)?
        .remove(seq)?
        .map(|guard| guard.value().to_vec())
    else {
        return Ok(None);
    };
    let delivery: Delivery = decode(OUTBOX_NAME, &bytes)?;
    let alert = u128::from(delivery.alert_id);

    txn.open_table(OUTBOX_DUE)?
        .remove((delivery.next_attempt_ms, seq))?;
    txn.open_table(OUTBOX_CHAINS)?
        .remove((delivery.webhook.as_str(), alert, seq))?;
    list_chain_head(txn, &delivery.webhook, alert)?;
    Ok(Some(delivery))
}

/// Lists the first pending delivery of a chain in [`OUTBOX_DUE`], if the chain has one.
fn list_chain_head(txn: &WriteTransaction, webhook: &str, alert: u128) -> Result<(), StoreError> {
    let chains = txn.open_table(OUTBOX_CHAINS)?;
    let head = chains
        .range((webhook, alert, 0)..=(webhook, alert, u64::MAX))?
        .next();
    let Some(row) = head else { return Ok(()) };
    let (_, _, seq) = row?.0.value();

    let Some(bytes) = txn
        .open_table(OUTBOX)?
        .get(seq)?
        .map(|guard| guard.value().to_vec())
    else {
        return Ok(());
    };
    // An unreadable head is listed at time 0, so the worker finds it at once and sets it aside.
    let next_attempt_ms =
        decode::<Delivery>(OUTBOX_NAME, &bytes).map_or(0, |delivery| delivery.next_attempt_ms);
    txn.open_table(OUTBOX_DUE)?
        .insert((next_attempt_ms, seq), ())?;
    Ok(())
}

fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT_VERSION]).map_err(|e| StoreError::Corrupt {
        table,
        detail: format!("failed to encode: {e}"),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { table, detail };
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(format!("failed to decode: {e}")))
        }
        Some((version, _)) => Err(corrupt(format!(
            "unknown format version {version}, expected {FORMAT_VERSION}"
        ))),
        None => Err(corrupt("empty record".into())),
    }
}
