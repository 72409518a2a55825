//! The delivery task: finds due deliveries, sends them and records the outcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::Database;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::sync::{Notify, watch};
use tokio::task::{Id, JoinError, JoinSet};

use super::retry::{self, AttemptResult, Decision};
use super::signer::Signer;
use crate::config::{DeliveryConfig, WebhookConfig};
use crate::metrics::Metrics;
use crate::store::outbox::{self, DisabledWebhook, DueEntry, Pending};
use crate::store::{Store, StoreError};

/// Requests in flight at once, over all webhooks.
// NOTE: fixed until `DeliveryConfig` has a key for it; one slow endpoint can hold all of them
// for up to `request_timeout_ms`.
pub const MAX_CONCURRENT_REQUESTS: usize = 16;

/// Shortest time between two log lines about the same failing store operation.
const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Handle to the background task that sends webhook deliveries from the outbox.
///
/// Dropping the handle without [`Deliverer::shutdown`] also stops the task, but without waiting
/// for requests in flight.
pub struct Deliverer {
    notify: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Deliverer {
    /// Starts the delivery task on the current Tokio runtime.
    ///
    /// Webhooks whose secret is invalid are logged at error level, and their deliveries go to the
    /// dead-letter table, as do deliveries for webhooks that are no longer configured. A webhook
    /// whose endpoint returns 410 Gone is disabled in the store, and stays disabled across
    /// restarts until `gridwatch webhooks enable` runs.
    ///
    /// # Panics
    /// Panics when called outside a Tokio runtime.
    pub fn spawn(
        store: Arc<Store>,
        config: DeliveryConfig,
        webhooks: Vec<WebhookConfig>,
        metrics: Arc<Metrics>,
    ) -> Deliverer {
        let notify = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let worker = Worker::new(store, config, &webhooks, metrics, notify.clone());
        let task = tokio::spawn(worker.run(stop_rx));
        Deliverer { notify, stop, task }
    }

    /// Wakes the task to look for due deliveries now. Call it after committing new ones.
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// Returns a handle that wakes the task like [`Deliverer::notify`], for components that
    /// commit deliveries but must not keep the deliverer alive.
    pub fn notifier(&self) -> DeliveryNotifier {
        DeliveryNotifier(Some(self.notify.clone()))
    }

    /// Stops taking new deliveries, waits for requests in flight (each bounded by
    /// `request_timeout_ms`), records their outcomes and ends the task.
    pub async fn shutdown(self) {
        // The send fails when the task has already ended, which is fine.
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "webhook delivery task failed");
        }
    }
}

/// Wakes the delivery task; see [`Deliverer::notifier`]. The default handle wakes nothing.
#[derive(Debug, Clone, Default)]
pub struct DeliveryNotifier(Option<Arc<Notify>>);

impl DeliveryNotifier {
    /// Wakes the task to look for due deliveries now.
    pub fn notify(&self) {
        if let Some(notify) = &self.0 {
            notify.notify_one();
        }
    }
}

/// URL and signer of one webhook.
struct Endpoint {
    url: String,
    signer: Signer,
}

/// The outcome of one spawned attempt.
struct Finished {
    pending: Pending,
    result: AttemptResult,
}

struct Worker {
    store: Arc<Store>,
    config: DeliveryConfig,
    endpoints: HashMap<String, Result<Arc<Endpoint>, String>>,
    client: Result<reqwest::Client, String>,
    metrics: Arc<Metrics>,
    notify: Arc<Notify>,
    /// Sequence numbers of the deliveries being sent, by attempt task.
    in_flight: HashMap<Id, u64>,
    /// Reasons of the disabled webhooks, by name, as stored in the outbox's disabled table.
    disabled: HashMap<String, String>,
    last_store_error_log: Option<Instant>,
}

impl Worker {
    fn new(
        store: Arc<Store>,
        config: DeliveryConfig,
        webhooks: &[WebhookConfig],
        metrics: Arc<Metrics>,
        notify: Arc<Notify>,
    ) -> Worker {
        let endpoints = webhooks
            .iter()
            .map(|hook| (hook.name.clone(), endpoint(hook)))
            .collect();
        let client = reqwest::Client::builder()
            // A redirect is a failed delivery: the webhook URL should be updated instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("failed to build HTTP client: {}", error_chain(&e)));
        if let Err(error) = &client {
            tracing::error!(%error, "webhook deliveries cannot be sent");
        }
        Worker {
            store,
            config,
            endpoints,
            client,
            metrics,
            notify,
            in_flight: HashMap::new(),
            disabled: HashMap::new(),
            last_store_error_log: None,
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(endpoints = self.endpoints.len(), "webhook delivery started");
        let poll_interval = Duration::from_millis(self.config.poll_interval_ms.max(1));
        let mut attempts = JoinSet::new();
        self.load_disabled().await;
        loop {
            self.refresh_gauges().await;
            self.dispatch(&mut attempts).await;
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(poll_interval) => {}
                Some(joined) = attempts.join_next_with_id() => self.record(joined).await,
            }
        }

        tracing::info!(in_flight = attempts.len(), "webhook delivery stopping");
        while let Some(joined) = attempts.join_next_with_id().await {
            self.record(joined).await;
        }
        self.refresh_gauges().await;
        tracing::info!("webhook delivery stopped");
    }

