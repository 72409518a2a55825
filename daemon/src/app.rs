//! Start-up wiring: opens the store, loads rules, starts delivery, the HTTP endpoint, the MQTT
//! ingest task and the pipeline thread, and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::decode::Decoders;
use crate::delivery::Deliverer;
use crate::ingest;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::plugins::PluginHost;
use crate::rules::RuleEngine;
use crate::state::StateModel;
use crate::store::Store;

/// Maximum wait for the pipeline thread after the MQTT ingest has stopped. Ingest itself waits up
/// to 5 s for the pipeline's last acknowledgements, so the pipeline has normally ended by then.
const PIPELINE_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Stack of the pipeline thread, which runs plugins and rules.
const PIPELINE_STACK_BYTES: usize = 16 << 20;

/// Exit status when the store cannot be opened, for example because another process holds it.
pub const EXIT_STORE_UNAVAILABLE: i32 = 3;

/// A failure that keeps the daemon from starting.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreUnavailable(#[from] pub crate::store::StoreError);

/// Runs the daemon until `shutdown` resolves. `on_listening` receives the HTTP address once bound.
///
/// # Errors
/// Returns an error when a component cannot start; a [`StoreUnavailable`] error when the
/// database cannot be opened.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(
        Store::open_with_cache(&config.store.path, config.store.cache_bytes)
            .map_err(StoreUnavailable)?,
    );
    let rules = Arc::new(
        RuleEngine::load(config.rules.clone(), metrics.clone()).context("failed to load rules")?,
    );
    let _watcher = rules.watch().context("failed to watch the rules folder")?;
    let plugins = Arc::new(
        PluginHost::start(&config.plugins, metrics.clone()).context("failed to start plugins")?,
    );
    let _plugin_watcher = plugins
        .watch()
        .context("failed to watch the plugins folder")?;
    let scripts = crate::decode::load_scripts(&config, metrics.clone())?;
    let _script_watcher = match &scripts {
        Some(scripts) => Some(
            scripts
                .watch()
                .context("failed to watch the decoder scripts folder")?,
        ),
        None => None,
    };
    let decoders = Decoders::from_config(&config, scripts).map_err(anyhow::Error::msg)?;
    let model = StateModel::new(&config.state, config.decode.max_power_kw);
    let deliverer = Arc::new(Deliverer::spawn(
        store.clone(),
        config.delivery.clone(),
        config.webhooks.clone(),
        metrics.clone(),
    ));

    let listener = api::bind(config.http.listen)
        .await
        .with_context(|| format!("failed to bind HTTP endpoint {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(addr = %http_addr, "HTTP endpoint listening");
    on_listening(http_addr);
    let (stop_tx, stop_rx) = watch::channel(false);

    let options = ingest::options(&config.mqtt)?;
    let (message_tx, message_rx) = mpsc::channel(config.mqtt.queue_capacity);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let state_model = Arc::new(model.clone());
    let mut pipeline = Pipeline::new(
        decoders,
        model,
        rules.clone(),
        store.clone(),
        metrics.clone(),
        PipelineSettings::from_config(&config),
    )
    .with_plugins(plugins.clone());
    let notify = deliverer.clone();
    pipeline.on_commit(move || notify.notify());
    let api_state = ApiState {
        store: store.clone(),
        metrics: metrics.clone(),
        tokens: Arc::new(config.http.all_tokens()),
        webhooks: Arc::new(config.webhooks.clone()),
        delivery: deliverer.notifier(),
        meters: pipeline.meter_view(),
        state_model,
        rules: Some(rules.clone()),
        plugins: Some(plugins.clone()),
    };
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(api::serve(listener, api_state, async move {
        let _ = api_stop.wait_for(|stop| *stop).await;
    }));
    let pipeline_thread = std::thread::Builder::new()
        .name("pipeline".into())
        // Plugins run on this thread: their wasm stack (at most 1 MiB) comes out of it.
        .stack_size(PIPELINE_STACK_BYTES)
        .spawn(move || pipeline.run(message_rx, Some(ack_tx)))?;
    let mqtt = crate::config::MqttConfig {
        topics: config.subscriptions(),
        ..config.mqtt.clone()
    };
    let ingest_task = tokio::spawn(ingest::run(
        mqtt,
        options,
        message_tx,
        ack_rx,
        metrics.clone(),
        stop_rx,
    ));
    tracing::info!(client_id = %config.mqtt.client_id, url = %config.mqtt.url, "gridwatch started");
    let announce_task = tokio::spawn(crate::service::announce(metrics.clone()));

    shutdown.await;
    tracing::info!("shutting down");
    crate::service::stopping();
    announce_task.abort();
    let _ = stop_tx.send(true);
    let _ = ingest_task.await;
    wait_for_pipeline(pipeline_thread).await;
    if let Ok(deliverer) = Arc::try_unwrap(deliverer) {
        deliverer.shutdown().await;
    }
    let _ = api_task.await;
    tracing::info!("gridwatch stopped");
    Ok(())
}

/// Waits for the pipeline thread, which ends once it has committed and acknowledged the messages
/// it held. After [`PIPELINE_STOP_TIMEOUT`] it is left to end with the process: its uncommitted
/// batch was never acknowledged, so the broker delivers it again.
async fn wait_for_pipeline(thread: std::thread::JoinHandle<()>) {
    let deadline = tokio::time::Instant::now() + PIPELINE_STOP_TIMEOUT;
    while !thread.is_finished() {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                timeout_ms = PIPELINE_STOP_TIMEOUT.as_millis() as u64,
                "pipeline did not stop in time; its uncommitted batch stays unacknowledged"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if thread.join().is_err() {
        tracing::error!("pipeline thread panicked");
    }
}
