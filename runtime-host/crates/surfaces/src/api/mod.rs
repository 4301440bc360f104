//! The API listener (plain HTTP/1.1 and h2c; it normally sits behind the ingress): health,
//! readiness and Prometheus metrics, served by the host itself, and the query API: everything
//! under `/v1/`, authenticated here and answered by the query function ([`query`]) when one is
//! loaded, with its public `/openapi.json`; except the alert events (`/v1/events`,
//! [`events`], and their live stream `/v1/events/stream`, [`event_stream`]), which the host
//! serves itself.

pub mod answer_cache;
pub mod auth;
pub mod event_stream;
pub mod events;
pub mod query;
pub mod readiness;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::json;

use weir_metrics::Metrics;
use weir_storage::Storage;

use crate::http::body::{ResponseBody, StreamingResponse};
use crate::http::{ApiError, Response, json_response};
use auth::Authenticator;
use event_stream::EventStreams;
use events::EventsApi;
use query::QueryApi;
use readiness::Readiness;

/// The API listener's shared state: a narrow handle per part.
pub struct Api {
    /// PostgreSQL: pool figures.
    pub storage: Storage,
    /// `/readyz`, cached for a second.
    pub readiness: Readiness,
    /// Bearer tokens of the query API, events and streams.
    pub auth: Arc<Authenticator>,
    /// The host's metrics, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The alert events endpoints.
    pub events: EventsApi,
    /// The query API, when a query component is loaded; without one `/v1/` is 404.
    pub query: Option<Arc<QueryApi>>,
    /// The live alert event streams and their Redis relay.
    pub event_streams: Arc<EventStreams>,
}

impl Api {
    /// Answers one request; only the event stream's answer is not buffered.
    pub async fn handle(self: Arc<Self>, request: hyper::Request<Incoming>) -> StreamingResponse {
        let uri = request.uri();
        if encodes_a_control_character(uri.path())
            || uri.query().is_some_and(encodes_a_control_character)
        {
            return ApiError::bad_request(
                "invalid_path",
                "the path or query encodes a control character (such as %00)",
            )
            .into_response()
            .map(ResponseBody::from);
        }
        if request.uri().path() == event_stream::PATH {
            return self.event_streams.handle(&self.auth, request).await;
        }
        let private = is_tenant_data(request.uri().path());
        let mut response = self.answer(request).await;
        if private {
            keep_private(response.headers_mut());
        }
        response.map(ResponseBody::from)
    }

    /// Answers one request with a buffered body.
    async fn answer(&self, request: hyper::Request<Incoming>) -> Response {
        let path = request.uri().path().to_string();
        match (request.method(), path.as_str()) {
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (&Method::GET, "/readyz") => self.readiness.answer().await,
            (&Method::GET, "/metrics") => self.metrics(),
            (method, "/healthz" | "/readyz" | "/metrics") => {
                ApiError::method_not_allowed(method, &path).into_response()
            }
            (_, path) if events::handles(path) => self.events.handle(request).await,
            (_, path) if path.starts_with("/v1/") || path == query::OPENAPI_PATH => {
                match &self.query {
                    Some(query) => query.handle(&self.auth, request).await,
                    None => ApiError::not_found(path).into_response(),
                }
            }
            _ => ApiError::not_found(&path).into_response(),
        }
    }

    fn metrics(&self) -> Response {
        let metrics = &self.metrics;
        let pool = self.storage.pool_status();
        metrics.pool_size.set(pool.size as i64);
        metrics.pool_available.set(pool.available as i64);
        metrics.pool_waiting.set(pool.waiting as i64);
        let mut response = hyper::Response::new(Full::new(Bytes::from(metrics.encode())));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

/// Whether answers at `path` are bearer-authenticated tenant data: everything under `/v1/`
/// (the public `/openapi.json` is not under it).
fn is_tenant_data(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// Makes an answer's `Cache-Control` `private`: a browser may keep it, a shared cache must not,
/// whatever the handler said (`public` is dropped; no header at all becomes `no-store`).
pub(crate) fn keep_private(headers: &mut HeaderMap) {
    let current = headers
        .get(CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("no-store");
    let mut private = String::from("private");
    for directive in current.split(',').map(str::trim) {
        if !directive.is_empty()
            && !directive.eq_ignore_ascii_case("public")
            && !directive.eq_ignore_ascii_case("private")
        {
            private.push_str(", ");
            private.push_str(directive);
        }
    }
    let value =
        HeaderValue::from_str(&private).unwrap_or(HeaderValue::from_static("private, no-store"));
    headers.insert(CACHE_CONTROL, value);
}

/// Whether `text` (a path or query, still percent-encoded) encodes a control character
/// (`%00`–`%1F`, `%7F`): nothing Weir serves is named with one, and PostgreSQL refuses NUL.
pub(crate) fn encodes_a_control_character(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|byte| byte < 0x20 || byte == 0x7f)
    })
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn tenant_answers_are_made_private() {
        let cases = [
            (
                Some("public, max-age=31536000, immutable"),
                "private, max-age=31536000, immutable",
            ),
            (Some("private, max-age=5"), "private, max-age=5"),
            (Some("no-cache"), "private, no-cache"),
            (Some("PUBLIC,max-age=60"), "private, max-age=60"),
            (None, "private, no-store"),
        ];
        for (given, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(given) = given {
                headers.insert(CACHE_CONTROL, HeaderValue::from_static(given));
            }
            keep_private(&mut headers);
            assert_eq!(headers[CACHE_CONTROL], expected, "{given:?}");
        }
        assert!(is_tenant_data("/v1/devices"));
        assert!(!is_tenant_data("/openapi.json"));
        assert!(!is_tenant_data("/metrics"));
    }

    #[test]
    fn encoded_control_characters_are_found() {
        for bad in ["/v1/devices/%00/latest", "/a%0a", "%7F", "from=%1f"] {
            assert!(encodes_a_control_character(bad), "{bad}");
        }
        for good in [
            "/v1/devices/m%2D1/latest",
            "/v1/x%20y",
            "%",
            "%0",
            "%zz",
            "100%",
        ] {
            assert!(!encodes_a_control_character(good), "{good}");
        }
    }
}
