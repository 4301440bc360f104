//! Integration tests of `weir-storage` against real PostgreSQL and Redis servers: one test
//! binary (linked once), one module per subject. Every test starts throw-away servers of its
//! own, so tests run in parallel and may stop and restart their servers.

mod batches;
mod followups;
mod latest;
mod metadata;
mod outages;
mod schema;
mod support;
mod tokens;