    /// Starts attempts for due deliveries, up to [`MAX_CONCURRENT_REQUESTS`] in flight.
    async fn dispatch(&mut self, attempts: &mut JoinSet<Finished>) {
        let free = MAX_CONCURRENT_REQUESTS.saturating_sub(self.in_flight.len());
        if free == 0 {
            return;
        }
        let exclude: HashSet<u64> = self.in_flight.values().copied().collect();
        let now_ms = now_ms();
        let due = self
            .with_db(move |db| outbox::due(db, now_ms, free, &exclude))
            .await;
        let Some(entries) = self.check("read due deliveries", due) else {
            return;
        };

        for entry in entries {
            match entry {
                DueEntry::Ready(pending) => self.start(pending, attempts).await,
                DueEntry::Unreadable { seq, error } => self.set_aside(seq, &error).await,
            }
        }
    }

    async fn start(&mut self, pending: Pending, attempts: &mut JoinSet<Finished>) {
        if let Some(reason) = self.disabled.get(&pending.delivery.webhook) {
            let error = format!("webhook disabled: {reason}");
            return self.give_up(pending, error).await;
        }
        let endpoint = match self.endpoints.get(&pending.delivery.webhook) {
            Some(Ok(endpoint)) => endpoint.clone(),
            Some(Err(error)) => return self.give_up(pending, error.clone()).await,
            None => {
                let error = format!("webhook '{}' is not configured", pending.delivery.webhook);
                return self.give_up(pending, error).await;
            }
        };
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => {
                let result = AttemptResult::Failed {
                    error: error.clone(),
                };
                return self.apply(Finished { pending, result }).await;
            }
        };

