//! Fitting a point's value to its key's type: the type rules, then the key's own min/max, giving
//! either the value normalised to the type or the first rule it breaks. Untyped keys (no metadata)
//! get only the checks that protect storage: finite floats and the text length cap.

use crate::message::{kind, quote, show};
use crate::{DataType, KeyMetadata, Policy, Reason, Rejection, Value};

/// How many value-map entries an unknown-enum-value message lists before it stops.
const LISTED_ENUM_ENTRIES: usize = 8;

/// Accepts a value for a key without metadata unchanged, unless it is not finite or too long.
pub(crate) fn fit_untyped(value: &Value, policy: &Policy) -> Result<Value, Rejection> {
    match value {
        Value::Float(v) => require_finite(*v)?,
        Value::Text(text) => require_short(text, policy.max_text_length)?,
        Value::Int(_) | Value::Uint(_) | Value::Bool(_) => {}
    }
    Ok(value.clone())
}

/// Fits a value to the key's type and min/max, returning it normalised to the type.
pub(crate) fn fit(value: &Value, meta: &KeyMetadata, policy: &Policy) -> Result<Value, Rejection> {
    match meta.data_type {
        DataType::F64 => {
            let v = number(value, DataType::F64)?;
            float_bounds(v, value, meta, |bound| bound)?;
            Ok(Value::Float(v))
        }
        DataType::F32 => {
            let sent = number(value, DataType::F32)?;
            if sent.abs() > f64::from(f32::MAX) {
                return Err(Rejection::new(
                    Reason::OutOfRange,
                    format!(
                        "value {} is out of range for f32 (largest magnitude {:?})",
                        show(value),
                        f32::MAX
                    ),
                ));
            }
            let v = to_f32_precision(sent);
            // Bounds are compared at the precision of the stored value too: a device that reads
            // 0.1 as f32 must not be rejected by a max of 0.1 because 0.1f32 is 0.10000000149.
            float_bounds(v, value, meta, to_f32_precision)?;
            Ok(Value::Float(v))
        }
        DataType::I8 => integer(value, meta, i8::MIN.into(), i8::MAX.into()),
        DataType::U8 => integer(value, meta, u8::MIN.into(), u8::MAX.into()),
        DataType::I16 => integer(value, meta, i16::MIN.into(), i16::MAX.into()),
        DataType::U16 => integer(value, meta, u16::MIN.into(), u16::MAX.into()),
        DataType::I32 => integer(value, meta, i32::MIN.into(), i32::MAX.into()),
        DataType::U32 => integer(value, meta, u32::MIN.into(), u32::MAX.into()),
        DataType::I64 => integer(value, meta, i64::MIN.into(), i64::MAX.into()),
        DataType::U64 => integer(value, meta, u64::MIN.into(), u64::MAX.into()),
        DataType::Bool => boolean(value),
        DataType::Text => match value {
            Value::Text(text) => {
                require_short(text, policy.max_text_length)?;
                Ok(value.clone())
            }
            _ => Err(mismatch(value, DataType::Text)),
        },
        DataType::Enum => enumeration(value, meta),
    }
}

/// A finite number from an integer or a float; booleans and text do not fit a float type.
fn number(value: &Value, data_type: DataType) -> Result<f64, Rejection> {
    match *value {
        Value::Int(n) => Ok(n as f64),
        Value::Uint(n) => Ok(n as f64),
        Value::Float(v) => {
            require_finite(v)?;
            Ok(v)
        }
        Value::Bool(_) | Value::Text(_) => Err(mismatch(value, data_type)),
    }
}

fn to_f32_precision(v: f64) -> f64 {
    f64::from(v as f32)
}

/// Checks a float against the key's bounds, each passed through `round` first.
fn float_bounds(
    v: f64,
    sent: &Value,
    meta: &KeyMetadata,
    round: fn(f64) -> f64,
) -> Result<(), Rejection> {
    if let Some(min) = meta.min
        && v < round(min)
    {
        return Err(below_min(sent, min));
    }
    if let Some(max) = meta.max
        && v > round(max)
    {
        return Err(above_max(sent, max));
    }
    Ok(())
}

