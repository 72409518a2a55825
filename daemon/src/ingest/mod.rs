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
        if let Some((_, host)) = rest.rsplit_once('@') {
            // The message leaves out the user part, which would put the password in the logs.
            let scheme = if tls { "mqtts" } else { "mqtt" };
            return Err(format!(
                "invalid broker URL '{scheme}://…@{host}': credentials in the URL are not \
                 supported, set mqtt.username and mqtt.password instead"
            ));
        }
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
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, MqttOptions, Outgoing, Packet,
    PubAck, PubRec, Publish, QoS, Request, TlsConfiguration, Transport,
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

/// The acknowledgement of a committed message: all the broker needs to release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Packet id of the publish.
    pub pkid: u16,
    /// QoS of the delivery: 1 takes a PUBACK, 2 a PUBREC.
    pub qos: QoS,
    /// Broker session the publish arrived in.
    pub session: u64,
}

impl Ack {
    fn packet(self) -> Packet {
        match self.qos {
            QoS::ExactlyOnce => Packet::PubRec(PubRec::new(self.pkid)),
            _ => Packet::PubAck(PubAck::new(self.pkid)),
        }
    }

    fn request(self) -> Request {
        match self.qos {
            QoS::ExactlyOnce => Request::PubRec(PubRec::new(self.pkid)),
            _ => Request::PubAck(PubAck::new(self.pkid)),
        }
    }
}

impl Message {
    /// Returns the acknowledgement the message needs once committed, or `None` for QoS 0.
    pub fn ack(&self) -> Option<Ack> {
        (self.publish.qos != QoS::AtMostOnce).then_some(Ack {
            pkid: self.publish.pkid,
            qos: self.publish.qos,
            session: self.session,
        })
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

/// Maximum wait for written acknowledgements to reach the socket. After it they stay in the
/// connection's write buffer and go out with its next flush.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Acknowledgements written before each flush.
const ACK_BATCH: usize = 1_024;

/// Next action of the ingest loop after an event.
enum Step {
    /// Poll the next event.
    Continue,
    /// Hand a message to the pipeline.
    Forward(Message),
    /// Wait before the next connection attempt.
    Retry(Duration),
}

/// Cause of the ingest loop waking up.
enum Wake<T> {
    Shutdown,
    /// An acknowledgement, or `None` once the pipeline has stopped.
    Ack(Option<Ack>),
    /// The other awaited result: an event, or room in the pipeline queue.
    Other(T),
    /// Half a keep-alive period passed while the loop waited for room in the pipeline queue.
    Ping,
}

/// Connects, subscribes and forwards messages until `shutdown` turns true.
///
/// Messages go to `messages`, a bounded queue: when the pipeline falls behind, the loop stops
/// reading from the connection and the backlog stays at the broker. Acknowledgements arrive on
/// `acks` once a message's effects are committed. The loop writes them to the connection ahead
/// of reading anything more, also while it waits for room in the queue, so a backlog at the
/// broker never piles up acknowledgements in the daemon. Nothing else runs on this task, so slow
/// rules or storage never delay keep-alives.
///
/// At shutdown it stops taking messages and closes `messages`, so the pipeline commits what it
/// holds and sends the last acknowledgements. It keeps the connection serviced until those are
/// written (at most 5 s) and only then disconnects, so a clean stop leaves nothing committed but
/// unacknowledged.
pub async fn run(
    config: MqttConfig,
    options: MqttOptions,
    messages: mpsc::Sender<Message>,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (client, mut events) = AsyncClient::new(options, config.queue_capacity.max(16));
    let mut session = 0;
    let mut acks_open = true;
    let mut backoff = Backoff::new(config.reconnect_min_ms, config.reconnect_max_ms);
    let ping_every = Duration::from_secs(config.keep_alive_secs.max(5)) / 2;
    'run: loop {
        // While disconnected, acknowledgements wait in the channel, so that they cannot keep
        // interrupting the connection attempt.
        let connected = events.network.is_some();
        let wake = tokio::select! {
            biased;
            _ = shutdown.changed() => Wake::Shutdown,
            ack = acks.recv(), if acks_open && connected => Wake::Ack(ack),
            event = events.poll() => Wake::Other(event),
        };
        let event = match wake {
            Wake::Shutdown => break,
            Wake::Ack(ack) => {
                acks_open = write_acks(&mut events, ack, &mut acks, session, &metrics).await;
                continue;
            }
            Wake::Other(event) => event,
            Wake::Ping => continue,
        };
        if let Ok(Event::Incoming(_)) = event {
            // Any packet from the broker shows the connection is alive. During a backlog the
            // ping response queues behind messages this loop reads only as fast as the pipeline
            // takes them, and rumqttc would drop the connection at the next keep-alive tick.
            events.state.await_pingresp = false;
        }
        match handle_event(
            event,
            &client,
            &config,
            &metrics,
            &mut backoff,
            &mut session,
        ) {
            Step::Continue => {}
            Step::Forward(message) => {
                // rumqttc pings only while it is polled, so the loop pings the broker itself
                // while it waits, or the broker drops the connection after 1.5 keep-alive
                // periods without a packet.
                let ping = tokio::time::sleep(ping_every);
                tokio::pin!(ping);
                let permit = loop {
                    let connected = events.network.is_some();
                    let wake = tokio::select! {
                        biased;
                        _ = shutdown.changed() => Wake::Shutdown,
                        ack = acks.recv(), if acks_open && connected => Wake::Ack(ack),
                        permit = messages.reserve() => Wake::Other(permit),
                        _ = &mut ping, if connected => Wake::Ping,
                    };
                    match wake {
                        Wake::Shutdown | Wake::Other(Err(_)) => break 'run,
                        Wake::Ack(ack) => {
                            acks_open =
                                write_acks(&mut events, ack, &mut acks, session, &metrics).await;
                        }
                        Wake::Ping => {
                            ping_broker(&mut events).await;
                            ping.as_mut()
                                .reset(tokio::time::Instant::now() + ping_every);
                        }
                        Wake::Other(Ok(permit)) => break permit,
                    }
                };
                permit.send(message);
            }
            Step::Retry(delay) => tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(delay) => {}
            },
        }
    }

