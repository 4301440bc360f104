//! A point's value as SQL gives it to this component, and as JSON answers show it: typed like
//! the device sent it (float, integer, unsigned integer above `i64::MAX` exactly, bool, string),
//! non-finite floats as strings (JSON has no number for them).

use serde_json::Value;

/// The SQL expression of a `points` row `p`'s value as `jsonb`, as a literal for `concat!`.
/// `to_jsonb` writes non-finite floats as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
macro_rules! point_value_jsonb {
    () => {
        "(CASE WHEN p.v_float IS NOT NULL THEN to_jsonb(p.v_float) \
              WHEN p.v_int IS NOT NULL THEN to_jsonb(p.v_int) \
              WHEN p.v_numeric IS NOT NULL THEN to_jsonb(p.v_numeric) \
              WHEN p.v_bool IS NOT NULL THEN to_jsonb(p.v_bool) \
              ELSE to_jsonb(p.v_text) END)"
    };
}
pub(crate) use point_value_jsonb;

/// The SQL expression of a `points` row `p`'s value as a number (`float8`): floats, integers,
/// numerics, and bools as 0 or 1; NULL for text. As a literal for `concat!`.
macro_rules! point_value_number {
    () => {
        "COALESCE(p.v_float, p.v_int::float8, p.v_numeric::float8, p.v_bool::int::float8)"
    };
}
pub(crate) use point_value_number;

/// The SQL expression of timestamp `$n` given in unix milliseconds, as a literal for `concat!`.
macro_rules! ts_from_ms {
    ($n:literal) => {
        concat!(
            "(timestamptz 'epoch' + $",
            $n,
            "::int8 * interval '1 millisecond')"
        )
    };
}
pub(crate) use ts_from_ms;

/// Parses the JSON text SQL produced for a value (`to_jsonb(...)::text`); `None` (SQL NULL)
/// is JSON null.
pub fn from_sql_json(text: Option<&str>) -> Result<Value, serde_json::Error> {
    match text {
        Some(text) => serde_json::from_str(text),
        None => Ok(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sql_json_keeps_big_integers_exact() {
        assert_eq!(
            from_sql_json(Some("18446744073709551615")).unwrap(),
            json!(u64::MAX)
        );
        assert_eq!(from_sql_json(Some("\"NaN\"")).unwrap(), json!("NaN"));
        assert_eq!(from_sql_json(None).unwrap(), Value::Null);
    }

    #[test]
    fn timestamps_bind_as_int8() {
        assert_eq!(
            ts_from_ms!(4),
            "(timestamptz 'epoch' + $4::int8 * interval '1 millisecond')"
        );
    }
}