/// An integer within `lo..=hi` and the key's bounds; a float is a type mismatch even when whole,
/// because the device sent a float for an integer key.
fn integer(value: &Value, meta: &KeyMetadata, lo: i128, hi: i128) -> Result<Value, Rejection> {
    let n = match *value {
        Value::Int(n) => i128::from(n),
        Value::Uint(n) => i128::from(n),
        Value::Float(_) | Value::Bool(_) | Value::Text(_) => {
            return Err(mismatch(value, meta.data_type));
        }
    };
    if n < lo || n > hi {
        return Err(Rejection::new(
            Reason::OutOfRange,
            format!(
                "value {n} is out of range for {} ({lo}..={hi})",
                meta.data_type.name()
            ),
        ));
    }
    // Compared exactly: `n as f64` rounds above 2^53, so the bound is rounded instead, to the
    // integer that decides the comparison. Float-to-int casts saturate; a NaN bound is no bound.
    if let Some(min) = meta.min
        && !min.is_nan()
        && n < min.ceil() as i128
    {
        return Err(below_min(value, min));
    }
    if let Some(max) = meta.max
        && !max.is_nan()
        && n > max.floor() as i128
    {
        return Err(above_max(value, max));
    }
    Ok(match i64::try_from(n) {
        Ok(n) => Value::Int(n),
        // Within `lo..=hi` and above `i64`, so a u64 value: the cast is exact.
        Err(_) => Value::Uint(n as u64),
    })
}

/// `true`/`false`, or the integers 0 and 1; text such as `"true"` is a type mismatch.
fn boolean(value: &Value) -> Result<Value, Rejection> {
    match *value {
        Value::Bool(b) => Ok(Value::Bool(b)),
        Value::Int(0) | Value::Uint(0) => Ok(Value::Bool(false)),
        Value::Int(1) | Value::Uint(1) => Ok(Value::Bool(true)),
        Value::Int(_) | Value::Uint(_) => Err(Rejection::new(
            Reason::OutOfRange,
            format!("value {} is out of range for bool (0 or 1)", show(value)),
        )),
        Value::Float(_) | Value::Text(_) => Err(mismatch(value, DataType::Bool)),
    }
}

/// A code or a label from the key's value map, normalised to the code.
fn enumeration(value: &Value, meta: &KeyMetadata) -> Result<Value, Rejection> {
    let by_code = |code: i64| meta.value_map.iter().find(|(c, _)| *c == code);
    let entry = match value {
        Value::Int(code) => by_code(*code),
        Value::Uint(code) => i64::try_from(*code).ok().and_then(by_code),
        Value::Text(label) => meta.value_map.iter().find(|(_, l)| l == label),
        Value::Float(_) | Value::Bool(_) => return Err(mismatch(value, DataType::Enum)),
    };
    match entry {
        Some(&(code, _)) => Ok(Value::Int(code)),
        None => Err(unknown_enum_value(value, meta)),
    }
}

fn unknown_enum_value(value: &Value, meta: &KeyMetadata) -> Rejection {
    let what = match value {
        Value::Text(_) => "label",
        _ => "code",
    };
    let map = &meta.value_map;
    let known = if map.is_empty() {
        ", which is empty".to_owned()
    } else {
        let mut listed: Vec<String> = map
            .iter()
            .take(LISTED_ENUM_ENTRIES)
            .map(|(code, label)| format!("{code} {}", quote(label)))
            .collect();
        if map.len() > LISTED_ENUM_ENTRIES {
            listed.push(format!("… {} entries in all", map.len()));
        }
        format!(" ({})", listed.join(", "))
    };
    Rejection::new(
        Reason::UnknownEnumValue,
        format!(
            "{what} {} is not in the key's value map{known}",
            show(value)
        ),
    )
}

fn require_finite(v: f64) -> Result<(), Rejection> {
    if v.is_finite() {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::NotFinite,
        format!("value {v:?} is not a finite number; NaN and infinities cannot be stored"),
    ))
}

