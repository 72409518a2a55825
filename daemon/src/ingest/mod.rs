//! MQTT ingest.

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// True for `mqtts://`.
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt://host:port` or `mqtts://host:port`.
    ///
    /// # Errors
    /// Returns a message naming the URL and the expected form.
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let invalid = || {
            format!("invalid broker URL '{url}', expected mqtt://host:port or mqtts://host:port")
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(invalid());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| invalid())?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(invalid());
        }
        Ok(BrokerAddress {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            tls,
        })
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish,
    QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use crate::config::MqttConfig;
use crate::metrics::Metrics;

/// Transport limit on incoming packets, above the payload limit so that oversized payloads up to
/// this size arrive and are rejected and kept; larger packets make rumqttc drop the connection.
// NOTE: a packet above this limit is redelivered after every reconnect under a persistent
// session, so set the broker's own `message_size_limit` below it.
fn transport_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_mul(4).max(1 << 20)
}

/// A message received from the broker, waiting to be processed and acknowledged.
#[derive(Debug, Clone)]
pub struct Message {
    /// The MQTT publish; its packet id is needed for the acknowledgement.
    pub publish: Publish,
    /// Time of receipt, Unix milliseconds.
    pub received_ms: i64,
    /// Broker session the message arrived in. A session ends when the broker reconnects
    /// without the stored session, and packet ids of an ended session may be reused.
    pub session: u64,
}

impl Message {
    /// Wraps a payload for offline processing (benchmarks, replay).
    pub fn offline(topic: &str, payload: impl Into<Vec<u8>>, received_ms: i64) -> Message {
        Message {
            publish: Publish::new(topic, QoS::AtMostOnce, payload),
            received_ms,
            session: 0,
        }
    }
}

/// A failure to set up the MQTT client.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The broker URL is invalid.
    #[error("{0}")]
    Url(String),
    /// A TLS file could not be read.
    #[error("failed to read TLS file '{path}': {source}")]
    TlsFile {
        /// File path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS was requested without a CA file.
    #[error("mqtt.ca_file is required for mqtts:// URLs")]
    MissingCa,
}

/// Builds the client options: persistent session, manual acknowledgements, limits.
///
/// # Errors
/// Returns an error when the URL is invalid or a TLS file cannot be read.
pub fn options(config: &MqttConfig) -> Result<MqttOptions, IngestError> {
    let address = BrokerAddress::parse(&config.url).map_err(IngestError::Url)?;
    let mut options = MqttOptions::new(&config.client_id, &address.host, address.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_request_channel_capacity(config.queue_capacity.max(16))
        .set_max_packet_size(transport_limit(config.max_payload_bytes), 1 << 20);
    if !config.username.is_empty() {
        options.set_credentials(&config.username, config.password.expose());
    }
    if address.tls {
        options.set_transport(Transport::Tls(tls(config)?));
    }
    Ok(options)
}

/// Selects ring as rustls's process-wide crypto provider. The dependency tree enables both ring
/// and aws-lc-rs, and rustls then refuses to choose and panics on the first TLS connection.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is what is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn tls(config: &MqttConfig) -> Result<TlsConfiguration, IngestError> {
    install_crypto_provider();
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| IngestError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let ca = read(config.ca_file.as_ref().ok_or(IngestError::MissingCa)?)?;
    let client_auth = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })
}

/// Maximum wait at shutdown for the pipeline to commit the messages it contains and return their
/// acknowledgements. Messages still unacknowledged after it stay with the broker, which delivers
/// them again to the next session.
const SHUTDOWN_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum wait for the disconnect packet to be written at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Next action of the ingest loop after an event.
enum Step {
    /// Poll the next event.
    Continue,
    /// Hand a message to the pipeline.
    Forward(Message),
    /// Wait before the next connection attempt.
    Retry(Duration),
}

