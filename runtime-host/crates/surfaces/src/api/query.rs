//! The query API: every request under `/v1/` on the API listener is authenticated by its bearer
//! token ([`super::auth`]) and then handed to the query HTTP function (a Spin HTTP component,
//! hot-swappable in a [`FunctionSlot`]); `GET /openapi.json` goes to the same function without
//! a token.
//!
//! The host decides who is asking, not the component: it removes the client's
//! `Authorization` and any `weir-org` header, and sets `weir-org` to the organisation of the
//! token. A failing handler (trap, deadline, memory, a broken answer) gets a 500 with the JSON
//! error body and a stable `function_*` code; the details go to the log, not to the client.
//!
//! Around the function the host makes answers cache-friendly: a strong `ETag` (SHA-256 of the
//! body) on every successful answer, `304 Not Modified` when `If-None-Match` names it,
//! `Vary: Authorization` on `/v1/` answers (a shared cache must not hand one organisation's
//! answer to another), and its own [`AnswerCache`] of history and trend answers.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, ETAG, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH, VARY,
};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};

use super::answer_cache::{AnswerCache, CacheableRequest, CachedAnswer};
use super::auth::Authenticator;
use crate::http::{ApiError, Response};
use weir_metrics::Metrics;
use weir_runtime::capabilities::Granted;
use weir_runtime::{CallError, FunctionSlot, HttpFunction};

/// The header through which the host tells the component the caller's organisation.
pub const ORG_HEADER: HeaderName = HeaderName::from_static("weir-org");

/// The public OpenAPI document's path, served by the query function without a token.
pub const OPENAPI_PATH: &str = weir_contract::routes::OPENAPI_PATH;

/// The largest request body handed to the component.
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The loaded query function and what it may reach.
pub struct QueryApi {
    /// The version new requests run on; `weir serve` swaps it on SIGHUP.
    pub function: Arc<FunctionSlot<HttpFunction>>,
    /// Its capabilities: the host's database and Redis, its variables.
    pub granted: Granted,
    /// Hot history and trend answers, invalidated by the ingest path.
    pub answers: Arc<AnswerCache>,
    /// Host metrics (answer cache hits and misses).
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document of the current function version, answered from memory.
    pub openapi: OpenApiCache,
}

/// The public `/openapi.json` answer, kept per function version: the document only changes
/// with the function, and an unauthenticated path must not run a WASM instance per request.
#[derive(Default)]
pub struct OpenApiCache {
    answer: Mutex<Option<(Weak<HttpFunction>, CachedAnswer)>>,
}

impl OpenApiCache {
    /// The answer `function` gave, if it is the version that gave it. The [`Weak`] keeps the
    /// old version's allocation, so its address cannot be reused by a new one.
    fn get(&self, function: &Arc<HttpFunction>) -> Option<CachedAnswer> {
        let answer = self.answer.lock().expect("openapi cache lock");
        answer
            .as_ref()
            .filter(|(of, _)| std::ptr::eq(of.as_ptr(), Arc::as_ptr(function)))
            .map(|(_, answer)| answer.clone())
    }

    fn insert(&self, function: &Arc<HttpFunction>, answer: CachedAnswer) {
        *self.answer.lock().expect("openapi cache lock") = Some((Arc::downgrade(function), answer));
    }
}

impl QueryApi {
    /// Answers one `/v1/` or `/openapi.json` request.
    pub async fn handle(
        &self,
        auth: &Authenticator,
        request: hyper::Request<Incoming>,
    ) -> Response {
        self.serve(auth, request)
            .await
            .unwrap_or_else(ApiError::into_response)
    }

