//! What every Weir function component shares: the reading types of the `weir:functions/types`
//! WIT interface ([`Value`], [`Point`]) as plain Rust, and, on wasm, the interface's bindings with
//! the conversions between the two, so that each component's `generate!` reuses them
//! (`with: { "weir:functions/types@0.1.0": weir_guest::wit::types }`) instead of mapping them by
//! hand.
//!
//! Architecture invariant: guests only. The host binds the same WIT with wasmtime; it never
//! depends on this crate.

#![warn(missing_docs)]

mod reading;

// The generated bindings use `unsafe` for the canonical ABI and carry the WIT's docs only where
// it has them; they are the only code allowed either.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs)]
pub mod wit;

pub use reading::{Point, Value};
