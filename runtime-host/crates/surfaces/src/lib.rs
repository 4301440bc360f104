//! Weir's HTTP surfaces: everything that speaks HTTP to devices and API users.
//!
//! - [`http`]: the plumbing every surface shares: the one error answer ([`http::ApiError`],
//!   `{"error": {"code", "message"}}`), bodies with size limits and gzip, the accept loops of the
//!   device (mutual TLS), HTTPS and plain listeners, and their graceful drain;
//! - [`device_api`]: `POST /v1/submit`, device metadata and certificate renewal, for the device
//!   the client certificate names;
//! - [`api`]: health, readiness, metrics, the query API (bearer tokens, served by the query
//!   component, with the host's answer cache), alert events and their live stream.
//!
//! Architecture invariant: this is the only crate that turns typed results of the pipeline into
//! status codes and JSON bodies, and no internal error text (SQL, Redis, file paths) crosses it:
//! clients get a stable code and a message written for them. Nothing below depends on it.

#![warn(missing_docs)]

pub mod api;
pub mod device_api;
pub mod http;

#[cfg(test)]
mod properties;