/// Connects, subscribes and forwards messages until `shutdown` turns true.
///
/// Messages go to `messages`, a bounded queue: when the pipeline falls behind, polling pauses
/// and the broker holds the backlog. Acknowledgements arrive on `acks` once a message's effects
/// are committed. The event loop task does nothing else, so slow rules or storage never delay
/// keep-alives.
///
/// At shutdown it stops taking messages and closes `messages`, so the pipeline commits what it
/// holds and sends the last acknowledgements. It keeps the connection serviced until those are
/// queued on the client (at most 5 s) and only then disconnects, so a clean
/// stop leaves nothing committed but unacknowledged.
pub async fn run(
    config: MqttConfig,
    options: MqttOptions,
    messages: mpsc::Sender<Message>,
    acks: mpsc::UnboundedReceiver<Message>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (client, mut events) = AsyncClient::new(options, config.queue_capacity.max(16));
    let session = Arc::new(AtomicU64::new(0));
    let mut ack_task = tokio::spawn(forward_acks(acks, client.clone(), session.clone()));
    let mut backoff = Backoff::new(config.reconnect_min_ms, config.reconnect_max_ms);
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            event = events.poll() => event,
        };
        match handle_event(event, &client, &config, &metrics, &mut backoff, &session).await {
            Step::Continue => {}
            Step::Forward(message) => tokio::select! {
                _ = shutdown.changed() => break,
                sent = messages.send(message) => if sent.is_err() { break },
            },
            Step::Retry(delay) => tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(delay) => {}
            },
        }
    }

    // The pipeline ends once its queue is closed and drained.
    drop(messages);
    flush_acks(&mut events, &mut ack_task, &config).await;
    metrics.mqtt_connected.set(0);
    let _ = client.disconnect().await;
    drain_disconnect(&mut events).await;
}

/// Queues each acknowledgement on the client until the pipeline drops its sender. Messages of
/// an ended broker session are not acknowledged, because their packet ids may now belong to
/// other, uncommitted messages; the broker discarded them with the session.
async fn forward_acks(
    mut acks: mpsc::UnboundedReceiver<Message>,
    client: AsyncClient,
    session: Arc<AtomicU64>,
) {
    while let Some(message) = acks.recv().await {
        if message.session != session.load(Ordering::Acquire) {
            tracing::debug!(
                pkid = message.publish.pkid,
                "acknowledgement of an ended session dropped"
            );
            continue;
        }
        if let Err(error) = client.ack(&message.publish).await {
            tracing::debug!(%error, "failed to queue acknowledgement");
        }
    }
}

