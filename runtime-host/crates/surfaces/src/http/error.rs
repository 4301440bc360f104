//! The one error answer of Weir's HTTP surfaces:
//! `{"error": {"code": "...", "message": "..."}}` with a stable code, the right status,
//! `Retry-After` where waiting helps, and `WWW-Authenticate` with a 401.

use hyper::StatusCode;
use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::json;

use weir_pipeline::ingest::{ErrorKind, IngestError};
use weir_storage::StorageError;

use super::{Response, json_response};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 (e.g. `Bearer`).
    pub www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// 401 for a request without valid credentials; `challenge` is the `WWW-Authenticate` value
    /// telling the client how to authenticate (static text, a valid header value).
    pub fn unauthorized(
        code: &'static str,
        message: impl Into<String>,
        challenge: &'static str,
    ) -> Self {
        ApiError {
            www_authenticate: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, code, message)
        }
    }

    /// 400 for a request that is not what the endpoint takes.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 503 for a dependency that is down or overloaded; the client retries after `seconds`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, seconds: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(seconds)
    }

    /// 404 for a path that does not exist.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint at {path}"),
        )
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &hyper::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// Adds a `Retry-After` of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = json_response(self.status, &body);
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.www_authenticate {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let IngestError {
            kind,
            code,
            message,
        } = error;
        match kind {
            ErrorKind::Invalid => ApiError::bad_request(code, message),
            ErrorKind::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message),
            ErrorKind::Unavailable { retry_after_s } => {
                ApiError::unavailable(code, message, retry_after_s)
            }
            ErrorKind::Internal => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message),
        }
    }
}

/// A storage failure as the client sees it: a stable code, never the storage error's text
/// (which is logged).
impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        tracing::warn!(code = error.code(), %error, "storage error");
        if error.is_unavailable() || error.is_retryable() {
            ApiError::unavailable(
                "storage_unavailable",
                "storage is unavailable, nothing was changed; retry later",
                2,
            )
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                "the request failed in storage, nothing was changed",
            )
        }
    }
}
