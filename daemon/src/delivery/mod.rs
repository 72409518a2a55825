//! Signed webhook delivery.

pub mod signer;
