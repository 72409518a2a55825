//! A webhook receiver that verifies each request's signature and records what arrived.
//!
//! The demo command runs it to print one line per verified alert, and tests run it to script the
//! responses that the delivery worker gets: for example 503, 503 and then 200, or 429 with a
//! `Retry-After` header.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::signer::{DEFAULT_TOLERANCE_SECS, SecretError, Signer, VerifyError};

/// Time [`Receiver::shutdown`] waits for open connections before closing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A receiver that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The signing secret is invalid.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One scripted response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Retry-After` header value, if any.
    pub retry_after: Option<String>,
}

impl Reply {
    /// Builds a response with only a status code.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
        }
    }

    /// Builds a response with a status code and a `Retry-After` header.
    pub fn retry_after(status: u16, value: impl Into<String>) -> Reply {
        Reply {
            status,
            retry_after: Some(value.into()),
        }
    }
}

/// Scripted responses and output settings of a receiver.
#[derive(Debug, Clone)]
pub struct Behaviour {
    replies: Vec<Reply>,
    print: bool,
    tolerance_secs: i64,
}

impl Behaviour {
    /// Returns 200 for every verified request.
    pub fn accept() -> Behaviour {
        Behaviour::replies(vec![Reply::status(200)])
    }

    /// Returns `replies` for verified requests in order, then repeats the last one. An empty
    /// list returns 200.
    pub fn replies(replies: Vec<Reply>) -> Behaviour {
        Behaviour {
            replies,
            print: false,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }

    /// Prints one line per verified request to standard output.
    pub fn printing(self) -> Behaviour {
        Behaviour {
            print: true,
            ..self
        }
    }

    /// Sets the accepted distance between `webhook-timestamp` and the receiver's clock, in
    /// seconds. The default is [`DEFAULT_TOLERANCE_SECS`].
    pub fn tolerance_secs(self, tolerance_secs: i64) -> Behaviour {
        Behaviour {
            tolerance_secs,
            ..self
        }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct ReceivedDelivery {
    /// `webhook-id` header.
    pub id: Option<String>,
    /// `webhook-timestamp` header.
    pub timestamp: Option<String>,
    /// `webhook-signature` header.
    pub signature: Option<String>,
    /// Every request header.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// The body parsed as JSON, or `None` when it is not JSON.
    pub json: Option<Value>,
    /// True when the signature and timestamp verified.
    pub signature_valid: bool,
    /// Verification error, or `None` when the request verified.
    pub verify_error: Option<String>,
    /// Status code the receiver answered with.
    pub status: u16,
    /// Arrival time on the receiver's monotonic clock.
    pub received_at: Instant,
}

struct Shared {
    signer: Signer,
    behaviour: Behaviour,
    received: Mutex<Vec<ReceivedDelivery>>,
    /// Number of recorded requests, for [`Receiver::wait_for`].
    count: watch::Sender<usize>,
}

/// A running receiver. It stops on [`Receiver::shutdown`] or when dropped.
pub struct Receiver {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on `addr` that accepts POST requests on every path. Use port 0 to pick
    /// a free port; the bound address is returned.
    ///
    /// Requests that fail verification are answered with 401 and recorded. Verified ones get the
    /// next scripted reply.
    ///
    /// # Errors
    /// Returns an error when the secret is invalid or the address cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        secret: &str,
        behaviour: Behaviour,
    ) -> Result<(SocketAddr, Receiver), ReceiverError> {
        let signer = Signer::from_secret(secret)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ReceiverError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ReceiverError::Bind { addr, source })?;

        let shared = Arc::new(Shared {
            signer,
            behaviour,
            received: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "webhook receiver failed");
            }
        });
        Ok((
            bound,
            Receiver {
                shared,
                stop: Some(stop),
                task,
            },
        ))
    }

    /// Returns every request recorded so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedDelivery> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `count` requests were recorded and returns them all.
    ///
    /// # Errors
    /// Returns the requests recorded so far when `timeout` passes first.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedDelivery>, Vec<ReceivedDelivery>> {
        let mut counter = self.shared.count.subscribe();
        let reached = tokio::time::timeout(timeout, counter.wait_for(|n| *n >= count)).await;
        match reached {
            Ok(Ok(_)) => Ok(self.received()),
            _ => Err(self.received()),
        }
    }

    /// Stops accepting requests and waits briefly for open connections to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let id = text("webhook-id");
    let timestamp = text("webhook-timestamp");
    let signature = text("webhook-signature");
    let verify_error = verify(
        &shared,
        id.as_deref(),
        timestamp.as_deref(),
        signature.as_deref(),
        &body,
    )
    .err();
    let signature_valid = verify_error.is_none();

    let mut received = shared
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let reply = if signature_valid {
        scripted_reply(&shared.behaviour.replies, &received)
    } else {
        Reply::status(401)
    };
    let json = serde_json::from_slice::<Value>(&body).ok();
    if signature_valid && shared.behaviour.print {
        println!("{}", summary(id.as_deref().unwrap_or("-"), json.as_ref()));
    }
    received.push(ReceivedDelivery {
        id,
        timestamp,
        signature,
        headers,
        body,
        json,
        signature_valid,
        verify_error,
        status: reply.status,
        received_at: Instant::now(),
    });
    let count = received.len();
    drop(received);
    shared.count.send_replace(count);

    response(&reply)
}

fn verify(
    shared: &Shared,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let missing = |name| VerifyError::MissingHeader(name).to_string();
    let id = id.ok_or_else(|| missing("webhook-id"))?;
    let timestamp = timestamp.ok_or_else(|| missing("webhook-timestamp"))?;
    let signature = signature.ok_or_else(|| missing("webhook-signature"))?;
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let now_secs = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let tolerance = shared.behaviour.tolerance_secs;
    shared
        .signer
        .verify(id, timestamp, signature, body, now_secs, tolerance)
        .map_err(|e| e.to_string())
}

/// Picks the reply for the next verified request: the scripted replies in order, then the last
/// one again.
fn scripted_reply(replies: &[Reply], received: &[ReceivedDelivery]) -> Reply {
    let verified = received.iter().filter(|r| r.signature_valid).count();
    let index = verified.min(replies.len().saturating_sub(1));
    replies.get(index).cloned().unwrap_or(Reply::status(200))
}

fn response(reply: &Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match &reply.retry_after {
        Some(value) => (status, [(header::RETRY_AFTER, value.clone())]).into_response(),
        None => status.into_response(),
    }
}

/// Formats one line for a verified alert: event type, severity, region/meter, kind, message.
fn summary(id: &str, json: Option<&Value>) -> String {
    let Some(json) = json else {
        return format!("{id} (body is not JSON)");
    };
    let field = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let data = json.get("data").cloned().unwrap_or(Value::Null);
    format!(
        "{} {} {} {}/{} {}: {} ({id})",
        field(json, "type"),
        field(&data, "id"),
        field(&data, "severity"),
        field(&data, "region"),
        field(&data, "meter"),
        field(&data, "kind"),
        field(&data, "message"),
    )
}
