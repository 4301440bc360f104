//! What a handler answers: status, JSON body, `Cache-Control` and, for redirects, `Location`.
//! The component turns an [`Answer`] into a spin-sdk response; everything that decides one is
//! plain Rust.
//!
//! `Cache-Control` policy (the host adds `ETag`/304 and `Vary: Authorization`). Every answer
//! under `/v1/` is bearer-authenticated tenant data, so it is `private`: a browser may keep it,
//! a shared cache must not (many ignore `Vary: Authorization`):
//! - history and trend whose `to` is older than now − `lateness_window_ms`: [`IMMUTABLE`];
//! - other history and trend: [`RECENT`];
//! - devices, keys, key, latest: [`LIVE`] (`no-cache`: always revalidate, the ETag makes that
//!   cheap);
//! - `/openapi.json`: [`DOCUMENT`];
//! - 308 redirects (they depend on the request only): [`CANONICAL_REDIRECT`]; 302 redirects (they
//!   depend on the clock) and every error: [`NO_STORE`].

use serde_json::{Value, json};

/// A range that can no longer change (it ended before the lateness window).
pub const IMMUTABLE: &str = "private, max-age=31536000, immutable";
/// A range that may still receive points.
pub const RECENT: &str = "private, max-age=5";
/// Live state: devices, keys, latest values.
pub const LIVE: &str = "private, no-cache";
/// The OpenAPI document.
pub const DOCUMENT: &str = "public, max-age=3600";
/// A 308 redirect to the canonical form of the same request.
pub const CANONICAL_REDIRECT: &str = "private, max-age=86400";
/// Errors and 302 redirects.
pub const NO_STORE: &str = "private, no-store";

/// One HTTP answer, before spin-sdk turns it into a response. Bodies are always JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `Cache-Control` header.
    pub cache_control: &'static str,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// The JSON body.
    pub body: String,
}

impl Answer {
    /// `200` with `body` and `cache_control`.
    pub fn ok(body: &Value, cache_control: &'static str) -> Answer {
        Answer {
            status: 200,
            cache_control,
            location: None,
            allow: None,
            body: body.to_string(),
        }
    }

    /// An error: `status` with `{"error": {"code", "message"}}`, never stored by caches.
    pub fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            cache_control: NO_STORE,
            location: None,
            allow: None,
            body: error_body(code, message),
        }
    }

    /// `400 invalid_parameter`: `message` says which parameter and what is wrong.
    pub fn invalid_parameter(message: &str) -> Answer {
        Answer::error(400, "invalid_parameter", message)
    }

    /// `404 not_found` for a device the caller's organisation does not have.
    pub fn device_not_found(device: &str) -> Answer {
        Answer {
            body: device_not_found_body(device),
            ..Answer::error(404, "not_found", "")
        }
    }

    /// `404 not_found` for a key the device does not have.
    pub fn key_not_found(device: &str, key: &str) -> Answer {
        Answer::error(
            404,
            "not_found",
            &format!("device `{device}` has no key `{key}`"),
        )
    }

    /// `503 storage_unavailable`: PostgreSQL could not answer. The message is always the same:
    /// why it could not (a driver's or the server's error text) is for the operator's log,
    /// never for the client.
    pub fn storage_unavailable() -> Answer {
        Answer::error(
            503,
            "storage_unavailable",
            "the data cannot be read now; retry later",
        )
    }

    /// A redirect to `location` (path and query): `308` when only the form of the request
    /// changed, `302` when a default that depends on the clock was filled in.
    pub fn redirect(location: String, clock_dependent: bool) -> Answer {
        let (status, cache_control) = if clock_dependent {
            (302, NO_STORE)
        } else {
            (308, CANONICAL_REDIRECT)
        };
        Answer {
            status,
            cache_control,
            body: json!({ "location": location }).to_string(),
            location: Some(location),
            allow: None,
        }
    }

    /// `405 method_not_allowed` for a path that exists (every endpoint is GET only).
    pub fn method_not_allowed(method: &str, path: &str) -> Answer {
        Answer {
            allow: Some("GET"),
            ..Answer::error(
                405,
                "method_not_allowed",
                &format!("{path} answers GET only, not {method}"),
            )
        }
    }

    /// `404 not_found` for a path no endpoint serves.
    pub fn no_endpoint(path: &str) -> Answer {
        Answer::error(404, "not_found", &format!("no endpoint at {path}"))
    }

    /// `401 unauthenticated`: the host named no organisation for this request.
    pub fn unauthenticated() -> Answer {
        Answer::error(401, "unauthenticated", "no organisation for this request")
    }
}

/// The error body every Weir surface answers with: `{"error": {"code", "message"}}`.
pub fn error_body(code: &str, message: &str) -> String {
    json!({ "error": { "code": code, "message": message } }).to_string()
}

/// The 404 body for a device the caller's organisation does not have (whether it exists
/// elsewhere or not, the answer is the same).
pub fn device_not_found_body(device: &str) -> String {
    error_body("not_found", &format!("no device `{device}`"))
}

/// The `Cache-Control` of a history or trend answer ending at `to_ms`: immutable once `to_ms`
/// is older than the lateness window, short-lived before.
pub fn range_cache_control(to_ms: i64, now_ms: i64, lateness_window_ms: i64) -> &'static str {
    if to_ms < now_ms.saturating_sub(lateness_window_ms) {
        IMMUTABLE
    } else {
        RECENT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_hosts_shape() {
        assert_eq!(
            device_not_found_body("m1"),
            r#"{"error":{"code":"not_found","message":"no device `m1`"}}"#
        );
        let answer = Answer::device_not_found("m1");
        assert_eq!((answer.status, answer.cache_control), (404, NO_STORE));
        assert_eq!(answer.body, device_not_found_body("m1"));
    }

    #[test]
    fn an_unavailable_storage_is_a_fixed_message_and_code() {
        let answer = Answer::storage_unavailable();
        assert_eq!((answer.status, answer.cache_control), (503, NO_STORE));
        assert_eq!(
            answer.body,
            r#"{"error":{"code":"storage_unavailable","message":"the data cannot be read now; retry later"}}"#
        );
    }

    #[test]
    fn redirects_say_where_in_the_body_too() {
        let answer = Answer::redirect("/x?from=0&to=300000".into(), false);
        assert_eq!(answer.status, 308);
        assert_eq!(answer.location.as_deref(), Some("/x?from=0&to=300000"));
        assert_eq!(answer.body, r#"{"location":"/x?from=0&to=300000"}"#);
        assert_eq!(Answer::redirect("/x".into(), true).status, 302);
        assert_eq!(Answer::redirect("/x".into(), true).cache_control, NO_STORE);
    }

    #[test]
    fn ranges_become_immutable_after_the_lateness_window() {
        let day = 86_400_000;
        assert_eq!(range_cache_control(0, 2 * day, day), IMMUTABLE);
        assert_eq!(range_cache_control(day, 2 * day, day), RECENT);
        assert_eq!(range_cache_control(3 * day, 2 * day, day), RECENT);
    }
}
