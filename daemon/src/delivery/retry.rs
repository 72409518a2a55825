//! The retry policy after an attempt: backoff with full jitter, `Retry-After`, the dead-letter
//! deadline and 410 Gone. Functions that depend on time take the current time as an argument.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::config::DeliveryConfig;
use crate::store::outbox::Delivery;

/// Outcome of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver returned a 2xx status.
    Delivered {
        /// HTTP status code.
        status: u16,
    },
    /// The receiver returned another status.
    Rejected {
        /// HTTP status code.
        status: u16,
        /// Delay requested by `Retry-After` on a 429 or 503 response.
        retry_after: Option<Duration>,
    },
    /// No response: connection refused, timeout, TLS failure and the like.
    Failed {
        /// Error message.
        error: String,
    },
}

/// Next step for a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delete it from the outbox.
    Complete,
    /// Try again at `next_attempt_ms`.
    Retry {
        /// Next attempt time, Unix milliseconds.
        next_attempt_ms: i64,
        /// Error of this attempt.
        error: String,
    },
    /// Move it to the dead-letter table.
    DeadLetter {
        /// Error of the last attempt.
        error: String,
    },
    /// The endpoint is gone: disable the webhook and move its deliveries to the dead-letter
    /// table.
    Disable {
        /// Error of this attempt, [`GONE_ERROR`].
        error: String,
    },
}

/// Last error of the deliveries that a 410 Gone response dead-letters.
pub const GONE_ERROR: &str = "endpoint returned 410 Gone";

/// Decides what follows an attempt that ended at `now_ms`. `delivery.attempts` counts the
/// attempts before this one.
///
/// A 410 Gone response disables the webhook, whatever the delivery's age, because the receiver
/// states that the endpoint will not come back. A failed delivery older than `max_age_secs` goes
/// to the dead-letter table. Otherwise a `Retry-After` delay is used when present, capped at
/// `max_retry_after_secs` and raised to at least `initial_backoff_ms`. Without one,
/// [`backoff_ms`] applies, and the retry is moved no later than just past the age limit, so the
/// last attempt happens when the limit is reached.
pub fn decide(
    delivery: &Delivery,
    result: &AttemptResult,
    now_ms: i64,
    config: &DeliveryConfig,
    rng: &mut impl Rng,
) -> Decision {
    let (error, retry_after) = match result {
        AttemptResult::Delivered { .. } => return Decision::Complete,
        AttemptResult::Rejected { status: 410, .. } => {
            return Decision::Disable {
                error: GONE_ERROR.to_owned(),
            };
        }
        AttemptResult::Rejected {
            status,
            retry_after,
        } => (
            format!("receiver returned HTTP status {status}"),
            *retry_after,
        ),
        AttemptResult::Failed { error } => (error.clone(), None),
    };

    let max_age_ms = to_i64(config.max_age_secs.saturating_mul(1000));
    let deadline_ms = delivery.created_ms.saturating_add(max_age_ms);
    if now_ms > deadline_ms {
        return Decision::DeadLetter { error };
    }

    let next_attempt_ms = match retry_after {
        Some(delay) => {
            let cap = Duration::from_secs(config.max_retry_after_secs);
            let floor = Duration::from_millis(config.initial_backoff_ms);
            now_ms.saturating_add(to_i64_ms(delay.min(cap).max(floor)))
        }
        None => {
            let attempts = delivery.attempts.saturating_add(1);
            let backoff = to_i64(backoff_ms(attempts, config, rng));
            now_ms
                .saturating_add(backoff)
                .min(deadline_ms.saturating_add(1))
        }
    };
    Decision::Retry {
        next_attempt_ms,
        error,
    }
}

/// Returns the delay before the next attempt after `attempts` failed ones: a uniform random
/// value between 0 and `initial_backoff_ms * 2^(attempts - 1)`, capped at `max_backoff_ms`
/// ("full jitter").
pub fn backoff_ms(attempts: u32, config: &DeliveryConfig, rng: &mut impl Rng) -> u64 {
    let doublings = attempts.saturating_sub(1);
    let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
    let ceiling = config
        .initial_backoff_ms
        .saturating_mul(factor)
        .min(config.max_backoff_ms);
    rng.random_range(0..=ceiling)
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date, which is measured from `now`.
/// A date in the past gives a zero delay. Returns `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A value too large for u64 is still a valid, very long delay.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_i64_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
