//! Standard Webhooks signatures: HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`.
//!
//! The scheme is specified in `spec/standard-webhooks.md` of the Standard Webhooks repository
//! (github.com/standard-webhooks/standard-webhooks, version 1.0.0). A signature is written
//! `v1,<base64>`, and the `webhook-signature` header carries one or more of them separated by
//! spaces, so a receiver can accept both keys while a secret is being rotated.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Version identifier of an HMAC-SHA256 signature.
pub const SIGNATURE_VERSION: &str = "v1";

/// Smallest accepted key, in bytes. The specification requires at least 24 random bytes.
pub const MIN_KEY_BYTES: usize = 24;

/// Replay tolerance that the reference libraries use, in seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// A secret that cannot be used for signing. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret does not start with `whsec_`.
    #[error("invalid webhook secret (value hidden): expected the form whsec_<base64>")]
    MissingPrefix,
    /// The part after `whsec_` is not standard base64.
    #[error(
        "invalid webhook secret (value hidden): expected whsec_<base64>, but the part after \
         whsec_ is not standard base64"
    )]
    InvalidBase64,
    /// The decoded key is too short.
    #[error(
        "invalid webhook secret (value hidden): the key is {bytes} bytes, expected \
         whsec_<base64> of at least {MIN_KEY_BYTES} random bytes"
    )]
    TooShort {
        /// Decoded key length in bytes.
        bytes: usize,
    },
}

/// A request whose signature headers do not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is missing or not visible ASCII.
    #[error("missing or invalid header '{0}'")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("invalid webhook-timestamp '{0}', expected Unix seconds")]
    InvalidTimestamp(String),
    /// `webhook-timestamp` is further from the receiver's clock than the tolerance.
    #[error(
        "webhook-timestamp is {offset_secs} s from the current time, \
         tolerance is {tolerance_secs} s"
    )]
    OutsideTolerance {
        /// Timestamp minus the current time, in seconds.
        offset_secs: i64,
        /// Allowed distance, in seconds.
        tolerance_secs: i64,
    },
    /// No `v1` signature in the header matches the body.
    #[error("no matching v1 signature in webhook-signature")]
    NoMatchingSignature,
}

/// Signs and verifies webhook messages with one endpoint's key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Signer {
    /// Builds a signer from a `whsec_<base64>` secret.
    ///
    /// # Errors
    /// Returns an error naming the expected form, but not the value, when the prefix is missing,
    /// the rest is not standard base64 or the decoded key is shorter than [`MIN_KEY_BYTES`].
    pub fn from_secret(secret: &str) -> Result<Signer, SecretError> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretError::TooShort { bytes: key.len() });
        }
        Ok(Signer { key })
    }

    /// Signs one message and returns the `v1,<base64>` signature.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let tag = self
            .mac(msg_id, timestamp_secs, body)
            .finalize()
            .into_bytes();
        format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag))
    }

    /// Verifies the three Standard Webhooks header values against a body.
    ///
    /// `signatures` is the `webhook-signature` value: space-separated `version,base64` entries.
    /// Entries of other versions, such as `v1a`, are skipped. Signatures are compared in constant
    /// time. The timestamp must lie within `tolerance_secs` of `now_secs` in either direction.
    ///
    /// # Errors
    /// Returns why the request does not verify: an unparsable timestamp, a timestamp outside the
    /// tolerance, or no matching signature.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now_secs: i64,
        tolerance_secs: i64,
    ) -> Result<(), VerifyError> {
        let timestamp_secs: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::InvalidTimestamp(timestamp.to_owned()))?;

        let offset_secs = timestamp_secs.saturating_sub(now_secs);
        if offset_secs.unsigned_abs() > tolerance_secs.unsigned_abs() {
            return Err(VerifyError::OutsideTolerance {
                offset_secs,
                tolerance_secs,
            });
        }

        let mac = self.mac(msg_id, timestamp_secs, body);
        let matches = signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == SIGNATURE_VERSION)
            .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
            // `verify_slice` compares in constant time.
            .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
        if matches {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }

    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}