        let seq = pending.seq;
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let task = attempts.spawn(async move {
            let result = send(&client, &endpoint, &pending, timeout).await;
            Finished { pending, result }
        });
        self.in_flight.insert(task.id(), seq);
    }

    async fn record(&mut self, joined: Result<(Id, Finished), JoinError>) {
        match joined {
            Ok((task, finished)) => {
                // The outcome is stored before the delivery is released, so the next scan cannot
                // start it again.
                self.apply(finished).await;
                self.in_flight.remove(&task);
            }
            Err(error) => {
                // The outbox is unchanged, so the delivery is attempted again on a later pass.
                let seq = self.in_flight.remove(&error.id());
                tracing::error!(seq, %error, "webhook attempt task failed");
            }
        }
    }

    /// Records an attempt's outcome in the outbox and the metrics.
    async fn apply(&mut self, finished: Finished) {
        let Finished { pending, result } = finished;
        let delivery = &pending.delivery;
        let attempt = delivery.attempts.saturating_add(1);
        let now_ms = now_ms();
        let decision = retry::decide(delivery, &result, now_ms, &self.config, &mut rand::rng());

        match decision {
            Decision::Complete => {
                tracing::debug!(
                    webhook = %delivery.webhook,
                    alert_id = %delivery.alert_id,
                    attempt,
                    "webhook delivered"
                );
                let seq = pending.seq;
                let done = self.with_db(move |db| outbox::complete(db, seq)).await;
                self.check("delete a delivered message", done);
                self.count(&delivery.webhook, "success");
            }
            Decision::Retry { error, .. } if self.disabled.contains_key(&delivery.webhook) => {
                // Another attempt of this webhook returned 410 Gone while this one was in flight.
                let reason = &self.disabled[&delivery.webhook];
                let error = format!("{error} (webhook disabled: {reason})");
                let pending = with_attempts(pending, attempt);
                self.give_up(pending, error).await;
            }
            Decision::Retry {
                next_attempt_ms,
                error,
            } => {
                let delay_ms = next_attempt_ms.saturating_sub(now_ms);
                tracing::warn!(
                    webhook = %delivery.webhook,
                    alert_id = %delivery.alert_id,
                    attempt,
                    delay_ms,
                    %error,
                    "webhook attempt failed, retrying"
                );
                let seq = pending.seq;
                let saved = self
                    .with_db(move |db| {
                        outbox::reschedule(db, seq, attempt, next_attempt_ms, &error)
                    })
                    .await;
                self.check("reschedule a delivery", saved);
                self.count(&delivery.webhook, "retry");
            }
            Decision::DeadLetter { error } => {
                let pending = with_attempts(pending, attempt);
                self.give_up(pending, error).await;
            }
            Decision::Disable { error } => {
                let pending = with_attempts(pending, attempt);
                self.disable(pending, error).await;
            }
        }
    }

    /// Moves a delivery to the dead-letter table.
    async fn give_up(&mut self, pending: Pending, error: String) {
        let delivery = &pending.delivery;
        if self.disabled.contains_key(&delivery.webhook) {
            // Disabling the webhook was logged once at error level, so each delivery is not.
            tracing::debug!(
                webhook = %delivery.webhook,
                alert_id = %delivery.alert_id,
                %error,
                "webhook disabled, delivery moved to dead letters"
            );
        } else {
            tracing::error!(
                webhook = %delivery.webhook,
                alert_id = %delivery.alert_id,
                attempt = delivery.attempts,
                %error,
                "webhook delivery given up, moved to dead letters"
            );
        }
        let seq = pending.seq;
        let now_ms = now_ms();
        let moved = self
            .with_db(move |db| outbox::move_to_dead_letters(db, seq, &error, now_ms))
            .await;
        self.check("move a delivery to dead letters", moved);
        self.count(&delivery.webhook, "dead_letter");
    }

    /// Disables the delivery's webhook after a 410 Gone response, and moves this delivery and
    /// every pending one of the webhook to the dead-letter table. Attempts still in flight are
    /// recorded when they end.
    async fn disable(&mut self, pending: Pending, error: String) {
        let webhook = pending.delivery.webhook.clone();
        let url = match self.endpoints.get(&webhook) {
            Some(Ok(endpoint)) => redact_url(&endpoint.url),
            _ => String::new(),
        };
        let record = DisabledWebhook {
            url: url.clone(),
            disabled_ms: now_ms(),
            reason: error,
        };
        let seq = pending.seq;
        let attempts = pending.delivery.attempts;
        let keep: HashSet<u64> = self
            .in_flight
            .values()
            .copied()
            .filter(|&other| other != seq)
            .collect();

        let name = webhook.clone();
        let reason = record.reason.clone();
        let disabled = self
            .with_db(move |db| {
                // The attempt is recorded first, so its dead letter counts it.
                outbox::reschedule(db, seq, attempts, record.disabled_ms, &record.reason)?;
                outbox::disable_webhook(db, &name, &record, &keep)
            })
            .await;
        let Some(disabled) = self.check("disable a webhook", disabled) else {
            return;
        };
        self.count(&webhook, "gone");
        self.disabled.insert(webhook.clone(), reason);
        self.set_disabled_gauge(&webhook, true);
        log_disabled(&pending, &url, disabled);
    }

    /// Reads the disabled webhooks from the store and sets the `webhook_disabled` gauge of every
    /// configured or disabled webhook.
    async fn load_disabled(&mut self) {
        let names: Vec<String> = self.endpoints.keys().cloned().collect();
        for name in &names {
            self.set_disabled_gauge(name, false);
        }
        let loaded = self.with_db(outbox::disabled_webhooks).await;
        // NOTE: when this read fails, deliveries of a disabled webhook are attempted until its
        // endpoint returns 410 Gone again.
        let Some(disabled) = self.check("read disabled webhooks", loaded) else {
            return;
        };
        for (name, record) in disabled {
            tracing::warn!(
                webhook = %name,
                url = %record.url,
                reason = %record.reason,
                "webhook disabled, its deliveries go to dead letters; run \
                 `gridwatch webhooks enable` to send to it again"
            );
            self.set_disabled_gauge(&name, true);
            self.disabled.insert(name, record.reason);
        }
    }

    fn set_disabled_gauge(&self, webhook: &str, disabled: bool) {
        let labels = vec![("webhook", webhook.to_owned())];
        let gauge = self.metrics.webhook_disabled.get_or_create(&labels);
        gauge.set(i64::from(disabled));
    }

    async fn set_aside(&mut self, seq: u64, error: &str) {
        tracing::error!(
            seq,
            %error,
            "unreadable outbox record, moved to the outbox_unreadable table"
        );
        let moved = self
            .with_db(move |db| outbox::set_aside_unreadable(db, seq))
            .await;
        self.check("set aside an unreadable outbox record", moved);
        // The record cannot name its webhook, so the label is empty.
        self.count("", "unreadable");
    }

    async fn refresh_gauges(&mut self) {
        let depth = self.with_db(outbox::depth).await;
        if let Some(depth) = self.check("count outbox records", depth) {
            self.metrics
                .outbox_depth
                .set(i64::try_from(depth.outbox).unwrap_or(i64::MAX));
            self.metrics
                .dead_letters
                .set(i64::try_from(depth.dead_letters).unwrap_or(i64::MAX));
        }
    }

    fn count(&self, webhook: &str, outcome: &'static str) {
        let labels = vec![
            ("webhook", webhook.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        self.metrics.webhook_deliveries.get_or_create(&labels).inc();
    }

    /// Runs a store operation on the blocking thread pool, because redb commits wait for fsync.
    async fn with_db<T, F>(&self, operation: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || operation(&store.db())).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("store task failed: {e}")),
        }
    }

    /// Logs a failed store operation, at most once per [`STORE_ERROR_LOG_INTERVAL`]. A failed
    /// write leaves the outbox unchanged, so a later pass attempts the delivery again.
    fn check<T>(&mut self, operation: &str, result: Result<T, String>) -> Option<T> {
        let error = match result {
            Ok(value) => return Some(value),
            Err(error) => error,
        };
        let now = Instant::now();
        let quiet = self
            .last_store_error_log
            .is_some_and(|last| now - last < STORE_ERROR_LOG_INTERVAL);
        if !quiet {
            self.last_store_error_log = Some(now);
            tracing::error!(%error, operation, "webhook outbox operation failed, will retry");
        }
        None
    }
}

