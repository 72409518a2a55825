//! Publishing telemetry to an MQTT broker with pacing and acknowledgement tracking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio::sync::watch;
use tokio::time::Instant;

use super::dataset::format_ms;
use super::{PublishArgs, PublishError, PublishSummary, TelemetryStream};
use crate::ingest::BrokerAddress;

/// Capacity of the request channel between the publishing loop and the event loop.
const REQUEST_CAPACITY: usize = 256;

/// Connection failures in a row after which the publisher gives up.
const MAX_CONNECT_ATTEMPTS: u32 = 8;

/// Delay before the first reconnect. It doubles with each failure up to [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(8);

/// Wall time between progress log lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes every message of `stream`, paced by `args.speedup`, and waits until all of them are
/// acknowledged.
pub(super) async fn publish_all(
    stream: TelemetryStream,
    args: &PublishArgs,
) -> Result<PublishSummary, PublishError> {
    let options = mqtt_options(args)?;
    let qos = qos(args.qos);
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);

    let sent = Arc::new(AtomicU64::new(0));
    let (acked_tx, mut acked_rx) = watch::channel(0u64);
    let driver = EventDriver {
        broker: args.broker.clone(),
        qos,
        sent: Arc::clone(&sent),
        acked: acked_tx,
    };
    let driver = tokio::spawn(driver.run(eventloop));

    let summary = match send(stream, &client, qos, args.speedup, &sent).await {
        Ok(summary) => summary,
        Err(source) => return Err(driver_error(driver, &args.broker, Some(source)).await),
    };

    // The watch channel closes when the event loop task ends, which it does before the
    // disconnect below only when the connection failed.
    let total = sent.load(Ordering::SeqCst);
    if acked_rx.wait_for(|acked| *acked >= total).await.is_err() {
        return Err(driver_error(driver, &args.broker, None).await);
    }
    tracing::info!(
        readings = total,
        broker = %args.broker,
        "replay finished, all publishes acknowledged"
    );

    // The event loop may already be gone after a broker disconnect, but every publish is already
    // acknowledged, so a failed disconnect loses nothing.
    let _ = client.disconnect().await;
    match driver.await {
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "MQTT connection failed after the last acknowledgement")
        }
        Err(error) => tracing::warn!(error = %error, "MQTT event loop task failed"),
        Ok(Ok(())) => {}
    }
    Ok(summary)
}

fn mqtt_options(args: &PublishArgs) -> Result<MqttOptions, PublishError> {
    let address =
        BrokerAddress::parse(&args.broker).map_err(|reason| PublishError::InvalidOption {
            option: "--broker",
            reason,
        })?;
    let mut options = MqttOptions::new(&args.client_id, address.host, address.port);
    if address.tls {
        // NOTE: rumqttc 0.25 builds this configuration from the platform's root certificates and
        // panics when it cannot read them. The TLS path has not been run against a broker.
        crate::ingest::install_crypto_provider();
        options.set_transport(Transport::tls_with_default_config());
    }

    // A persistent session lets the broker and the client resend unacknowledged publishes after
    // a reconnect instead of dropping them.
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(30));
    Ok(options)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Hands every message to the event loop at its paced wall time.
async fn send(
    stream: TelemetryStream,
    client: &AsyncClient,
    qos: QoS,
    speedup: f64,
    sent: &AtomicU64,
) -> Result<PublishSummary, rumqttc::ClientError> {
    let mut summary = PublishSummary::default();
    let started = Instant::now();
    let mut first_ts_ms = None;
    let mut next_progress = started + PROGRESS_INTERVAL;

    for message in stream {
        let first = *first_ts_ms.get_or_insert(message.ts_ms);
        if speedup > 0.0 {
            let data_secs = (message.ts_ms - first) as f64 / 1000.0;
            tokio::time::sleep_until(started + Duration::from_secs_f64(data_secs / speedup)).await;
        }

        tracing::debug!(
            meter = %message.meter_id,
            topic = %message.topic,
            ts_ms = message.ts_ms,
            "publishing reading"
        );
        client
            .publish(message.topic, qos, false, message.payload)
            .await?;
        sent.fetch_add(1, Ordering::SeqCst);
        summary.record(&message.meter_id, message.ts_ms);

        if Instant::now() >= next_progress {
            next_progress = Instant::now() + PROGRESS_INTERVAL;
            tracing::info!(
                published = summary.total_readings(),
                data_time = %format_ms(message.ts_ms),
                "replay progress"
            );
        }
    }
    Ok(summary)
}

/// Returns the event loop's own error when it failed, otherwise the client error if any.
async fn driver_error(
    driver: tokio::task::JoinHandle<Result<(), PublishError>>,
    broker: &str,
    client_error: Option<rumqttc::ClientError>,
) -> PublishError {
    let broker = broker.to_owned();
    match (driver.await, client_error) {
        (Ok(Err(error)), _) => error,
        (_, Some(source)) => PublishError::Client {
            broker,
            source: Box::new(source),
        },
        (_, None) => PublishError::EventLoopStopped { broker },
    }
}

/// Polls the event loop, reconnects with back-off and counts acknowledgements.
struct EventDriver {
    broker: String,
    qos: QoS,
    sent: Arc<AtomicU64>,
    acked: watch::Sender<u64>,
}

impl EventDriver {
    async fn run(self, mut eventloop: rumqttc::EventLoop) -> Result<(), PublishError> {
        let mut connected_before = false;
        let mut failures = 0u32;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.check_session(connected_before, ack.session_present)?;
                    connected_before = true;
                    failures = 0;
                    tracing::info!(
                        broker = %self.broker,
                        session_present = ack.session_present,
                        "connected to broker"
                    );
                }
                Ok(event) if self.is_completion(&event) => self.acked.send_modify(|n| *n += 1),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return Ok(()),
                Err(error) => {
                    failures += 1;
                    if failures >= MAX_CONNECT_ATTEMPTS {
                        return Err(PublishError::Connection {
                            broker: self.broker,
                            attempts: failures,
                            source: Box::new(error),
                        });
                    }
                    let delay = reconnect_delay(failures);
                    tracing::warn!(
                        broker = %self.broker,
                        attempt = failures,
                        error = %error,
                        delay_ms = delay.as_millis() as u64,
                        "MQTT connection failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Returns true for the event that completes one publish at the configured QoS.
    fn is_completion(&self, event: &Event) -> bool {
        matches!(
            (self.qos, event),
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_)))
        )
    }

    /// Rejects a reconnect that lost the session while publishes were unacknowledged, because
    /// rumqttc then drops them.
    fn check_session(
        &self,
        connected_before: bool,
        session_present: bool,
    ) -> Result<(), PublishError> {
        let unacknowledged = self
            .sent
            .load(Ordering::SeqCst)
            .saturating_sub(*self.acked.borrow());
        if connected_before && !session_present && unacknowledged > 0 {
            return Err(PublishError::SessionLost {
                broker: self.broker.clone(),
                unacknowledged,
            });
        }
        Ok(())
    }
}

fn reconnect_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(8);
    (FIRST_RECONNECT_DELAY * factor).min(MAX_RECONNECT_DELAY)
}