/// Polls the connection until every acknowledgement the pipeline sends is queued on the client.
/// Messages that arrive meanwhile are neither processed nor acknowledged.
async fn flush_acks(
    events: &mut EventLoop,
    ack_task: &mut tokio::task::JoinHandle<()>,
    config: &MqttConfig,
) {
    let deadline = tokio::time::sleep(SHUTDOWN_ACK_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!(
                    timeout_ms = SHUTDOWN_ACK_TIMEOUT.as_millis() as u64,
                    "pipeline did not finish before the shutdown timeout, so the broker keeps its \
                     unacknowledged messages for the next session"
                );
                ack_task.abort();
                return;
            }
            _ = &mut *ack_task => return,
            event = events.poll() => {
                if let Err(error) = event {
                    tracing::debug!(%error, "broker connection failed during shutdown");
                    let pause = config.reconnect_min_ms.min(1_000);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    }
}

/// Polls until the disconnect packet, and every request queued before it, has been written.
async fn drain_disconnect(events: &mut EventLoop) {
    let deadline = tokio::time::sleep(DISCONNECT_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            event = events.poll() => match event {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Handles one event-loop result and returns what the loop does next.
async fn handle_event(
    event: Result<Event, rumqttc::ConnectionError>,
    client: &AsyncClient,
    config: &MqttConfig,
    metrics: &Metrics,
    backoff: &mut Backoff,
    session: &AtomicU64,
) -> Step {
    match event {
        Ok(Event::Incoming(Incoming::Publish(publish))) => {
            metrics.readings_received.inc();
            let received_ms = chrono::Utc::now().timestamp_millis();
            return Step::Forward(Message {
                publish,
                received_ms,
                session: session.load(Ordering::Acquire),
            });
        }
        Ok(Event::Incoming(Incoming::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
            backoff.reset();
            metrics.mqtt_connected.set(1);
            if !ack.session_present {
                session.fetch_add(1, Ordering::AcqRel);
            }
            tracing::info!(url = %config.url, session_present = ack.session_present, "connected to broker");
            // A stored session can lack the subscriptions when the daemon stopped between the
            // connection and the subscription. Subscribing again replaces an identical
            // subscription without interrupting its flow (MQTT 3.1.1, 3.8.4), but resends
            // retained messages, which the register then classifies as duplicates.
            // The requests go through the client's request queue, which only this loop drains:
            // waiting here while acknowledgements fill that queue would stop the loop for good.
            tokio::spawn(subscribe(client.clone(), config.topics.clone()));
        }
        Ok(Event::Incoming(Incoming::SubAck(ack))) => {
            for code in &ack.return_codes {
                match code {
                    rumqttc::SubscribeReasonCode::Success(qos) => {
                        tracing::info!(pkid = ack.pkid, qos = ?qos, "subscription confirmed");
                    }
                    rumqttc::SubscribeReasonCode::Failure => {
                        tracing::error!(
                            pkid = ack.pkid,
                            "broker refused the subscription; check its ACL for this client"
                        );
                    }
                }
            }
        }
        Ok(_) => {}
        Err(error) => {
            metrics.mqtt_connected.set(0);
            metrics.mqtt_connection_errors.inc();
            let delay = backoff.next_delay();
            tracing::warn!(url = %config.url, %error, retry_in_ms = delay.as_millis() as u64, "broker connection failed");
            return Step::Retry(delay);
        }
    }
    Step::Continue
}

async fn subscribe(client: AsyncClient, topics: Vec<String>) {
    for topic in &topics {
        match client.subscribe(topic, QoS::AtLeastOnce).await {
            Ok(()) => tracing::info!(%topic, "subscribed"),
            Err(error) => tracing::error!(%topic, %error, "failed to subscribe"),
        }
    }
}

/// Capped exponential backoff for reconnects.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    current_ms: u64,
}

impl Backoff {
    /// Starts at `min_ms` and doubles up to `max_ms`.
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            min_ms,
            max_ms,
            current_ms: min_ms,
        }
    }

    /// Returns the next delay and doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current_ms;
        self.current_ms = (self.current_ms.saturating_mul(2)).min(self.max_ms);
        Duration::from_millis(delay)
    }

    /// Goes back to the first delay after a successful connection.
    pub fn reset(&mut self) {
        self.current_ms = self.min_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reconnect while the client's request queue is full of acknowledgements must not stop
    /// the event loop: the loop is the only thing that drains that queue.
    #[tokio::test]
    async fn connack_with_full_request_queue_does_not_block() {
        let options = MqttOptions::new("test", "127.0.0.1", 1);
        let (client, _events) = AsyncClient::new(options, 1);
        while client
            .try_publish("x", QoS::AtLeastOnce, false, vec![0u8])
            .is_ok()
        {}
        let config = MqttConfig::default();
        let metrics = Metrics::new();
        let mut backoff = Backoff::new(100, 500);
        let session = AtomicU64::new(0);
        let connack = rumqttc::ConnAck {
            session_present: true,
            code: ConnectReturnCode::Success,
        };
        let event = Ok(Event::Incoming(Incoming::ConnAck(connack)));
        let handled = handle_event(event, &client, &config, &metrics, &mut backoff, &session);
        let step = tokio::time::timeout(Duration::from_secs(2), handled).await;
        assert!(
            matches!(step, Ok(Step::Continue)),
            "the loop blocked on the full queue"
        );
        assert_eq!(metrics.mqtt_connected.get(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_cap_and_resets() {
        let mut b = Backoff::new(100, 500);
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn broker_url_forms() {
        let a = BrokerAddress::parse("mqtts://broker.example:8884").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker.example", 8884, true)
        );
        let b = BrokerAddress::parse("mqtt://127.0.0.1").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1883, false));
        assert!(BrokerAddress::parse("http://x:1").is_err());
        assert!(BrokerAddress::parse("mqtt://x:notaport").is_err());
    }
}
