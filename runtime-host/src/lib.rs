//! The `weir` binary's library: the composition root. It reads the configuration, builds every
//! part from the crates below and wires them together ([`host`]), and holds the command line
//! ([`cli`]), `weir serve` ([`serve`]), the issuing side of the device PKI ([`ca`]) and the
//! hosts' follower of its ledger ([`pki_follower`]), the device simulator ([`simulate`]) and the device client
//! it uses ([`device_client`]).
//!
//! Architecture invariant: nothing depends on this crate but its binary and the tests; the
//! layers live in `runtime-host/crates/` (see `docs/ARCHITECTURE.md`), and this crate only
//! wires them.

#![warn(missing_docs)]

pub mod ca;
pub mod cli;
pub mod device_client;
pub mod endpoints;
pub mod host;
pub mod listening;
pub mod pki_follower;
pub mod serve;
pub mod simulate;
pub mod telemetry;

pub use weir_config::Config;