    // The pipeline ends once its queue is closed and drained.
    drop(messages);
    if acks_open {
        flush_acks(&mut events, &mut acks, session, &config, &metrics).await;
    }
    metrics.mqtt_connected.set(0);
    let _ = client.disconnect().await;
    drain_disconnect(&mut events).await;
}

/// Writes `first` and the acknowledgements already waiting behind it (up to [`ACK_BATCH`]) to
/// the connection and flushes it. Returns false when `first` is `None`, that is when the
/// pipeline has stopped.
///
/// Acknowledgements of an ended broker session are dropped, because their packet ids may now
/// belong to other, uncommitted messages. The broker discarded those messages with the session. Those
/// that cannot be written wait in the event loop's pending queue, which a reconnect that
/// resumes the session sends first and a new session clears.
async fn write_acks(
    events: &mut EventLoop,
    first: Option<Ack>,
    acks: &mut mpsc::UnboundedReceiver<Ack>,
    session: u64,
    metrics: &Metrics,
) -> bool {
    let Some(first) = first else {
        return false;
    };
    let mut next = Some(first);
    let mut written = 0;
    while let Some(ack) = next {
        if ack.session != session {
            metrics.mqtt_acks_dropped.inc();
            tracing::debug!(
                pkid = ack.pkid,
                "acknowledgement of an ended session dropped"
            );
        } else if let Some(network) = events.network.as_mut() {
            if let Err(error) = network.write(ack.packet()).await {
                tracing::debug!(%error, pkid = ack.pkid, "failed to write acknowledgement, so it is sent after the reconnect");
                events.pending.push_back(ack.request());
            } else {
                written += 1;
            }
        } else {
            events.pending.push_back(ack.request());
        }
        if written >= ACK_BATCH {
            break;
        }
        next = acks.try_recv().ok();
    }
    if let Some(network) = events.network.as_mut() {
        match tokio::time::timeout(ACK_FLUSH_TIMEOUT, network.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "failed to flush acknowledgements"),
            Err(_) => tracing::debug!(
                "timed out flushing acknowledgements, so they stay in the write buffer"
            ),
        }
    }
    metrics.mqtt_acks.inc_by(written as u64);
    true
}

/// Writes a PINGREQ to the connection. The PINGRESP is read with the next poll.
async fn ping_broker(events: &mut EventLoop) {
    let Some(network) = events.network.as_mut() else {
        return;
    };
    let written = match network.write(Packet::PingReq).await {
        Ok(()) => tokio::time::timeout(ACK_FLUSH_TIMEOUT, network.flush()).await,
        Err(error) => Ok(Err(error)),
    };
    match written {
        Ok(Ok(())) => tracing::debug!("pinged the broker while the pipeline queue is full"),
        Ok(Err(error)) => tracing::debug!(%error, "failed to ping the broker"),
        Err(_) => tracing::debug!("timed out flushing a ping to the broker"),
    }
}

