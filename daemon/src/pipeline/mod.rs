//! The batch loop: decode, update meter state, run plugins and rules, commit, acknowledge.
//!
//! The pipeline takes every message that is waiting (up to `store.commit_max_readings`),
//! processes them, writes all their effects in one redb transaction and only then acknowledges
//! them to the broker. Meter state is split into shards by meter; large batches are decoded and
//! applied on one thread per shard, so a meter's readings stay in order on one thread. Plugins
//! then see the whole batch at once, and the rules run last so they can read plugin scores.

mod shard;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::alerts::{Alert, AlertChange};
use crate::config::{Config, WebhookConfig};
use crate::decode::{Decoded, Decoders, Reading, Rejection};
use crate::ingest::{Ack, Message};
use crate::metrics::Metrics;
use crate::plugins::{HistorySource, MeterRef, PluginBank, PluginHost, PluginStates};
use crate::rules::RuleEngine;
use crate::state::{MeterState, RecentHours, StateModel};
use crate::store::{AlertWrite, BatchWrite, RejectedMessage, Store, StoreError};

use shard::{MeterMap, Shard, ShardContext, ShardOutput};

/// Maximum wait between attempts to commit a batch while the store fails.
const MAX_COMMIT_RETRY: Duration = Duration::from_secs(30);

/// Smallest batch that is spread over threads; smaller ones run on the pipeline thread.
const MIN_PARALLEL_BATCH: usize = 64;

/// Settings the pipeline takes from the configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Largest batch.
    pub commit_max_readings: usize,
    /// Rejected messages kept.
    pub max_rejected_kept: u64,
    /// Payload bytes kept per rejected message.
    pub rejected_payload_max_bytes: usize,
    /// Webhook endpoints.
    pub webhooks: Vec<WebhookConfig>,
    /// Meter state shards, each applied on its own thread for large batches.
    pub workers: usize,
}

impl PipelineSettings {
    /// Takes the pipeline's settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        let workers = match config.state.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        PipelineSettings {
            commit_max_readings: config.store.commit_max_readings,
            max_rejected_kept: config.store.max_rejected_kept,
            rejected_payload_max_bytes: config.store.rejected_payload_max_bytes,
            webhooks: config.webhooks.clone(),
            workers,
        }
    }
}

/// Result of one committed batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Readings accepted.
    pub accepted: usize,
    /// Messages rejected.
    pub rejected: usize,
    /// Alerts stored, with what changed.
    pub alerts: Vec<(Alert, AlertChange)>,
}

/// Decodes, tracks state, evaluates rules and commits.
pub struct Pipeline {
    decoders: Decoders,
    context: ShardContext,
    settings: PipelineSettings,
    shards: Vec<Shard>,
    plugins: Option<PluginBank>,
    on_commit: Option<Box<dyn Fn() + Send>>,
}

/// Effects of a batch, kept until they are committed.
#[derive(Default)]
struct Pending {
    shards: Vec<ShardOutput>,
    rejected: Vec<RejectedMessage>,
    plugin_state: Vec<(String, Option<Vec<u8>>)>,
    plugin_alerts: Vec<(usize, AlertWrite)>,
}

impl Pending {
    fn accepted(&self) -> usize {
        self.shards.iter().map(|s| s.accepted).sum()
    }

    /// Returns the alerts of every shard and plugin in the order their readings arrived.
    fn alerts(&self) -> Vec<AlertWrite> {
        let mut alerts: Vec<&(usize, AlertWrite)> = self
            .shards
            .iter()
            .flat_map(|s| &s.alerts)
            .chain(&self.plugin_alerts)
            .collect();
        alerts.sort_by_key(|(index, _)| *index);
        alerts.into_iter().map(|(_, alert)| alert.clone()).collect()
    }
}

