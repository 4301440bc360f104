//! The query API: every request under `/v1/` on the API listener is authenticated by its bearer
//! token ([`super::auth`]) and then handed to the query HTTP function (a Spin HTTP component,
//! hot-swappable in a [`FunctionSlot`]).
//!
//! The host decides who is asking, not the component: it removes the client's
//! `Authorization` and any `weir-org` header, and sets `weir-org` to the organisation of the
//! token. A failing handler (trap, deadline, memory, a broken answer) gets a 500 with the JSON
//! error body and a stable `function_*` code; the details go to the log, not to the client.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use weir_storage::Storage;

use crate::capabilities::Granted;
use crate::functions::{CallError, FunctionSlot, HttpFunction};
use crate::http::{ApiError, Response};

/// The header through which the host tells the component the caller's organisation.
pub const ORG_HEADER: HeaderName = HeaderName::from_static("weir-org");

/// The largest request body handed to the component.
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The loaded query function and what it may reach.
pub struct QueryApi {
    /// The version new requests run on; `weir serve` swaps it on SIGHUP.
    pub function: Arc<FunctionSlot<HttpFunction>>,
    /// Its capabilities: the host's database and Redis, its variables.
    pub granted: Granted,
}

impl QueryApi {
    /// Answers one `/v1/` request.
    pub async fn handle(&self, storage: &Storage, request: hyper::Request<Incoming>) -> Response {
        self.serve(storage, request)
            .await
            .unwrap_or_else(ApiError::into_response)
    }

    async fn serve(
        &self,
        storage: &Storage,
        request: hyper::Request<Incoming>,
    ) -> Result<Response, ApiError> {
        let caller = super::auth::authenticate(storage, request.headers()).await?;
        let org = HeaderValue::from_str(&caller.org).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid_org",
                "the token's organisation cannot be passed on in a header",
            )
        })?;
        let (mut parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_REQUEST_BYTES)
            .collect()
            .await
            .map_err(|error| {
                ApiError::bad_request("body_unreadable", format!("cannot read the body: {error}"))
            })?
            .to_bytes();
        parts.headers.remove(AUTHORIZATION);
        parts.headers.insert(ORG_HEADER, org);
        let request = hyper::Request::from_parts(parts, Full::<Bytes>::new(body));

        let function = self.function.current();
        function
            .handle(request, &self.granted)
            .await
            .map_err(|error| call_error(&caller.org, error))
    }
}

/// The answer for a failed call: 503 when every instance is busy, 500 otherwise.
fn call_error(org: &str, error: CallError) -> ApiError {
    tracing::warn!(code = error.code(), %org, %error, "query function failed");
    let code = error.code();
    match error {
        CallError::Busy { .. } => {
            ApiError::unavailable(code, "the query API is at capacity; retry shortly", 1)
        }
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("the query handler failed ({code}); the host logged the details"),
        ),
    }
}
