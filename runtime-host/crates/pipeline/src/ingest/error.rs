//! The typed error of the ingest pipeline: a stable code, a message written for the device, and
//! a kind that says what the caller should do. The surfaces map kinds to status codes; nothing
//! here knows HTTP.

use weir_runtime::CallError;
use weir_storage::StorageError;

/// What kind of failure an [`IngestError`] is, i.e. what the client should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is not what the endpoint takes; resending it unchanged fails again.
    Invalid,
    /// The request is larger than a limit allows; split it.
    TooLarge,
    /// Something this request needs is busy or down; retry after the given seconds.
    Unavailable {
        /// Seconds after which a retry may succeed.
        retry_after_s: u64,
    },
    /// The host failed; nothing was stored.
    Internal,
}

/// An ingest failure with a stable snake_case code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestError {
    /// What the client should do.
    pub kind: ErrorKind,
    /// Stable snake_case code.
    pub code: &'static str,
    /// What was wrong, for a person; never internal error text.
    pub message: String,
}

impl IngestError {
    /// A request that is not what the endpoint takes.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    /// A request over a size limit.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, code, message)
    }

    /// A busy or unavailable dependency; retry after `seconds`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, seconds: u64) -> Self {
        Self::new(
            ErrorKind::Unavailable {
                retry_after_s: seconds,
            },
            code,
            message,
        )
    }

    /// A failure of the host.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, code, message)
    }

    fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        IngestError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// A storage failure: unavailability is the device's cue to retry later; nothing was
    /// stored. The storage error's own text is logged, never returned.
    pub fn storage(error: &StorageError) -> Self {
        tracing::warn!(code = error.code(), %error, "storage error");
        if let StorageError::TimestampOutOfRange { .. } | StorageError::KeyLimitExceeded(_) = error
        {
            // About the device's input, not the host: its text is safe and useful.
            return Self::invalid(error.code(), error.to_string());
        }
        if error.is_unavailable() || error.is_retryable() {
            Self::unavailable(
                "storage_unavailable",
                "storage is unavailable, nothing was stored; retry later",
                2,
            )
        } else {
            Self::internal(
                "storage_error",
                "the request could not be stored; nothing was stored",
            )
        }
    }

    /// A failed validator call: busy is worth a retry, anything else is the host's failure.
    pub fn validator(error: &CallError) -> Self {
        match error {
            CallError::Busy { .. } => Self::unavailable(error.code(), error.to_string(), 1),
            other => Self::internal(
                other.code(),
                format!("the batch could not be validated ({})", other.code()),
            ),
        }
    }
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for IngestError {}

impl From<StorageError> for IngestError {
    fn from(error: StorageError) -> Self {
        Self::storage(&error)
    }
}