/// Services the connection until the pipeline has sent its last acknowledgement and all are
/// written. Messages that arrive meanwhile are neither processed nor acknowledged.
async fn flush_acks(
    events: &mut EventLoop,
    acks: &mut mpsc::UnboundedReceiver<Ack>,
    session: u64,
    config: &MqttConfig,
    metrics: &Metrics,
) {
    let deadline = tokio::time::sleep(SHUTDOWN_ACK_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        let connected = events.network.is_some();
        let wake = tokio::select! {
            biased;
            _ = &mut deadline => Wake::Shutdown,
            ack = acks.recv(), if connected => Wake::Ack(ack),
            event = events.poll() => Wake::Other(event),
        };
        match wake {
            Wake::Shutdown => {
                tracing::warn!(
                    timeout_ms = SHUTDOWN_ACK_TIMEOUT.as_millis() as u64,
                    "pipeline did not finish before the shutdown timeout, so the broker keeps its \
                     unacknowledged messages for the next session"
                );
                return;
            }
            Wake::Ack(ack) => {
                if !write_acks(events, ack, acks, session, metrics).await {
                    return;
                }
            }
            Wake::Other(Err(error)) => {
                tracing::debug!(%error, "broker connection failed during shutdown");
                let pause = config.reconnect_min_ms.min(1_000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Wake::Other(Ok(_)) | Wake::Ping => {}
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
fn handle_event(
    event: Result<Event, rumqttc::ConnectionError>,
    client: &AsyncClient,
    config: &MqttConfig,
    metrics: &Metrics,
    backoff: &mut Backoff,
    session: &mut u64,
) -> Step {
    match event {
        Ok(Event::Incoming(Incoming::Publish(publish))) => {
            metrics.readings_received.inc();
            let received_ms = chrono::Utc::now().timestamp_millis();
            return Step::Forward(Message {
                publish,
                received_ms,
                session: *session,
            });
        }
        Ok(Event::Incoming(Incoming::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
            backoff.reset();
            metrics.mqtt_connected.set(1);
            if !ack.session_present {
                *session += 1;
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
        // Acknowledgements that waited for a reconnect go out through the event loop.
        Ok(Event::Outgoing(Outgoing::PubAck(_) | Outgoing::PubRec(_))) => {
            metrics.mqtt_acks.inc();
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

    /// A new broker session starts a new session number, so acknowledgements of messages from
    /// the ended one are dropped; a resumed session keeps the number.
    #[tokio::test]
    async fn connack_numbers_sessions() {
        let options = MqttOptions::new("test", "127.0.0.1", 1);
        let (client, _events) = AsyncClient::new(options, 16);
        let config = MqttConfig::default();
        let metrics = Metrics::new();
        let mut backoff = Backoff::new(100, 500);
        let mut session = 0;
        for (session_present, expected) in [(false, 1), (true, 1), (false, 2)] {
            let connack = rumqttc::ConnAck {
                session_present,
                code: ConnectReturnCode::Success,
            };
            let event = Ok(Event::Incoming(Incoming::ConnAck(connack)));
            let step = handle_event(
                event,
                &client,
                &config,
                &metrics,
                &mut backoff,
                &mut session,
            );
            assert!(matches!(step, Step::Continue));
            assert_eq!(session, expected, "after session_present={session_present}");
        }
        assert_eq!(metrics.mqtt_connected.get(), 1);
        let publish = Publish::new("meters/a/b/telemetry", QoS::AtLeastOnce, vec![1u8]);
        let event = Ok(Event::Incoming(Incoming::Publish(publish)));
        match handle_event(
            event,
            &client,
            &config,
            &metrics,
            &mut backoff,
            &mut session,
        ) {
            Step::Forward(message) => assert_eq!(message.session, 2),
            _ => panic!("a publish is not forwarded"),
        }
    }

    #[test]
    fn ack_follows_delivery_qos() {
        let mut message = Message::offline("meters/a/b/telemetry", vec![1u8], 0);
        assert_eq!(message.ack(), None, "QoS 0 takes no acknowledgement");
        message.publish.qos = QoS::AtLeastOnce;
        message.publish.pkid = 7;
        message.session = 3;
        let ack = message.ack().unwrap();
        assert_eq!((ack.pkid, ack.session), (7, 3));
        assert_eq!(ack.packet(), Packet::PubAck(PubAck::new(7)));
        message.publish.qos = QoS::ExactlyOnce;
        assert_eq!(
            message.ack().unwrap().packet(),
            Packet::PubRec(PubRec::new(7))
        );
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
        let error = BrokerAddress::parse("mqtt://alice:Pw-9911@127.0.0.1:1883").unwrap_err();
        assert!(error.contains("mqtt.username"), "{error}");
        assert!(!error.contains("Pw-9911"), "the password leaks: {error}");
    }
}