    async fn serve(
        &self,
        auth: &Authenticator,
        request: hyper::Request<Incoming>,
    ) -> Result<Response, ApiError> {
        let public = request.uri().path() == OPENAPI_PATH;
        let org = if public {
            None
        } else {
            Some(auth.authenticate(request.headers()).await?.org)
        };
        let url = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let if_none_match = request.headers().get(IF_NONE_MATCH).cloned();
        let function = self.function.current();
        let openapi = public && request.method() == Method::GET;
        if openapi {
            if let Some(answer) = self.openapi.get(&function) {
                self.metrics.answer_cache("hit");
                return Ok(cached_response(answer, if_none_match.as_ref()));
            }
            self.metrics.answer_cache("miss");
        }
        let cacheable = match &org {
            Some(org) if request.method() == Method::GET => {
                CacheableRequest::parse(org, request.uri().path(), request.uri().query())
            }
            _ => None,
        };
        if let Some(cacheable) = &cacheable {
            if let Some(answer) = self.answers.get(&cacheable.series.org, &url) {
                self.metrics.answer_cache("hit");
                return Ok(cached_response(answer, if_none_match.as_ref()));
            }
            self.metrics.answer_cache("miss");
        }
        let ticket = cacheable.as_ref().map(|c| self.answers.ticket(&c.series));

        let (mut parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_REQUEST_BYTES)
            .collect()
            .await
            .map_err(|error| {
                ApiError::bad_request("body_unreadable", format!("cannot read the body: {error}"))
            })?
            .to_bytes();
        parts.headers.remove(AUTHORIZATION);
        parts.headers.remove(ORG_HEADER);
        if let Some(org) = &org {
            let value = HeaderValue::from_str(org).map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid_org",
                    "the token's organisation cannot be passed on in a header",
                )
            })?;
            parts.headers.insert(ORG_HEADER, value);
        }
        let request = hyper::Request::from_parts(parts, Full::<Bytes>::new(body));

        let response = function
            .handle(request, &self.granted)
            .await
            .map_err(|error| call_error(org.as_deref().unwrap_or("-"), error))?;
        let (mut parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_else(|never| match never {});
        if !public {
            parts
                .headers
                .insert(VARY, HeaderValue::from_static("Authorization"));
        }
        if parts.status.is_success() {
            parts.headers.insert(ETAG, strong_etag(&body));
        } else if !parts.headers.contains_key(CACHE_CONTROL) {
            parts
                .headers
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let (Some(cacheable), Some(ticket), StatusCode::OK) = (&cacheable, ticket, parts.status)
        {
            let answer = CachedAnswer {
                headers: parts.headers.clone(),
                body: body.clone(),
            };
            self.answers.insert(cacheable, &url, ticket, answer);
        }
        if openapi && parts.status == StatusCode::OK {
            let answer = CachedAnswer {
                headers: parts.headers.clone(),
                body: body.clone(),
            };
            self.openapi.insert(&function, answer);
        }
        if parts.status.is_success() && etag_matches(if_none_match.as_ref(), &parts.headers) {
            return Ok(not_modified(&parts.headers));
        }
        Ok(hyper::Response::from_parts(parts, Full::new(body)))
    }
}

/// `"<hex of the first 16 bytes of SHA-256(body)>"`: equal bodies, equal tags.
fn strong_etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
        .expect("hex is a valid header value")
}

/// Whether `If-None-Match` names the answer's ETag (or is `*`), compared weakly as RFC 9110
/// asks for this header.
fn etag_matches(if_none_match: Option<&HeaderValue>, headers: &HeaderMap) -> bool {
    let (Some(condition), Some(etag)) = (
        if_none_match.and_then(|v| v.to_str().ok()),
        headers.get(ETAG).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    condition.trim() == "*" || condition.split(',').any(|tag| opaque(tag) == opaque(etag))
}

/// The 304 for an answer with `headers`: its validators and caching headers, no body.
fn not_modified(headers: &HeaderMap) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [ETAG, CACHE_CONTROL, VARY] {
        if let Some(value) = headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// A cached answer, or its 304.
fn cached_response(answer: CachedAnswer, if_none_match: Option<&HeaderValue>) -> Response {
    if etag_matches(if_none_match, &answer.headers) {
        return not_modified(&answer.headers);
    }
    let mut response = hyper::Response::new(Full::new(answer.body));
    *response.headers_mut() = answer.headers;
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_strong_and_if_none_match_compares_them() {
        let tag = strong_etag(b"{}");
        assert_eq!(tag, strong_etag(b"{}"));
        assert_ne!(tag, strong_etag(b"{ }"));
        assert!(tag.to_str().unwrap().starts_with('"') && !tag.to_str().unwrap().starts_with("W/"));
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, tag.clone());
        let condition = |text: &str| HeaderValue::from_str(text).unwrap();
        let listed = format!("\"x\", W/{}", tag.to_str().unwrap());
        assert!(etag_matches(Some(&tag), &headers));
        assert!(etag_matches(Some(&condition(&listed)), &headers));
        assert!(etag_matches(Some(&condition("*")), &headers));
        assert!(!etag_matches(Some(&condition("\"x\"")), &headers));
        assert!(!etag_matches(None, &headers));
    }
}