/// Logs a 410 Gone response: at error level when it disabled the webhook, at debug level when
/// the webhook was already disabled.
fn log_disabled(pending: &Pending, url: &str, disabled: outbox::Disabled) {
    let delivery = &pending.delivery;
    if disabled.newly_disabled {
        tracing::error!(
            webhook = %delivery.webhook,
            url,
            alert_id = %delivery.alert_id,
            dead_lettered = disabled.dead_lettered,
            "webhook endpoint returned 410 Gone, webhook disabled and its pending deliveries \
             moved to dead letters; run `gridwatch webhooks enable` to send to it again"
        );
    } else {
        tracing::debug!(
            webhook = %delivery.webhook,
            alert_id = %delivery.alert_id,
            dead_lettered = disabled.dead_lettered,
            "disabled webhook returned 410 Gone again, deliveries moved to dead letters"
        );
    }
}

fn with_attempts(pending: Pending, attempts: u32) -> Pending {
    Pending {
        delivery: outbox::Delivery {
            attempts,
            ..pending.delivery
        },
        ..pending
    }
}

/// Returns the URL without user info, query and fragment, which can hold credentials, for logs
/// and the disabled-webhook record. The path is kept.
// NOTE: some services put a token in the path (Slack incoming webhooks do), and it is kept.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<invalid URL>".to_owned();
    };
    // Both calls fail only for URLs that cannot have user info, which then have none to remove.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    parsed.to_string()
}

fn endpoint(hook: &WebhookConfig) -> Result<Arc<Endpoint>, String> {
    match Signer::from_secret(hook.secret.expose()) {
        Ok(signer) => Ok(Arc::new(Endpoint {
            url: hook.url.clone(),
            signer,
        })),
        Err(error) => {
            tracing::error!(webhook = %hook.name, %error, "webhook disabled");
            Err(format!("webhook '{}' is disabled: {error}", hook.name))
        }
    }
}

/// Sends one attempt with fresh `webhook-timestamp` and `webhook-signature` headers.
async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    pending: &Pending,
    timeout: Duration,
) -> AttemptResult {
    let delivery = &pending.delivery;
    let timestamp_secs = now_ms().div_euclid(1000);
    let signature = endpoint
        .signer
        .sign(&delivery.id, timestamp_secs, &delivery.body);
    let request = client
        .post(&endpoint.url)
        .timeout(timeout)
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp_secs.to_string())
        .header("webhook-signature", signature)
        .header(CONTENT_TYPE, "application/json")
        .body(delivery.body.clone());

    match request.send().await {
        Ok(response) => classify(response.status().as_u16(), response.headers()),
        // The URL can hold a token in its query, and the error is logged and stored.
        Err(error) => AttemptResult::Failed {
            error: error_chain(&error.without_url()),
        },
    }
}

fn classify(status: u16, headers: &HeaderMap) -> AttemptResult {
    if (200..300).contains(&status) {
        return AttemptResult::Delivered { status };
    }
    let retry_after = if status == 429 || status == 503 {
        headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry::parse_retry_after(value, SystemTime::now()))
    } else {
        None
    };
    AttemptResult::Rejected {
        status,
        retry_after,
    }
}

/// Joins an error and its sources, because reqwest's top-level message omits the cause, such as
/// "connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
