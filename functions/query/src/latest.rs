//! Latest values: `GET /v1/devices/{device}/latest` (every key) and the `latest` member of
//! `GET /v1/devices/{device}/keys/{key}`. Read from the Redis cache ([`crate::cache`]) first,
//! from PostgreSQL when the cache is empty or down.

use serde_json::{Map, Value, json};

use crate::value::point_value_jsonb;

/// Every key of the device with its newest point; a key with no point yet has NULL columns, so
/// a known device always has at least one row. `$1` org, `$2` device.
pub const DEVICE_LATEST_SQL: &str = concat!(
    "SELECT s.key, (extract(epoch FROM p.ts) * 1000)::int8 AS ts_ms, ",
    point_value_jsonb!(),
    "::text AS value \
     FROM series s \
     LEFT JOIN LATERAL (SELECT ts, v_float, v_int, v_numeric, v_bool, v_text \
         FROM points WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) p ON true \
     WHERE s.org = $1::text AND s.device = $2::text"
);

/// The newest point of series `$1`: `ts_ms`, value as JSON text. No row when it has none.
pub const KEY_LATEST_SQL: &str = concat!(
    "SELECT (extract(epoch FROM p.ts) * 1000)::int8 AS ts_ms, ",
    point_value_jsonb!(),
    "::text AS value FROM points p WHERE p.series_id = $1::int8 ORDER BY p.ts DESC LIMIT 1"
);

/// The body of `GET /v1/devices/{device}/latest`: `{"device": …, "keys": {key: {"ts": ms, "value": v}}}`.
pub fn latest_body(device: &str, latest: impl IntoIterator<Item = (String, i64, Value)>) -> String {
    let keys: Map<String, Value> = latest
        .into_iter()
        .map(|(key, ts_ms, value)| (key, json!({ "ts": ts_ms, "value": value })))
        .collect();
    json!({ "device": device, "keys": keys }).to_string()
}

/// One key's latest value as the key endpoint shows it: `{"ts", "value"}`, or null.
pub fn latest_member(latest: Option<(i64, Value)>) -> Value {
    match latest {
        Some((ts_ms, value)) => json!({ "ts": ts_ms, "value": value }),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_body_lists_every_key() {
        let body = latest_body("m1", [("temp".to_owned(), 5, json!(21.5))]);
        assert_eq!(
            body,
            r#"{"device":"m1","keys":{"temp":{"ts":5,"value":21.5}}}"#
        );
    }

    #[test]
    fn a_key_without_points_has_a_null_latest() {
        assert_eq!(latest_member(None), Value::Null);
        assert_eq!(
            latest_member(Some((7, json!(true)))),
            json!({"ts": 7, "value": true})
        );
    }

    #[test]
    fn queries_bind_their_parameters_with_explicit_types() {
        assert!(DEVICE_LATEST_SQL.contains("s.org = $1::text AND s.device = $2::text"));
        assert!(KEY_LATEST_SQL.contains("p.series_id = $1::int8"));
    }
}
