//! The one error type of the storage boundary, with stable codes for the API to report.
//!
//! What matters most to a caller is whether a failure is the database being out of reach
//! ([`StorageError::Unavailable`]: connection refused or lost, pool exhausted, timeout), which the
//! device API answers with 503 so that devices keep their points and retry later, or something
//! else. Driver errors are classified here, once, so the rest of the crate just uses `?`.

use std::error::Error as StdError;
use std::io;

use tokio_postgres::error::SqlState;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// PostgreSQL or Redis cannot be reached, or has no capacity left (pool exhausted, timeout).
    /// Nothing was stored; the same request can be retried later.
    #[error("{0}")]
    Unavailable(String),
    /// A PostgreSQL statement failed for another reason than availability.
    #[error("PostgreSQL query failed: {0}")]
    Query(String),
    /// A transaction lost a race with another one (deadlock or serialization failure) and was
    /// rolled back; running it again normally succeeds.
    #[error("PostgreSQL transaction lost a race and was rolled back: {0}")]
    Contention(String),
    /// A Redis command failed for another reason than availability.
    #[error("Redis command failed: {0}")]
    Cache(String),
    /// A point's timestamp lies outside the range storage accepts
    /// ([`MIN_TIMESTAMP_MS`](crate::MIN_TIMESTAMP_MS)..[`MAX_TIMESTAMP_MS`](crate::MAX_TIMESTAMP_MS)).
    #[error("point {index} has timestamp {ts_ms} ms, outside the range storage accepts")]
    TimestampOutOfRange {
        /// The point's position in its batch.
        index: usize,
        /// The rejected timestamp, in milliseconds since the Unix epoch.
        ts_ms: i64,
    },
    /// Keys the request would create are over the device's or organisation's limit
    /// ([`KeyLimits`](crate::KeyLimits)); nothing was stored. The text is about the request.
    #[error("key limit exceeded: {0}")]
    KeyLimitExceeded(String),
    /// Stored data could not be decoded (written by something other than this crate).
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// A connection URL or setting is invalid.
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

/// The result type of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// A stable, machine-readable code for API responses and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::Unavailable(_) => "storage_unavailable",
            StorageError::Query(_) => "storage_query_failed",
            StorageError::Contention(_) => "storage_contention",
            StorageError::Cache(_) => "cache_failed",
            StorageError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            StorageError::KeyLimitExceeded(_) => "key_limit_exceeded",
            StorageError::Corrupt(_) => "storage_corrupt",
            StorageError::Config(_) => "storage_config",
        }
    }

    /// Whether the failure is a dependency being out of reach or overloaded (answer 503 and let
    /// the client retry), as opposed to a bug or bad input.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }

    /// Whether the same request may well succeed if sent again later (nothing was stored).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable(_) | StorageError::Contention(_)
        )
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(err: tokio_postgres::Error) -> Self {
        if postgres_unavailable(&err) {
            StorageError::Unavailable(format!("PostgreSQL unavailable: {}", describe(&err)))
        } else if err
            .code()
            .is_some_and(|code| *code == SqlState::QUERY_CANCELED)
        {
            // The pool's statement timeout: the database is stalled (a lock held, an overload);
            // the caller answers 503 and the client retries later.
            StorageError::Unavailable(format!(
                "PostgreSQL statement timed out: {}",
                describe(&err)
            ))
        } else if err.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        }) {
            StorageError::Contention(describe(&err))
        } else {
            StorageError::Query(describe(&err))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::{PoolError, TimeoutType};
        match err {
            PoolError::Backend(err) => err.into(),
            PoolError::Timeout(TimeoutType::Wait) => StorageError::Unavailable(
                "PostgreSQL connection pool exhausted: no connection became free in time".into(),
            ),
            PoolError::Timeout(TimeoutType::Create) => {
                StorageError::Unavailable("PostgreSQL unavailable: connecting timed out".into())
            }
            PoolError::Timeout(TimeoutType::Recycle) => StorageError::Unavailable(
                "PostgreSQL unavailable: checking a pooled connection timed out".into(),
            ),
            other => StorageError::Unavailable(format!(
                "PostgreSQL connection pool failed: {}",
                describe(&other)
            )),
        }
    }
}

impl From<redis::RedisError> for StorageError {
    fn from(err: redis::RedisError) -> Self {
        if redis_unavailable(&err) {
            StorageError::Unavailable(format!("Redis unavailable: {}", describe(&err)))
        } else {
            StorageError::Cache(describe(&err))
        }
    }
}

/// Whether a PostgreSQL error means "the server is out of reach or refusing work right now".
fn postgres_unavailable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        // Class 08: connection exceptions; 57P0x: shutdown, crash recovery, cannot connect now;
        // 53300: too many connections.
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS;
    }
    // Connect and I/O errors carry an io::Error; the driver's own timeout carries nothing and is
    // only recognisable by its text.
    match err.source() {
        Some(source) => source.is::<io::Error>(),
        None => err.to_string() == "timeout waiting for server",
    }
}

/// Whether a Redis error means "the server is out of reach".
pub(crate) fn redis_unavailable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

/// An error and its chain of causes on one line (drivers often say "db error" and keep the
/// useful part in the source).
pub(crate) fn describe(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
