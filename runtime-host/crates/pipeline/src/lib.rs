//! Weir's pipeline core: what happens to a device's batch between the bytes of its body and the
//! acknowledgement, and what follows from it.
//!
//! - [`ingest`]: parse a batch, judge it with the validator component, store it with its batch
//!   id in one PostgreSQL transaction, and only then acknowledge it ([`ingest::Receipt`]); merge
//!   the accepted points into the Redis latest values and hand them to alerting;
//! - [`alerting`]: evaluate accepted points with the alerter component against each
//!   organisation's rules, record state changes and events, and publish them;
//! - [`registry`]: which function versions and rule sets each region runs, staged deploys and
//!   rollbacks, and following the registry while serving;
//! - [`self_check`]: the probe every validator passes before it serves; [`clock`]: the time.
//!
//! Architecture invariant: no HTTP here. Results and errors are typed ([`ingest::IngestError`]
//! has a stable code and a kind, never a status); the surfaces turn them into JSON and status
//! codes. This crate must not depend on hyper or on `weir-surfaces`, and the function runtime,
//! storage and configuration must not depend on it.

#![warn(missing_docs)]

pub mod alerting;
pub mod clock;
pub mod ingest;
pub mod registry;
pub mod self_check;
