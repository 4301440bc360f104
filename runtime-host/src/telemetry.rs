//! Structured logs through `tracing`: human-readable by default, JSON for log collectors.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The filter without `WEIR_LOG`: `info`, but for the PostgreSQL server's notices, which
/// `tokio_postgres` logs at `info` and which idempotent DDL (`CREATE ... IF NOT EXISTS` at every
/// start and every command) fills with "already exists, skipping".
const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

/// Installs the global subscriber; the filter comes from `WEIR_LOG` (default [`DEFAULT_FILTER`]).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