impl Pipeline {
    /// Builds a pipeline.
    pub fn new(
        decoders: impl Into<Decoders>,
        model: StateModel,
        rules: Arc<RuleEngine>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
    ) -> Pipeline {
        let shards = (0..settings.workers.max(1))
            .map(|_| Shard::default())
            .collect();
        Pipeline {
            decoders: decoders.into(),
            context: ShardContext::new(model, rules, store, metrics),
            settings,
            shards,
            plugins: None,
            on_commit: None,
        }
    }

    /// Runs the host's plugins on every batch, with their state kept in the store.
    pub fn with_plugins(mut self, host: Arc<PluginHost>) -> Pipeline {
        let states = Arc::new(PluginStates::new(self.context.store.clone()));
        let history = Arc::new(ShardHistory {
            maps: self.shards.iter().map(|s| s.meters.clone()).collect(),
        });
        let metrics = self.context.metrics.clone();
        self.plugins = Some(PluginBank::new(host, states, history, metrics));
        self
    }

    /// Sets a callback run after each commit, such as waking the webhook deliverer.
    pub fn on_commit(&mut self, callback: impl Fn() + Send + 'static) {
        self.on_commit = Some(Box::new(callback));
    }

    /// Returns a read-only handle on the meter states held in memory.
    pub fn meter_view(&self) -> MeterView {
        MeterView {
            maps: self.shards.iter().map(|s| s.meters.clone()).collect(),
        }
    }

    /// Returns the number of meters held in memory.
    pub fn meter_count(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    /// Processes messages until `messages` closes, acknowledging each batch once committed.
    /// Runs on its own thread, never on the MQTT event loop.
    pub fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        acks: Option<mpsc::UnboundedSender<Ack>>,
    ) {
        while let Some(first) = messages.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.settings.commit_max_readings {
                match messages.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let now_ms = chrono::Utc::now().timestamp_millis();
            let outcome = self.process_until_committed(&batch, now_ms);
            tracing::debug!(
                readings = batch.len(),
                accepted = outcome.accepted,
                "batch committed"
            );
            if let Some(acks) = &acks {
                // Only the packet id goes on, so the payloads are freed with the batch.
                for ack in batch.iter().filter_map(Message::ack) {
                    // The receiver is gone only during shutdown; the broker then redelivers.
                    let _ = acks.send(ack);
                }
            }
        }
        tracing::info!("pipeline stopped");
    }

