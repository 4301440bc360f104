//! What a device is answered once its batch is durable: the typed receipt, also stored with the
//! batch so that a resent copy gets the same answer, marked as a duplicate.

use serde::{Deserialize, Serialize};

/// The answer to a stored (or already stored) batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The device's batch id.
    pub batch: String,
    /// Points stored, or already stored with the same value.
    pub accepted: u64,
    /// Points refused, with their reasons, in batch order.
    pub rejected: Vec<Rejected>,
    /// Whether this batch id was already stored (nothing was stored again).
    pub duplicate: bool,
}

/// One point the validator rejected, or storage found in conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Position in the batch.
    pub index: usize,
    /// The point's key.
    pub key: String,
    /// Stable reason code.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}
