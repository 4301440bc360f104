//! Weir's runtime host: terminates device connections, runs the function components in a
//! sandbox, and stores what they accept. The `weir` binary is a thin shell over this library;
//! see `docs/ARCHITECTURE.md` for the map.

pub mod alerting;
pub mod api;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod device_api;
pub mod device_client;
pub mod functions;
pub mod host;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod registry;
pub mod serve;
pub mod simulate;
pub mod telemetry;

pub use config::Config;