fn require_short(text: &str, max_chars: u32) -> Result<(), Rejection> {
    let chars = text.chars().count();
    if chars as u64 <= u64::from(max_chars) {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::TextTooLong,
        format!("text of {chars} characters is longer than the {max_chars} allowed"),
    ))
}

fn mismatch(value: &Value, data_type: DataType) -> Rejection {
    let takes = match data_type {
        DataType::F64 | DataType::F32 => "numbers",
        DataType::I8
        | DataType::U8
        | DataType::I16
        | DataType::U16
        | DataType::I32
        | DataType::U32
        | DataType::I64
        | DataType::U64 => "whole numbers",
        DataType::Bool => "true/false or 0/1",
        DataType::Text => "text",
        DataType::Enum => "a code or a label from the key's value map",
    };
    Rejection::new(
        Reason::TypeMismatch,
        format!(
            "{} {} does not fit type {}, which takes {takes}",
            kind(value),
            show(value),
            data_type.name()
        ),
    )
}

fn below_min(sent: &Value, min: f64) -> Rejection {
    Rejection::new(
        Reason::OutOfRange,
        format!("value {} is below the key's minimum {min}", show(sent)),
    )
}

fn above_max(sent: &Value, max: f64) -> Rejection {
    Rejection::new(
        Reason::OutOfRange,
        format!("value {} is above the key's maximum {max}", show(sent)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(data_type: DataType) -> KeyMetadata {
        KeyMetadata {
            key: "dev.reading".to_owned(),
            data_type,
            min: None,
            max: None,
            value_map: Vec::new(),
        }
    }

    fn bounded(data_type: DataType, min: Option<f64>, max: Option<f64>) -> KeyMetadata {
        KeyMetadata {
            min,
            max,
            ..meta(data_type)
        }
    }

    fn states() -> KeyMetadata {
        KeyMetadata {
            value_map: vec![
                (0, "off".to_owned()),
                (1, "on".to_owned()),
                (2, "fault".to_owned()),
            ],
            ..meta(DataType::Enum)
        }
    }

    fn fit_to(meta: &KeyMetadata, value: Value) -> Result<Value, Rejection> {
        fit(&value, meta, &Policy::with_now(0))
    }

    fn fit_as(data_type: DataType, value: Value) -> Result<Value, Rejection> {
        fit_to(&meta(data_type), value)
    }

    fn reason(outcome: Result<Value, Rejection>) -> Reason {
        outcome.expect_err("value should be rejected").reason
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    /// Every integer type with its limits.
    const INTEGER_TYPES: [(DataType, i128, i128); 8] = [
        (DataType::I8, -128, 127),
        (DataType::U8, 0, 255),
        (DataType::I16, -32_768, 32_767),
        (DataType::U16, 0, 65_535),
        (DataType::I32, -2_147_483_648, 2_147_483_647),
        (DataType::U32, 0, 4_294_967_295),
        (DataType::I64, i64::MIN as i128, i64::MAX as i128),
        (DataType::U64, 0, u64::MAX as i128),
    ];

    /// The value a device would send for `n`: `Int` when it fits, `Uint` above `i64`.
    fn sent(n: i128) -> Option<Value> {
        i64::try_from(n)
            .map(Value::Int)
            .or_else(|_| u64::try_from(n).map(Value::Uint))
            .ok()
    }

    // --- f64 ---

    #[test]
    fn integers_become_floats_for_f64() {
        assert_eq!(
            fit_as(DataType::F64, Value::Int(-7)),
            Ok(Value::Float(-7.0))
        );
        assert_eq!(
            fit_as(DataType::F64, Value::Uint(u64::MAX)),
            Ok(Value::Float(u64::MAX as f64))
        );
    }

    #[test]
    fn finite_floats_are_kept_for_f64() {
        for v in [0.1, -0.0, f64::MAX, f64::MIN, f64::MIN_POSITIVE] {
            assert_eq!(fit_as(DataType::F64, Value::Float(v)), Ok(Value::Float(v)));
        }
    }

    #[test]
    fn nan_and_infinities_are_not_finite_for_f64() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                reason(fit_as(DataType::F64, Value::Float(v))),
                Reason::NotFinite
            );
        }
        assert_eq!(
            fit_as(DataType::F64, Value::Float(f64::NAN))
                .unwrap_err()
                .message,
            "value NaN is not a finite number; NaN and infinities cannot be stored"
        );
    }

    #[test]
    fn bool_and_text_are_type_mismatches_for_floats() {
        for data_type in [DataType::F64, DataType::F32] {
            assert_eq!(
                reason(fit_as(data_type, Value::Bool(true))),
                Reason::TypeMismatch
            );
            assert_eq!(reason(fit_as(data_type, text("1.5"))), Reason::TypeMismatch);
        }
    }

    // --- f32 ---

    #[test]
    fn f32_accepts_its_largest_magnitudes() {
        let max = f64::from(f32::MAX);
        assert_eq!(
            fit_as(DataType::F32, Value::Float(max)),
            Ok(Value::Float(max))
        );
        assert_eq!(
            fit_as(DataType::F32, Value::Float(-max)),
            Ok(Value::Float(-max))
        );
    }

    #[test]
    fn f32_overflow_is_out_of_range() {
        let max = f64::from(f32::MAX);
        // The next f64 above f32::MAX would round back to f32::MAX; it is still too big.
        for v in [max.next_up(), -max.next_up(), 1e39, -1e39, f64::MAX] {
            assert_eq!(
                reason(fit_as(DataType::F32, Value::Float(v))),
                Reason::OutOfRange,
                "{v:?}"
            );
        }
        assert_eq!(
            fit_as(DataType::F32, Value::Float(1e39))
                .unwrap_err()
                .message,
            "value 1e39 is out of range for f32 (largest magnitude 3.4028235e38)"
        );
    }

    #[test]
    fn nan_and_infinities_are_not_finite_for_f32() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                reason(fit_as(DataType::F32, Value::Float(v))),
                Reason::NotFinite
            );
        }
    }

    #[test]
    fn f32_values_are_normalised_to_f32_precision() {
        let stored = fit_as(DataType::F32, Value::Float(0.1)).unwrap();
        assert_eq!(stored, Value::Float(f64::from(0.1f32)));
        assert_ne!(stored, Value::Float(0.1));
    }

    #[test]
    fn integers_become_f32_precision_floats() {
        assert_eq!(
            fit_as(DataType::F32, Value::Int(16_777_217)),
            Ok(Value::Float(16_777_216.0))
        );
        assert_eq!(
            fit_as(DataType::F32, Value::Uint(u64::MAX)),
            Ok(Value::Float(f64::from(u64::MAX as f32)))
        );
    }

    #[test]
    fn f32_bounds_are_compared_at_f32_precision() {
        let meta = bounded(DataType::F32, None, Some(0.1));
        assert_eq!(
            fit_to(&meta, Value::Float(f64::from(0.1f32))),
            Ok(Value::Float(f64::from(0.1f32)))
        );
        assert_eq!(reason(fit_to(&meta, Value::Float(0.2))), Reason::OutOfRange);
    }

    // --- integers ---

    #[test]
    fn integer_types_accept_their_limits() {
        for (data_type, lo, hi) in INTEGER_TYPES {
            for n in [lo, hi] {
                let value = sent(n).unwrap();
                assert_eq!(fit_as(data_type, value.clone()), Ok(value), "{data_type:?}");
            }
        }
    }

    #[test]
    fn integer_types_reject_one_beyond_their_limits() {
        for (data_type, lo, hi) in INTEGER_TYPES {
            // i64::MIN - 1 and u64::MAX + 1 cannot be sent at all.
            for value in [sent(lo - 1), sent(hi + 1)].into_iter().flatten() {
                assert_eq!(
                    reason(fit_as(data_type, value.clone())),
                    Reason::OutOfRange,
                    "{data_type:?} {value:?}"
                );
            }
        }
    }

    #[test]
    fn u16_rejects_70000() {
        let rejection = fit_as(DataType::U16, Value::Int(70_000)).unwrap_err();
        assert_eq!(rejection.reason, Reason::OutOfRange);
        assert_eq!(
            rejection.message,
            "value 70000 is out of range for u16 (0..=65535)"
        );
    }

    #[test]
    fn u32_rejects_minus_one() {
        assert_eq!(
            reason(fit_as(DataType::U32, Value::Int(-1))),
            Reason::OutOfRange
        );
    }

    #[test]
    fn i64_rejects_a_uint_above_i64_max() {
        let value = Value::Uint(i64::MAX as u64 + 1);
        assert_eq!(reason(fit_as(DataType::I64, value)), Reason::OutOfRange);
    }

    #[test]
    fn unsigned_values_up_to_i64_max_normalise_to_int() {
        assert_eq!(fit_as(DataType::U16, Value::Uint(5)), Ok(Value::Int(5)));
        assert_eq!(
            fit_as(DataType::U64, Value::Uint(i64::MAX as u64)),
            Ok(Value::Int(i64::MAX))
        );
    }

    #[test]
    fn u64_values_above_i64_max_stay_uint() {
        let value = Value::Uint(i64::MAX as u64 + 1);
        assert_eq!(fit_as(DataType::U64, value.clone()), Ok(value));
    }

    #[test]
    fn float_for_i16_is_a_type_mismatch() {
        let rejection = fit_as(DataType::I16, Value::Float(12.0)).unwrap_err();
        assert_eq!(rejection.reason, Reason::TypeMismatch);
        assert_eq!(
            rejection.message,
            "float 12.0 does not fit type i16, which takes whole numbers"
        );
    }

    #[test]
    fn floats_bools_and_text_are_type_mismatches_for_every_integer_type() {
        for (data_type, _, _) in INTEGER_TYPES {
            for value in [Value::Float(1.0), Value::Bool(true), text("1")] {
                assert_eq!(
                    reason(fit_as(data_type, value.clone())),
                    Reason::TypeMismatch,
                    "{data_type:?} {value:?}"
                );
            }
        }
    }

    // --- bool ---

    #[test]
    fn bool_accepts_true_and_false() {
        for b in [true, false] {
            assert_eq!(fit_as(DataType::Bool, Value::Bool(b)), Ok(Value::Bool(b)));
        }
    }

    #[test]
    fn zero_and_one_become_bools() {
        assert_eq!(
            fit_as(DataType::Bool, Value::Int(0)),
            Ok(Value::Bool(false))
        );
        assert_eq!(fit_as(DataType::Bool, Value::Int(1)), Ok(Value::Bool(true)));
        assert_eq!(
            fit_as(DataType::Bool, Value::Uint(0)),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            fit_as(DataType::Bool, Value::Uint(1)),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn other_integers_are_out_of_range_for_bool() {
        for value in [Value::Int(2), Value::Int(-1), Value::Uint(u64::MAX)] {
            assert_eq!(reason(fit_as(DataType::Bool, value)), Reason::OutOfRange);
        }
        assert_eq!(
            fit_as(DataType::Bool, Value::Int(2)).unwrap_err().message,
            "value 2 is out of range for bool (0 or 1)"
        );
    }

    #[test]
    fn text_true_for_bool_is_a_type_mismatch() {
        let rejection = fit_as(DataType::Bool, text("true")).unwrap_err();
        assert_eq!(rejection.reason, Reason::TypeMismatch);
        assert_eq!(
            rejection.message,
            "text \"true\" does not fit type bool, which takes true/false or 0/1"
        );
    }

    #[test]
    fn float_for_bool_is_a_type_mismatch() {
        assert_eq!(
            reason(fit_as(DataType::Bool, Value::Float(1.0))),
            Reason::TypeMismatch
        );
    }

    // --- string ---

    #[test]
    fn text_at_the_length_cap_is_accepted() {
        // The cap counts characters, not bytes: 1024 'é' are 2048 bytes.
        let at_cap = text(&"é".repeat(1024));
        assert_eq!(fit_as(DataType::Text, at_cap.clone()), Ok(at_cap));
    }

    #[test]
    fn text_over_the_length_cap_is_too_long() {
        let rejection = fit_as(DataType::Text, text(&"é".repeat(1025))).unwrap_err();
        assert_eq!(rejection.reason, Reason::TextTooLong);
        assert_eq!(
            rejection.message,
            "text of 1025 characters is longer than the 1024 allowed"
        );
    }

    #[test]
    fn non_text_for_string_is_a_type_mismatch() {
        for value in [
            Value::Int(1),
            Value::Uint(u64::MAX),
            Value::Float(1.5),
            Value::Bool(false),
        ] {
            assert_eq!(reason(fit_as(DataType::Text, value)), Reason::TypeMismatch);
        }
    }

    // --- enum ---

    #[test]
    fn enum_code_in_the_map_is_accepted() {
        assert_eq!(fit_to(&states(), Value::Int(2)), Ok(Value::Int(2)));
        assert_eq!(fit_to(&states(), Value::Uint(1)), Ok(Value::Int(1)));
    }

    #[test]
    fn enum_label_is_normalised_to_its_code() {
        assert_eq!(fit_to(&states(), text("fault")), Ok(Value::Int(2)));
    }

    #[test]
    fn enum_code_outside_the_map_is_unknown() {
        for value in [Value::Int(3), Value::Int(-1), Value::Uint(u64::MAX)] {
            assert_eq!(reason(fit_to(&states(), value)), Reason::UnknownEnumValue);
        }
        assert_eq!(
            fit_to(&states(), Value::Int(7)).unwrap_err().message,
            "code 7 is not in the key's value map (0 \"off\", 1 \"on\", 2 \"fault\")"
        );
    }

    #[test]
    fn enum_labels_match_exactly() {
        for label in ["ON", "on ", "broken", ""] {
            assert_eq!(
                reason(fit_to(&states(), text(label))),
                Reason::UnknownEnumValue,
                "{label:?}"
            );
        }
    }

    #[test]
    fn enum_with_an_empty_map_accepts_nothing() {
        let rejection = fit_as(DataType::Enum, Value::Int(0)).unwrap_err();
        assert_eq!(rejection.reason, Reason::UnknownEnumValue);
        assert_eq!(
            rejection.message,
            "code 0 is not in the key's value map, which is empty"
        );
    }

    #[test]
    fn unknown_enum_message_lists_a_long_map_only_in_part() {
        let meta = KeyMetadata {
            value_map: (0..100)
                .map(|code| (code, format!("state{code}")))
                .collect(),
            ..meta(DataType::Enum)
        };
        let message = fit_to(&meta, Value::Int(100)).unwrap_err().message;
        assert!(
            message.contains("7 \"state7\", … 100 entries in all"),
            "{message}"
        );
        assert!(!message.contains("state8"), "{message}");
    }

    #[test]
    fn float_and_bool_for_enum_are_type_mismatches() {
        assert_eq!(
            reason(fit_to(&states(), Value::Float(1.0))),
            Reason::TypeMismatch
        );
        assert_eq!(
            reason(fit_to(&states(), Value::Bool(true))),
            Reason::TypeMismatch
        );
    }

    // --- min/max ---

    #[test]
    fn integer_bounds_are_inclusive() {
        let meta = bounded(DataType::I32, Some(-10.0), Some(100.0));
        assert_eq!(fit_to(&meta, Value::Int(-10)), Ok(Value::Int(-10)));
        assert_eq!(fit_to(&meta, Value::Int(100)), Ok(Value::Int(100)));
        assert_eq!(
            fit_to(&meta, Value::Int(-11)).unwrap_err().message,
            "value -11 is below the key's minimum -10"
        );
        assert_eq!(
            fit_to(&meta, Value::Int(101)).unwrap_err().message,
            "value 101 is above the key's maximum 100"
        );
        assert_eq!(reason(fit_to(&meta, Value::Int(101))), Reason::OutOfRange);
    }

    #[test]
    fn fractional_bounds_apply_to_integers() {
        let meta = bounded(DataType::I16, Some(-0.5), Some(10.5));
        assert_eq!(fit_to(&meta, Value::Int(0)), Ok(Value::Int(0)));
        assert_eq!(fit_to(&meta, Value::Int(10)), Ok(Value::Int(10)));
        assert_eq!(reason(fit_to(&meta, Value::Int(-1))), Reason::OutOfRange);
        assert_eq!(reason(fit_to(&meta, Value::Int(11))), Reason::OutOfRange);
    }

    #[test]
    fn integer_bounds_are_compared_exactly_beyond_f64_precision() {
        // 2^53 + 1 rounds to 2^53 as an f64, so a float comparison would let it through.
        let limit = 9_007_199_254_740_992_i64;
        let meta = bounded(DataType::I64, Some(-(limit as f64)), Some(limit as f64));
        assert_eq!(fit_to(&meta, Value::Int(limit)), Ok(Value::Int(limit)));
        assert_eq!(
            reason(fit_to(&meta, Value::Int(limit + 1))),
            Reason::OutOfRange
        );
        assert_eq!(
            reason(fit_to(&meta, Value::Int(-limit - 1))),
            Reason::OutOfRange
        );
    }

    #[test]
    fn bounds_beyond_the_integer_range_reject_nothing() {
        let meta = bounded(DataType::U64, Some(-1e300), Some(1e300));
        let value = Value::Uint(u64::MAX);
        assert_eq!(fit_to(&meta, value.clone()), Ok(value));
    }

    #[test]
    fn float_bounds_are_inclusive() {
        let meta = bounded(DataType::F64, Some(-0.5), Some(99.5));
        assert_eq!(fit_to(&meta, Value::Float(-0.5)), Ok(Value::Float(-0.5)));
        assert_eq!(fit_to(&meta, Value::Float(99.5)), Ok(Value::Float(99.5)));
        assert_eq!(
            fit_to(&meta, Value::Float(99.500_001)).unwrap_err().message,
            "value 99.500001 is above the key's maximum 99.5"
        );
        assert_eq!(
            reason(fit_to(&meta, Value::Float(-0.500_001))),
            Reason::OutOfRange
        );
    }

    #[test]
    fn float_bounds_apply_to_integers_sent_for_floats() {
        let meta = bounded(DataType::F64, Some(0.0), Some(100.0));
        assert_eq!(
            fit_to(&meta, Value::Int(101)).unwrap_err().message,
            "value 101 is above the key's maximum 100"
        );
    }

    #[test]
    fn type_range_is_checked_before_key_bounds() {
        let meta = bounded(DataType::U16, None, Some(100.0));
        assert_eq!(
            fit_to(&meta, Value::Int(70_000)).unwrap_err().message,
            "value 70000 is out of range for u16 (0..=65535)"
        );
    }

    #[test]
    fn bounds_do_not_apply_to_bool_enum_or_text() {
        let bounds = |data_type| bounded(data_type, Some(5.0), Some(-5.0));
        assert_eq!(
            fit_to(&bounds(DataType::Bool), Value::Int(1)),
            Ok(Value::Bool(true))
        );
        assert_eq!(fit_to(&bounds(DataType::Text), text("x")), Ok(text("x")));
        let enum_meta = KeyMetadata {
            min: Some(5.0),
            max: Some(-5.0),
            ..states()
        };
        assert_eq!(fit_to(&enum_meta, Value::Int(2)), Ok(Value::Int(2)));
    }

    // --- untyped ---

    #[test]
    fn untyped_values_are_kept_unchanged() {
        let policy = Policy::with_now(0);
        for value in [
            Value::Int(-5),
            Value::Uint(5),
            Value::Float(1e300),
            Value::Bool(true),
            text("hello"),
        ] {
            assert_eq!(fit_untyped(&value, &policy), Ok(value.clone()));
        }
    }

    #[test]
    fn untyped_nan_and_infinities_are_not_finite() {
        let policy = Policy::with_now(0);
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                reason(fit_untyped(&Value::Float(v), &policy)),
                Reason::NotFinite
            );
        }
    }

    #[test]
    fn untyped_text_over_the_cap_is_too_long() {
        let policy = Policy {
            max_text_length: 3,
            ..Policy::with_now(0)
        };
        assert_eq!(fit_untyped(&text("abc"), &policy), Ok(text("abc")));
        assert_eq!(
            reason(fit_untyped(&text("abcd"), &policy)),
            Reason::TextTooLong
        );
    }
}
