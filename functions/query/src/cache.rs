//! The Redis cache of latest values as `weir-storage` writes it: one hash per device,
//! `weir:latest:<org>:<device>`, field = key, value = `<ts_ms>|<type>|<value>`.

use serde_json::{Value, json};

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
}
