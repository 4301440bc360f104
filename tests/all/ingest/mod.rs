//! End-to-end device ingest: a real host (mutual TLS, HTTP/2, the validator component,
//! PostgreSQL and Redis) driven the way devices drive it, checked against what reaches storage.

pub(crate) mod harness;

mod fleet;
mod identity;
mod limits;
mod metadata;
mod observability;
mod outages;
mod reload;
mod renewal;
mod submit;
mod transport;