    /// Processes a batch and retries its commit until the store accepts it.
    fn process_until_committed(&mut self, batch: &[Message], now_ms: i64) -> BatchOutcome {
        let pending = self.process(batch, now_ms);
        let mut delay = Duration::from_millis(100);
        loop {
            match self.commit(&pending, now_ms) {
                Ok(outcome) => {
                    self.context.metrics.store_healthy.set(1);
                    let messages = batch.len() as u64;
                    self.context.metrics.messages_committed.inc_by(messages);
                    return outcome;
                }
                Err(error) => {
                    self.context.metrics.store_healthy.set(0);
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "failed to commit batch; readings stay unacknowledged");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_COMMIT_RETRY);
                    // redb refuses every transaction after an I/O error until it is reopened.
                    if let Err(error) = self.context.store.recover() {
                        tracing::warn!(%error, "failed to reopen the alert store");
                    }
                }
            }
        }
    }

    /// Processes and commits one batch without acknowledging it (offline use and tests).
    ///
    /// # Errors
    /// Returns an error when the commit fails.
    pub fn process_batch(
        &mut self,
        batch: &[Message],
        now_ms: i64,
    ) -> Result<BatchOutcome, StoreError> {
        let pending = self.process(batch, now_ms);
        self.commit(&pending, now_ms)
    }

    fn process(&mut self, batch: &[Message], now_ms: i64) -> Pending {
        let parallel = self.shards.len() > 1 && batch.len() >= MIN_PARALLEL_BATCH;
        let decoded = self.decode_all(batch, now_ms, parallel);

        let mut pending = Pending::default();
        let mut routed: Vec<Vec<(usize, Reading)>> = vec![Vec::new(); self.shards.len()];
        for (index, (message, decoded)) in batch.iter().zip(decoded).enumerate() {
            match decoded {
                Decoded::Readings(readings) => {
                    for reading in readings {
                        let key = shard::meter_key(&reading);
                        routed[shard::shard_of(&key, self.shards.len())].push((index, reading));
                    }
                }
                Decoded::Rejected(rejection) => {
                    pending.rejected.push(self.reject(message, &rejection));
                }
                Decoded::Held | Decoded::Ignored => {}
            }
        }

        // Plugins read meter history, which has every reading applied so far. So that they
        // see each meter as it was after the reading they examine, a batch with several
        // readings of one meter runs in rounds, each holding one reading per meter.
        let mut outputs: Vec<ShardOutput> = Vec::new();
        for round in shard::rounds(routed) {
            let size: usize = round.iter().map(Vec::len).sum();
            let parallel = self.shards.len() > 1 && size >= MIN_PARALLEL_BATCH;
            let mut round_outputs = self.apply_round(round, parallel);
            self.run_plugins(&mut round_outputs, &mut pending);
            let context = &self.context;
            if parallel {
                std::thread::scope(|scope| {
                    for output in &mut round_outputs {
                        scope.spawn(move || Shard::evaluate(context, output));
                    }
                });
            } else {
                for output in &mut round_outputs {
                    Shard::evaluate(context, output);
                }
            }
            if outputs.is_empty() {
                outputs = round_outputs;
            } else {
                for (output, part) in outputs.iter_mut().zip(round_outputs) {
                    output.absorb(part);
                }
            }
        }
        let context = &self.context;
        pending.shards = outputs;
        context.metrics.meters.set(self.meter_count() as i64);
        pending
    }

    /// Applies one round of readings, routed by shard, on one thread per shard when
    /// `parallel`.
    fn apply_round(&self, routed: Vec<Vec<(usize, Reading)>>, parallel: bool) -> Vec<ShardOutput> {
        let context = &self.context;
        let shards = &self.shards;
        if parallel {
            std::thread::scope(|scope| {
                let handles: Vec<_> = shards
                    .iter()
                    .zip(routed)
                    .map(|(shard, readings)| scope.spawn(move || shard.apply(context, readings)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        } else {
            shards
                .iter()
                .zip(routed)
                .map(|(shard, readings)| shard.apply(context, readings))
                .collect()
        }
    }

    /// Runs the plugins over the applied readings in batch order and records their scores.
    fn run_plugins(&mut self, outputs: &mut [ShardOutput], pending: &mut Pending) {
        let Some(bank) = self.plugins.as_mut() else {
            return;
        };
        if bank.is_empty() {
            return;
        }
        let mut items: Vec<MeterRef<'_>> = outputs
            .iter()
            .flat_map(|o| &o.applied)
            .map(|a| MeterRef {
                index: a.index,
                reading: &a.reading,
                snapshot: &a.snapshot,
            })
            .collect();
        items.sort_by_key(|item| item.index);
        let found = bank.run(&items);
        drop(items);
        pending.plugin_state.extend(bank.take_state());
        pending.plugin_alerts.extend(found.alerts);
        for (shard, output) in self.shards.iter().zip(outputs.iter_mut()) {
            shard.set_scores(output, &found.scores);
        }
    }

    /// Decodes every message, on one thread per shard when `parallel`, keeping batch order.
    /// Messages whose format needs its device's messages in order are decoded afterwards on
    /// this thread, in batch order.
    fn decode_all(&self, batch: &[Message], now_ms: i64, parallel: bool) -> Vec<Decoded> {
        let decoders = &self.decoders;
        let metrics = &self.context.metrics;
        let decode = move |message: &Message| {
            let publish = &message.publish;
            let (name, decoded) = decoders.decode(
                &publish.topic,
                &publish.payload,
                message.received_ms,
                now_ms,
            );
            if let Some(name) = name {
                let labels = vec![
                    ("decoder", name.to_owned()),
                    ("outcome", decoded.outcome().to_owned()),
                ];
                metrics.messages_decoded.get_or_create(&labels).inc();
            }
            decoded
        };
        let unordered = move |message: &Message| {
            if decoders.is_ordered(&message.publish.topic) {
                None
            } else {
                Some(decode(message))
            }
        };
        let first: Vec<Option<Decoded>> = if parallel {
            let chunk = batch.len().div_ceil(self.shards.len());
            std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || part.iter().map(unordered).collect::<Vec<_>>()))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        } else {
            batch.iter().map(unordered).collect()
        };
        first
            .into_iter()
            .zip(batch)
            .map(|(decoded, message)| decoded.unwrap_or_else(|| decode(message)))
            .collect()
    }

    fn reject(&self, message: &Message, rejection: &Rejection) -> RejectedMessage {
        let publish = &message.publish;
        let metrics = &self.context.metrics;
        Metrics::inc(
            &metrics.readings_rejected,
            "reason",
            rejection.reason.as_str(),
        );
        tracing::debug!(topic = %publish.topic, reason = rejection.reason.as_str(), error = %rejection, "message rejected");
        RejectedMessage::new(
            message.received_ms,
            &publish.topic,
            &publish.payload,
            rejection,
            self.settings.rejected_payload_max_bytes,
        )
    }

    fn commit(&self, pending: &Pending, now_ms: i64) -> Result<BatchOutcome, StoreError> {
        let guards: Vec<_> = self.shards.iter().map(|s| s.meters.read()).collect();
        let meters = guards
            .iter()
            .zip(&pending.shards)
            .flat_map(|(meters, output)| {
                output
                    .dirty
                    .iter()
                    .filter_map(|key| meters.get(key).map(|state| (key, state)))
            })
            .collect();
        let written = self.context.store.commit_batch(BatchWrite {
            meters,
            plugin_state: pending.plugin_state.clone(),
            alerts: pending.alerts(),
            rejected: pending.rejected.clone(),
            webhooks: &self.settings.webhooks,
            max_rejected_kept: self.settings.max_rejected_kept,
            now_ms,
        });
        drop(guards);
        let alerts = written?;
        self.context.metrics.store_commits.inc();
        for (alert, change) in &alerts {
            self.record_alert(alert, *change);
        }
        if let Some(callback) = &self.on_commit {
            callback();
        }
        Ok(BatchOutcome {
            accepted: pending.accepted(),
            rejected: pending.rejected.len(),
            alerts,
        })
    }

    fn record_alert(&self, alert: &Alert, change: AlertChange) {
        let label = match change {
            AlertChange::Opened => "opened",
            AlertChange::Escalated => "escalated",
            AlertChange::Repeated => "repeated",
            AlertChange::Acknowledged => "acknowledged",
            AlertChange::Resolved => "resolved",
        };
        Metrics::inc(&self.context.metrics.alerts, "change", label);
        if change != AlertChange::Repeated {
            tracing::info!(alert_id = %alert.id, meter = %alert.meter, region = %alert.region, kind = %alert.kind, severity = alert.severity.as_str(), change = label, "alert raised");
        }
    }
}

/// Read access to the meter states in a [`Pipeline`]'s memory, for the HTTP API.
#[derive(Clone, Default)]
pub struct MeterView {
    maps: Vec<MeterMap>,
}

impl MeterView {
    /// Returns a copy of one meter's state, by `region/meter_id`, or `None` when the meter is not
    /// held in memory. The read lock is held only for the copy.
    pub fn get(&self, key: &str) -> Option<MeterState> {
        if self.maps.is_empty() {
            return None;
        }
        let map = &self.maps[shard::shard_of(key, self.maps.len())];
        map.read().get(key).cloned()
    }
}

/// The plugins' view of meter history: the shards' meter maps.
struct ShardHistory {
    maps: Vec<MeterMap>,
}

impl HistorySource for ShardHistory {
    fn history(&self, key: &str, hours: u32) -> RecentHours {
        let map = &self.maps[shard::shard_of(key, self.maps.len())];
        map.read()
            .get(key)
            .map(|state| state.history.recent(hours))
            .unwrap_or_default()
    }
}
