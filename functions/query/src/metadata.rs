//! The organisation's devices (`GET /v1/devices`) and a device's keys with their metadata
//! (`GET /v1/devices/{device}/keys`, `GET /v1/devices/{device}/keys/{key}`), from the `series`
//! table.

use serde_json::{Number, Value, json};

use crate::answer::Answer;
use crate::cursor;
use crate::params::{DEFAULT_LIMIT, QueryParams};

/// The columns of a key's metadata, in [`KeyMetadata`]'s order.
macro_rules! key_columns {
    () => {
        "id, key, data_type, name, unit, description, value_map::text, min, max"
    };
}

/// Every key of device `$2` of org `$1`, in key order. No row: the org has no such device.
pub const KEYS_SQL: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM series WHERE org = $1::text AND device = $2::text ORDER BY key"
);

/// Key `$3` of device `$2` of org `$1`; when the device has no such key, another of its keys
/// (so that one query tells an unknown key from an unknown device). No row: no such device.
pub const KEY_SQL: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM series WHERE org = $1::text AND device = $2::text \
     ORDER BY (key = $3::text) DESC LIMIT 1"
);

/// Devices of org `$1` after name `$2`, in name order, with their key counts; at most `$3`.
pub const DEVICES_SQL: &str = "SELECT device, count(*)::int8 AS keys FROM series \
     WHERE org = $1::text AND device > $2::text GROUP BY device ORDER BY device LIMIT $3::int8";

/// The query parameters `GET /v1/devices` takes.
pub const DEVICES_PARAMS: &[&str] = &["limit", "cursor"];

/// One key's metadata as stored (`series` row).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMetadata {
    /// The series id (not shown to clients).
    pub id: i64,
    /// The key.
    pub key: String,
    /// Its declared type (`f64`, `u16`, `bool`, `string`, `enum`...), if declared.
    pub data_type: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Unit.
    pub unit: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// The enum's value map as JSON text (`value_map::text`).
    pub value_map: Option<String>,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
}

impl KeyMetadata {
    /// `{"key", "data_type", "name", "unit", "description", "values", "min", "max"}`, nulls
    /// for what is not declared.
    pub fn to_json(&self) -> Value {
        let values = self
            .value_map
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        let number = |v: Option<f64>| {
            v.and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number)
        };
        json!({
            "key": self.key,
            "data_type": self.data_type,
            "name": self.name,
            "unit": self.unit,
            "description": self.description,
            "values": values,
            "min": number(self.min),
            "max": number(self.max),
        })
    }

    /// Whether the key's declared type holds text, so that it has no numeric aggregates.
    pub fn is_text(&self) -> bool {
        self.data_type.as_deref() == Some("string")
    }
}

/// The row [`KEY_SQL`] found for `key` of `device`, or the 404 to answer: the device's when it
/// had no row, the key's when the row is another key's.
pub fn found_key(device: &str, key: &str, row: Option<KeyMetadata>) -> Result<KeyMetadata, Answer> {
    match row {
        None => Err(Answer::device_not_found(device)),
        Some(meta) if meta.key != key => Err(Answer::key_not_found(device, key)),
        Some(meta) => Ok(meta),
    }
}

/// The body of `GET /v1/devices/{device}/keys`.
pub fn keys_body(device: &str, keys: &[KeyMetadata]) -> Value {
    let keys: Vec<Value> = keys.iter().map(KeyMetadata::to_json).collect();
    json!({ "device": device, "keys": keys })
}

/// The body of `GET /v1/devices/{device}/keys/{key}`: the metadata, the device, and `latest`
/// (`{"ts", "value"}` or null).
pub fn key_body(device: &str, meta: &KeyMetadata, latest: Value) -> Value {
    let mut body = meta.to_json();
    body["device"] = json!(device);
    body["latest"] = latest;
    body
}

/// A `GET /v1/devices` request: page size and the name to start after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesPage {
    /// Devices per page.
    pub limit: usize,
    /// List devices named after this ("" for the first page).
    pub after: String,
}

impl DevicesPage {
    /// Reads `limit` and `cursor`.
    pub fn from_query(raw_query: &str) -> Result<DevicesPage, Answer> {
        let params = QueryParams::parse(raw_query, DEVICES_PARAMS)?;
        let limit = params.limit()?.unwrap_or(DEFAULT_LIMIT);
        let after = match params.get("cursor") {
            Some(cursor) => cursor::decode_name(cursor)?,
            None => String::new(),
        };
        Ok(DevicesPage { limit, after })
    }
}

/// The body of `GET /v1/devices` from up to `limit + 1` rows of [`DEVICES_SQL`]: the first
/// `limit`, and `next` when there was one more.
pub fn devices_body(mut rows: Vec<(String, i64)>, limit: usize) -> Value {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = match (more, rows.last()) {
        (true, Some((last, _))) => json!(cursor::encode_name(last)),
        _ => Value::Null,
    };
    let devices: Vec<Value> = rows
        .into_iter()
        .map(|(device, keys)| json!({ "device": device, "keys": keys }))
        .collect();
    json!({ "devices": devices, "next": next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> KeyMetadata {
        KeyMetadata {
            id: 1,
            key: key.into(),
            data_type: Some("enum".into()),
            name: Some("Mode".into()),
            unit: None,
            description: None,
            value_map: Some(r#"{"0": "off", "1": "on"}"#.into()),
            min: None,
            max: Some(1.0),
        }
    }

    #[test]
    fn metadata_shows_every_field_with_nulls() {
        assert_eq!(
            meta("mode").to_json(),
            json!({"key": "mode", "data_type": "enum", "name": "Mode", "unit": null,
                   "description": null, "values": {"0": "off", "1": "on"}, "min": null, "max": 1.0})
        );
    }

    #[test]
    fn a_found_row_of_another_key_is_an_unknown_key() {
        assert_eq!(
            found_key("m1", "mode", Some(meta("mode"))),
            Ok(meta("mode"))
        );
        let missing_key = found_key("m1", "power", Some(meta("mode"))).unwrap_err();
        assert_eq!(missing_key.status, 404);
        assert!(missing_key.body.contains("no key `power`"));
        assert_eq!(
            found_key("m1", "power", None).unwrap_err(),
            Answer::device_not_found("m1")
        );
    }

    #[test]
    fn key_body_adds_device_and_latest() {
        let body = key_body("m1", &meta("mode"), json!({"ts": 5, "value": 1}));
        assert_eq!(body["device"], "m1");
        assert_eq!(body["latest"], json!({"ts": 5, "value": 1}));
        assert_eq!(body["values"]["1"], "on");
    }

    #[test]
    fn device_pages_link_to_the_next_while_there_is_one() {
        let rows = vec![
            ("a".to_owned(), 2),
            ("b".to_owned(), 1),
            ("c".to_owned(), 3),
        ];
        let page = devices_body(rows.clone(), 2);
        assert_eq!(
            page["devices"],
            json!([{"device": "a", "keys": 2}, {"device": "b", "keys": 1}])
        );
        assert_eq!(
            DevicesPage::from_query(&format!("cursor={}", page["next"].as_str().unwrap()))
                .unwrap()
                .after,
            "b"
        );
        assert_eq!(devices_body(rows, 3)["next"], Value::Null);
        assert_eq!(
            DevicesPage::from_query("").unwrap(),
            DevicesPage {
                limit: 1000,
                after: String::new()
            }
        );
        assert_eq!(DevicesPage::from_query("limit=0").unwrap_err().status, 400);
    }
}
