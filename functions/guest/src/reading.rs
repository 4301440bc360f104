//! A reading as the functions see it: a value as precise as the device sent it, and the
//! `(key, value, timestamp)` point that carries it.

use std::fmt;

/// A reading's value, as precise as the device sent it (or as the validator normalised it).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Value {
    /// A whole number that fits `i64` (also the code of an enumeration key).
    Int(i64),
    /// A whole number above `i64` range (u64 counters).
    Uint(u64),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// A JSON `true`/`false`.
    Bool(bool),
    /// A text reading.
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Uint(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// One normalised reading: `(key, value, timestamp)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Dotted ASCII key, unique within the device, e.g. `meter.energy.total`.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Unix time in milliseconds.
    pub ts: i64,
}

#[cfg(test)]
mod tests {
    use super::Value;

    #[test]
    fn text_displays_quoted_and_numbers_plain() {
        assert_eq!(Value::Text("open".into()).to_string(), "\"open\"");
        assert_eq!(Value::Float(83.5).to_string(), "83.5");
        assert_eq!(Value::Uint(u64::MAX).to_string(), "18446744073709551615");
        assert_eq!(Value::Bool(true).to_string(), "true");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_names_are_the_lowercase_variant_names() {
        // Alert state persists values in this form: changing it loses stored state.
        let json = serde_json::to_string(&Value::Float(1.5)).unwrap();
        assert_eq!(json, r#"{"float":1.5}"#);
        let json = serde_json::to_string(&Value::Bool(true)).unwrap();
        assert_eq!(json, r#"{"bool":true}"#);
    }
}
