//! The issuing side of the device PKI: the only code that holds the CA key. Edge hosts never
//! load it; they queue device renewals in the PKI ledger (PostgreSQL, shared by every region)
//! and follow the CRL the ledger holds.
//!
//! - [`signer`]: `weir ca serve`, the issuing service: answers queued renewals and keeps the
//!   CRL fresh.
//! - [`ledger`]: the operator's PKI actions that touch the ledger (enrol a device, revoke one,
//!   publish a CRL), shared by `weir pki`, the signer and the tests.
//!
//! What a compromised edge host can do is bounded by what the ledger lets it ask: see
//! `docs/SECURITY.md` ("Device PKI").

pub mod ledger;
pub mod signer;

pub use ledger::{Revocation, enrol_device, publish_crl, revoke_device};
pub use signer::{RunningSigner, Signer};
