//! Weir's query API as a Spin HTTP component: `GET /v1/devices/{device}/latest` answers each
//! key's latest value from the Redis cache, and from PostgreSQL when the cache is empty or
//! down. The caller's organisation comes from the `weir-org` header, which Weir's host sets
//! from the bearer token (and strips from client input); a device of another organisation is
//! answered exactly like one that does not exist. This file is the plain-Rust part (names,
//! cache format, JSON bodies), unit-tested natively; the `component` module (wasm only) wires
//! it to spin-sdk's router, variables, Postgres and Redis. See docs/SPIN.md for why spin-sdk 5
//! (WASI 0.2) and what the component imports.

#![warn(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod component;

use serde_json::{Map, Value, json};

/// The Redis hash holding `device`'s latest values, as `weir-storage` writes it:
/// `weir:latest:<org>:<device>`, with `%` and `:` escaped inside the names.
pub fn latest_hash_name(org: &str, device: &str) -> String {
    format!("weir:latest:{}:{}", escape(org), escape(device))
}

fn escape(name: &str) -> String {
    name.replace('%', "%25").replace(':', "%3A")
}

/// Decodes one cached field, `<ts_ms>|<type>|<value>`, into its timestamp and JSON value.
/// `None` for a field this reader does not understand (a newer writer, or damage).
pub fn decode_cached(field: &str) -> Option<(i64, Value)> {
    let (ts, rest) = field.split_once('|')?;
    let (kind, raw) = rest.split_once('|')?;
    let ts_ms = ts.parse().ok()?;
    let value = match kind {
        // Non-finite floats have no JSON number: they travel as strings.
        "f" => match raw.parse::<f64>().ok()? {
            v if v.is_finite() => json!(v),
            _ => json!(raw),
        },
        "i" => json!(raw.parse::<i64>().ok()?),
        "u" => json!(raw.parse::<u64>().ok()?),
        "b" => match raw {
            "1" => json!(true),
            "0" => json!(false),
            _ => return None,
        },
        "s" => json!(raw),
        _ => return None,
    };
    Some((ts_ms, value))
}

/// The header carrying the caller's organisation, set by the host.
pub const ORG_HEADER: &str = "weir-org";

/// The body of `GET /v1/devices/{device}/latest`: `{"device": …, "keys": {key: {"ts": ms, "value": v}}}`.
pub fn latest_body(device: &str, latest: impl IntoIterator<Item = (String, i64, Value)>) -> String {
    let keys: Map<String, Value> = latest
        .into_iter()
        .map(|(key, ts_ms, value)| (key, json!({ "ts": ts_ms, "value": value })))
        .collect();
    json!({ "device": device, "keys": keys }).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_name_escapes_separators_like_the_writer() {
        assert_eq!(
            latest_hash_name("acme", "m:1%"),
            "weir:latest:acme:m%3A1%25"
        );
    }

    #[test]
    fn cached_fields_decode_to_typed_json() {
        assert_eq!(decode_cached("17|f|2.5"), Some((17, json!(2.5))));
        assert_eq!(decode_cached("17|f|NaN"), Some((17, json!("NaN"))));
        assert_eq!(
            decode_cached("17|u|18446744073709551615"),
            Some((17, json!(u64::MAX)))
        );
        assert_eq!(decode_cached("17|b|1"), Some((17, json!(true))));
        assert_eq!(decode_cached("17|s|a|b"), Some((17, json!("a|b"))));
        assert_eq!(decode_cached("17|x|1"), None);
        assert_eq!(decode_cached("garbage"), None);
    }

    #[test]
    fn errors_have_the_hosts_shape() {
        assert_eq!(
            device_not_found_body("m1"),
            r#"{"error":{"code":"not_found","message":"no device `m1`"}}"#
        );
    }

    #[test]
    fn latest_body_lists_every_key() {
        let body = latest_body("m1", [("temp".to_owned(), 5, json!(21.5))]);
        assert_eq!(
            body,
            r#"{"device":"m1","keys":{"temp":{"ts":5,"value":21.5}}}"#
        );
    }
}
