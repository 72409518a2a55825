//! The batch loop: decode, update meter state, run rules, commit, acknowledge.
//!
//! One pipeline owns all meter state in memory. It takes every message that is waiting (up to
//! `store.commit_max_readings`), processes them, writes all their effects in one redb
//! transaction and only then acknowledges them to the broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::Publish;
use tokio::sync::mpsc;

use crate::alerts::{Alert, AlertChange};
use crate::config::{Config, WebhookConfig};
use crate::decode::{Decoder, Reading};
use crate::ingest::Message;
use crate::metrics::Metrics;
use crate::rules::RuleEngine;
use crate::state::{IntervalKind, MeterState, StateModel};
use crate::store::{AlertWrite, BatchWrite, RejectedMessage, Store, StoreError};

/// Maximum wait between attempts to commit a batch while the store fails.
const MAX_COMMIT_RETRY: Duration = Duration::from_secs(30);

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
}

impl PipelineSettings {
    /// Takes the pipeline's settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        PipelineSettings {
            commit_max_readings: config.store.commit_max_readings,
            max_rejected_kept: config.store.max_rejected_kept,
            rejected_payload_max_bytes: config.store.rejected_payload_max_bytes,
            webhooks: config.webhooks.clone(),
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
    decoder: Decoder,
    model: StateModel,
    rules: Arc<RuleEngine>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: PipelineSettings,
    meters: HashMap<String, MeterState>,
    on_commit: Option<Box<dyn Fn() + Send>>,
}

/// Effects of a batch, kept until they are committed.
#[derive(Default)]
struct Pending {
    dirty: HashSet<String>,
    alerts: Vec<AlertWrite>,
    rejected: Vec<RejectedMessage>,
    accepted: usize,
}

impl Pipeline {
    /// Builds a pipeline.
    pub fn new(
        decoder: Decoder,
        model: StateModel,
        rules: Arc<RuleEngine>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
    ) -> Pipeline {
        Pipeline {
            decoder,
            model,
            rules,
            store,
            metrics,
            settings,
            meters: HashMap::new(),
            on_commit: None,
        }
    }

    /// Sets a callback run after each commit, such as waking the webhook deliverer.
    pub fn on_commit(&mut self, callback: impl Fn() + Send + 'static) {
        self.on_commit = Some(Box::new(callback));
    }

    /// Returns the number of meters held in memory.
    pub fn meter_count(&self) -> usize {
        self.meters.len()
    }

    /// Processes messages until `messages` closes, acknowledging each batch once committed.
    /// Runs on its own thread, never on the MQTT event loop.
    pub fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        acks: Option<mpsc::UnboundedSender<Publish>>,
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
                for message in batch {
                    // The receiver is gone only during shutdown; the broker then redelivers.
                    let _ = acks.send(message.publish);
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
                Ok(outcome) => return outcome,
                Err(error) => {
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "failed to commit batch; readings stay unacknowledged");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_COMMIT_RETRY);
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
        let mut pending = Pending::default();
        for message in batch {
            let publish = &message.publish;
            match self
                .decoder
                .decode(&publish.topic, &publish.payload, now_ms)
            {
                Ok(reading) => self.accept(&reading, &mut pending),
                Err(rejection) => {
                    Metrics::inc(
                        &self.metrics.readings_rejected,
                        "reason",
                        rejection.reason.as_str(),
                    );
                    tracing::debug!(topic = %publish.topic, reason = rejection.reason.as_str(), error = %rejection, "message rejected");
                    pending.rejected.push(RejectedMessage::new(
                        message.received_ms,
                        &publish.topic,
                        &publish.payload,
                        &rejection,
                        self.settings.rejected_payload_max_bytes,
                    ));
                }
            }
        }
        pending
    }

    fn accept(&mut self, reading: &Reading, pending: &mut Pending) {
        let key = format!("{}/{}", reading.region, reading.meter_id);
        if !self.meters.contains_key(&key) {
            let state = self.load_state(&key);
            self.meters.insert(key.clone(), state);
            self.metrics.meters.set(self.meters.len() as i64);
        }
        let Some(state) = self.meters.get_mut(&key) else {
            return;
        };
        let interval = self.model.apply(state, reading);
        Metrics::inc(
            &self.metrics.register_intervals,
            "kind",
            interval.kind.as_str(),
        );
        self.metrics.readings_accepted.inc();
        pending.accepted += 1;
        if matches!(interval.kind, IntervalKind::Duplicate | IntervalKind::Late) {
            // Already reflected in the state: running rules again would count a second firing.
            return;
        }
        let snapshot = self.model.snapshot(state, reading, interval);
        pending.dirty.insert(key);
        for draft in self.rules.evaluate(reading, &snapshot) {
            pending.alerts.push(AlertWrite {
                region: reading.region.clone(),
                meter: reading.meter_id.clone(),
                ts_ms: reading.ts_ms,
                draft,
            });
        }
    }

    fn load_state(&self, key: &str) -> MeterState {
        match self.store.load_meter(key) {
            Ok(Some(state)) => state,
            Ok(None) => self.model.new_state(),
            Err(error) => {
                // NOTE: the meter restarts from empty state, which loses its history.
                tracing::error!(meter = key, %error, "failed to load meter state; starting afresh");
                self.model.new_state()
            }
        }
    }

    fn commit(&self, pending: &Pending, now_ms: i64) -> Result<BatchOutcome, StoreError> {
        let meters = pending
            .dirty
            .iter()
            .filter_map(|key| self.meters.get(key).map(|state| (key, state)))
            .collect();
        let alerts = self.store.commit_batch(BatchWrite {
            meters,
            alerts: pending.alerts.clone(),
            rejected: pending.rejected.clone(),
            webhooks: &self.settings.webhooks,
            max_rejected_kept: self.settings.max_rejected_kept,
            now_ms,
        })?;
        self.metrics.store_commits.inc();
        for (alert, change) in &alerts {
            self.record_alert(alert, *change);
        }
        if let Some(callback) = &self.on_commit {
            callback();
        }
        Ok(BatchOutcome {
            accepted: pending.accepted,
            rejected: pending.rejected.len(),
            alerts,
        })
    }

    fn record_alert(&self, alert: &Alert, change: AlertChange) {
        let label = match change {
            AlertChange::Opened => "opened",
            AlertChange::Escalated => "escalated",
            AlertChange::Repeated => "repeated",
        };
        Metrics::inc(&self.metrics.alerts, "change", label);
        if change != AlertChange::Repeated {
            tracing::info!(alert_id = %alert.id, meter = %alert.meter, region = %alert.region, kind = %alert.kind, severity = alert.severity.as_str(), change = label, "alert raised");
        }
    }
}
