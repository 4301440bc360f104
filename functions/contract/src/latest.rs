//! The Redis cache of each key's latest value, as the host's storage writes it and the query
//! function reads it.
//!
//! One hash per device, [`hash_name`] = `weir:latest:<org>:<device>` (the names escaped as in
//! [`crate::redis_name`]), one field per key. A field holds `<ts_ms>|<type>|<value>`, readable in
//! `redis-cli` and exact on the way back ([`encode`], [`decode`]):
//!
//! | type | value                                                   |
//! |------|---------------------------------------------------------|
//! | `f`  | a float, shortest round-trip form (`NaN`, `inf` too)    |
//! | `i`  | a signed integer                                        |
//! | `u`  | an unsigned integer above `i64::MAX`                    |
//! | `b`  | `1` or `0`                                              |
//! | `s`  | the text, as is (it may contain `|`)                    |
//!
//! The timestamp comes first so that the writer's Lua script can compare it without decoding
//! the value.

use crate::redis_name::escape;

/// The prefix of every latest-value hash.
pub const HASH_PREFIX: &str = "weir:latest:";

/// The Redis hash holding `device`'s latest values: `weir:latest:<org>:<device>`.
///
/// ```
/// use weir_contract::latest::hash_name;
/// assert_eq!(hash_name("acme", "m:1%"), "weir:latest:acme:m%3A1%25");
/// ```
pub fn hash_name(org: &str, device: &str) -> String {
    format!("{HASH_PREFIX}{}:{}", escape(org), escape(device))
}

/// A cached value, borrowing its text from the value encoded or the field decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CachedValue<'a> {
    /// A float, written in its shortest round-trip form.
    Float(f64),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer; [`encode`] writes one up to `i64::MAX` as an `i`.
    Uint(u64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(&'a str),
}

/// The field for a value at `ts_ms`: `<ts_ms>|<type>|<value>`.
///
/// ```
/// use weir_contract::latest::{encode, CachedValue};
/// assert_eq!(encode(17, CachedValue::Float(2.0)), "17|f|2.0");
/// assert_eq!(encode(17, CachedValue::Uint(5)), "17|i|5");
/// ```
pub fn encode(ts_ms: i64, value: CachedValue<'_>) -> String {
    match value {
        CachedValue::Float(value) => format!("{ts_ms}|f|{value:?}"),
        CachedValue::Int(value) => format!("{ts_ms}|i|{value}"),
        CachedValue::Uint(value) => match i64::try_from(value) {
            Ok(value) => format!("{ts_ms}|i|{value}"),
            Err(_) => format!("{ts_ms}|u|{value}"),
        },
        CachedValue::Bool(value) => format!("{ts_ms}|b|{}", u8::from(value)),
        CachedValue::Text(value) => format!("{ts_ms}|s|{value}"),
    }
}

/// The timestamp and value of a field; `None` for a field this reader does not understand (a
/// newer writer, or damage). A `u` field decodes to [`CachedValue::Uint`] whatever its size.
///
/// ```
/// use weir_contract::latest::{decode, CachedValue};
/// assert_eq!(decode("17|s|a|b"), Some((17, CachedValue::Text("a|b"))));
/// assert_eq!(decode("garbage"), None);
/// ```
pub fn decode(field: &str) -> Option<(i64, CachedValue<'_>)> {
    let mut parts = field.splitn(3, '|');
    let ts_ms = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let text = parts.next()?;
    let value = match kind {
        "f" => CachedValue::Float(text.parse().ok()?),
        "i" => CachedValue::Int(text.parse().ok()?),
        "u" => CachedValue::Uint(text.parse().ok()?),
        "b" => match text {
            "1" => CachedValue::Bool(true),
            "0" => CachedValue::Bool(false),
            _ => return None,
        },
        "s" => CachedValue::Text(text),
        _ => return None,
    };
    Some((ts_ms, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_exactly() {
        let values = [
            CachedValue::Float(0.1 + 0.2),
            CachedValue::Float(f64::MIN_POSITIVE),
            CachedValue::Float(-1e300),
            CachedValue::Float(f64::INFINITY),
            CachedValue::Int(i64::MIN),
            CachedValue::Uint(u64::MAX),
            CachedValue::Bool(true),
            CachedValue::Bool(false),
            CachedValue::Text("a|b|c"),
            CachedValue::Text(""),
        ];
        for value in values {
            let field = encode(-5, value);
            assert_eq!(decode(&field), Some((-5, value)), "{field}");
        }
        let nan = encode(1, CachedValue::Float(f64::NAN));
        assert_eq!(nan, "1|f|NaN");
        assert!(matches!(decode(&nan), Some((1, CachedValue::Float(v))) if v.is_nan()));
    }

    #[test]
    fn small_unsigned_integers_are_written_as_signed() {
        assert_eq!(encode(1, CachedValue::Uint(5)), "1|i|5");
        assert_eq!(
            encode(1, CachedValue::Uint(i64::MAX as u64 + 1)),
            "1|u|9223372036854775808"
        );
        assert_eq!(decode("1|u|5"), Some((1, CachedValue::Uint(5))));
    }

    #[test]
    fn fields_this_reader_does_not_know_are_refused() {
        for field in [
            "garbage", "17|x|1", "17|b|2", "x|i|1", "17|i", "17|i|1.5", "17|f|",
        ] {
            assert_eq!(decode(field), None, "{field}");
        }
    }

    #[test]
    fn hash_names_keep_devices_apart() {
        assert_ne!(hash_name("a:b", "c"), hash_name("a", "b:c"));
        assert_eq!(hash_name("acme", "m-1"), "weir:latest:acme:m-1");
        assert_eq!(hash_name("acme", "m:1%"), "weir:latest:acme:m%3A1%25");
    }
}
