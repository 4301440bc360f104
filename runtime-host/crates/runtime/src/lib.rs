//! The function runtime: runs Weir's WASM components (validators, and the query API's HTTP
//! handlers, alerters) in a sandbox.
//!
//! One [`FunctionEngine`] per process owns the wasmtime `Engine`, the pooling allocator, the
//! epoch ticker that enforces deadlines, the on-disk cache of compiled artifacts and the
//! linker with the host capabilities. A loaded function version is an `InstancePre` (compiled,
//! type-checked and linked once); every call gets a fresh `Store` and instance, so a call that
//! traps, loops or exhausts memory fails alone. [`FunctionSlot`] swaps versions atomically.
//!
//! [`capabilities`] are the host interfaces components may import (Spin's PostgreSQL, Redis
//! and variables), one module per capability in the shape of Spin's factors.
//!
//! Architecture invariant: this crate knows nothing of HTTP surfaces, ingest, storage schemas or
//! configuration files. It is given limits, grants and backends, and runs components; so a
//! change in the API or the pipeline never rebuilds its `bindgen!` expansions.

#![warn(missing_docs)]

pub mod alerter;
mod artifacts;
pub mod capabilities;
mod engine;
mod error;
pub mod http_handler;
mod instance;
mod limits;
pub mod signature;
mod slot;
pub mod validator;
mod version;

pub use alerter::AlerterFunction;
pub use engine::FunctionEngine;
pub use error::{CallError, LoadError};
pub use http_handler::HttpFunction;
pub use limits::Limits;
pub use slot::FunctionSlot;
pub use validator::ValidatorFunction;
pub use version::FunctionVersion;
