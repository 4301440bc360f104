//! The Redis cache of latest values as `weir-storage` writes it: the hash names and the field
//! format are `weir_contract::latest`; this module turns a field into the JSON the API answers.

use serde_json::{Value, json};
use weir_contract::latest::{CachedValue, decode};

/// Decodes one cached field, `<ts_ms>|<type>|<value>`, into its timestamp and JSON value.
/// `None` for a field this reader does not understand (a newer writer, or damage).
pub fn decode_cached(field: &str) -> Option<(i64, Value)> {
    let (ts_ms, value) = decode(field)?;
    let value = match value {
        CachedValue::Float(v) if v.is_finite() => json!(v),
        // Non-finite floats have no JSON number: they travel as strings, as the writer spells
        // them (`NaN`, `inf`, `-inf`).
        CachedValue::Float(v) => json!(format!("{v:?}")),
        CachedValue::Int(v) => json!(v),
        CachedValue::Uint(v) => json!(v),
        CachedValue::Bool(v) => json!(v),
        CachedValue::Text(text) => json!(text),
    };
    Some((ts_ms, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_fields_decode_to_typed_json() {
        assert_eq!(decode_cached("17|f|2.5"), Some((17, json!(2.5))));
        assert_eq!(decode_cached("17|f|NaN"), Some((17, json!("NaN"))));
        assert_eq!(decode_cached("17|f|-inf"), Some((17, json!("-inf"))));
        assert_eq!(decode_cached("17|i|-3"), Some((17, json!(-3))));
        assert_eq!(
            decode_cached("17|u|18446744073709551615"),
            Some((17, json!(u64::MAX)))
        );
        assert_eq!(decode_cached("17|b|1"), Some((17, json!(true))));
        assert_eq!(decode_cached("17|s|a|b"), Some((17, json!("a|b"))));
        assert_eq!(decode_cached("17|x|1"), None);
        assert_eq!(decode_cached("garbage"), None);
    }
}
