//! Standard Webhooks signatures.

/// Signs webhook messages.
pub struct Signer {}

impl Signer {
    /// Builds a signer from a `whsec_<base64>` secret.
    ///
    /// # Errors
    /// Returns a message when the secret is not in that form.
    pub fn from_secret(secret: &str) -> Result<Signer, String> {
        if secret.starts_with("whsec_") { Ok(Signer {}) } else { Err("expected whsec_<base64>".into()) }
    }
}
