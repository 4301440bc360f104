//! Weir's default validator: judges every point of an uploaded batch against its key's metadata
//! and the host's policy, and answers one verdict per point, so that one bad point is rejected
//! with a reason while the rest of the batch is stored. Plain Rust, unit-tested natively; the
//! `component` module (wasm only) wraps it as the `weir:functions/validate` WIT interface.
//!
//! Rules, in order; the first that fails gives the verdict:
//! 1. key syntax and the reserved `weir.` prefix ([`check_key`]);
//! 2. timestamp within the policy's clock skew and maximum age;
//! 3. metadata: a key without any is rejected or accepted untyped, per [`UnknownKeyPolicy`];
//! 4. the value fits the key's [`DataType`], and is normalised to it;
//! 5. the value is within the key's `min`/`max` (numeric types only).

#![warn(missing_docs)]

// The bindings `wit_bindgen::generate!` writes export functions through the canonical ABI,
// which takes `unsafe` and `export_name`; the component glue is the only place allowed them.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

mod key;
mod message;
mod policy;
mod rules;
mod types;
mod verdict;

use std::collections::HashMap;

use crate::message::quote;

pub use key::check_key;
pub use policy::{Policy, UnknownKeyPolicy};
pub use types::{DataType, KeyMetadata, Point, Value};
pub use verdict::{Reason, Rejection, Verdict};

/// Judges every point of a batch: exactly one verdict per point, in the order of `points`.
///
/// `metadata` holds the metadata of the batch's keys that have any; if it lists a key twice, the
/// first entry wins.
///
/// ```
/// use weir_validate::{validate_batch, DataType, KeyMetadata, Point, Policy, Reason, Value, Verdict};
///
/// let now = 1_700_000_000_000;
/// let metadata = [KeyMetadata {
///     key: "pump.pressure".to_owned(),
///     data_type: DataType::U16,
///     min: None,
///     max: None,
///     value_map: Vec::new(),
/// }];
/// let points = [
///     Point { key: "pump.pressure".to_owned(), value: Value::Int(1013), ts: now },
///     Point { key: "pump.pressure".to_owned(), value: Value::Int(70_000), ts: now },
/// ];
/// let verdicts = validate_batch(&points, &metadata, &Policy::with_now(now));
/// assert_eq!(verdicts[0], Verdict::Accepted(Value::Int(1013)));
/// assert!(matches!(&verdicts[1], Verdict::Rejected(r) if r.reason == Reason::OutOfRange));
/// ```
pub fn validate_batch(points: &[Point], metadata: &[KeyMetadata], policy: &Policy) -> Vec<Verdict> {
    let mut by_key: HashMap<&str, &KeyMetadata> = HashMap::with_capacity(metadata.len());
    for meta in metadata {
        by_key.entry(meta.key.as_str()).or_insert(meta);
    }
    points
        .iter()
        .map(|point| judge(point, &by_key, policy).into())
        .collect()
}

/// Applies the rules to one point, in order, stopping at the first that fails.
fn judge(
    point: &Point,
    by_key: &HashMap<&str, &KeyMetadata>,
    policy: &Policy,
) -> Result<Value, Rejection> {
    check_key(&point.key)?;
    policy.check_timestamp(point.ts)?;
    match by_key.get(point.key.as_str()) {
        Some(meta) => rules::fit(&point.value, meta, policy),
        None => match policy.unknown_keys {
            UnknownKeyPolicy::AcceptUntyped => rules::fit_untyped(&point.value, policy),
            UnknownKeyPolicy::Reject => Err(Rejection::new(
                Reason::UnknownKey,
                format!(
                    "key {} has no metadata and this server rejects unknown keys; send the key's metadata first",
                    quote(&point.key)
                ),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_893_452_400_000;

    fn point(key: &str, value: Value) -> Point {
        Point {
            key: key.to_owned(),
            value,
            ts: NOW,
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn meta(key: &str, data_type: DataType) -> KeyMetadata {
        KeyMetadata {
            key: key.to_owned(),
            data_type,
            min: None,
            max: None,
            value_map: Vec::new(),
        }
    }

    fn strict() -> Policy {
        Policy {
            unknown_keys: UnknownKeyPolicy::Reject,
            ..Policy::with_now(NOW)
        }
    }

    fn reasons(verdicts: &[Verdict]) -> Vec<Option<Reason>> {
        verdicts
            .iter()
            .map(|verdict| match verdict {
                Verdict::Accepted(_) => None,
                Verdict::Rejected(rejection) => Some(rejection.reason),
            })
            .collect()
    }

    fn only_reason(points: &[Point], metadata: &[KeyMetadata], policy: &Policy) -> Option<Reason> {
        let verdicts = validate_batch(points, metadata, policy);
        assert_eq!(verdicts.len(), 1);
        reasons(&verdicts)[0]
    }

    #[test]
    fn one_verdict_per_point_in_order_and_bad_points_do_not_affect_the_rest() {
        let metadata = [
            meta("pump.pressure", DataType::U16),
            meta("pump.running", DataType::Bool),
            meta("room.temp", DataType::F32),
            KeyMetadata {
                value_map: vec![(0, "off".to_owned()), (1, "on".to_owned())],
                ..meta("pump.state", DataType::Enum)
            },
        ];
        let points = [
            point("pump.pressure", Value::Int(1013)),
            point("pump.pressure", Value::Int(70_000)),
            point("pump.running", text("true")),
            point("pump.running", Value::Int(1)),
            point("a..b", Value::Int(1)),
            Point {
                ts: NOW + 3_600_000,
                ..point("room.temp", Value::Float(21.5))
            },
            point("room.temp", Value::Float(f64::NAN)),
            point("pump.state", text("on")),
            point("pump.state", Value::Int(9)),
            point("weir.uptime", Value::Int(1)),
            point("room.temp", Value::Float(21.5)),
        ];
        let verdicts = validate_batch(&points, &metadata, &Policy::with_now(NOW));
        assert_eq!(
            reasons(&verdicts),
            [
                None,
                Some(Reason::OutOfRange),
                Some(Reason::TypeMismatch),
                None,
                Some(Reason::InvalidKey),
                Some(Reason::FutureTimestamp),
                Some(Reason::NotFinite),
                None,
                Some(Reason::UnknownEnumValue),
                Some(Reason::ReservedKey),
                None,
            ]
        );
        assert_eq!(verdicts[0], Verdict::Accepted(Value::Int(1013)));
        assert_eq!(verdicts[3], Verdict::Accepted(Value::Bool(true)));
        assert_eq!(verdicts[7], Verdict::Accepted(Value::Int(1)));
        assert_eq!(verdicts[10], Verdict::Accepted(Value::Float(21.5)));
    }

    #[test]
    fn empty_batch_gets_no_verdicts() {
        assert_eq!(validate_batch(&[], &[], &Policy::with_now(NOW)), []);
    }

    #[test]
    fn unknown_key_is_rejected_when_the_policy_says_so() {
        let verdicts = validate_batch(&[point("new.key", Value::Int(1))], &[], &strict());
        let Verdict::Rejected(rejection) = &verdicts[0] else {
            panic!("expected a rejection, got {verdicts:?}");
        };
        assert_eq!(rejection.reason, Reason::UnknownKey);
        assert_eq!(
            rejection.message,
            "key \"new.key\" has no metadata and this server rejects unknown keys; send the key's metadata first"
        );
    }

    #[test]
    fn unknown_key_is_accepted_untyped_by_default() {
        let points = [
            point("new.count", Value::Uint(5)),
            point("new.label", text("hello")),
        ];
        assert_eq!(
            validate_batch(&points, &[], &Policy::with_now(NOW)),
            [
                Verdict::Accepted(Value::Uint(5)),
                Verdict::Accepted(text("hello"))
            ]
        );
    }

    #[test]
    fn untyped_keys_still_reject_non_finite_floats_and_long_text() {
        let policy = Policy {
            max_text_length: 4,
            ..Policy::with_now(NOW)
        };
        let points = [
            point("new.a", Value::Float(f64::INFINITY)),
            point("new.b", text("hello")),
        ];
        assert_eq!(
            reasons(&validate_batch(&points, &[], &policy)),
            [Some(Reason::NotFinite), Some(Reason::TextTooLong)]
        );
    }

    #[test]
    fn key_syntax_is_checked_before_the_timestamp() {
        let late = Point {
            ts: NOW + 3_600_000,
            ..point("a..b", Value::Int(1))
        };
        assert_eq!(
            only_reason(&[late], &[], &strict()),
            Some(Reason::InvalidKey)
        );
        let late_reserved = Point {
            ts: NOW + 3_600_000,
            ..point("weir.x", Value::Int(1))
        };
        assert_eq!(
            only_reason(&[late_reserved], &[], &strict()),
            Some(Reason::ReservedKey)
        );
    }

    #[test]
    fn reserved_key_is_rejected_even_with_metadata() {
        let points = [point("weir.x", Value::Int(1))];
        let metadata = [meta("weir.x", DataType::I32)];
        assert_eq!(
            only_reason(&points, &metadata, &Policy::with_now(NOW)),
            Some(Reason::ReservedKey)
        );
    }

    #[test]
    fn timestamp_is_checked_before_the_metadata_lookup() {
        let ancient = Point {
            ts: 0,
            ..point("new.key", Value::Int(1))
        };
        assert_eq!(
            only_reason(&[ancient], &[], &strict()),
            Some(Reason::AncientTimestamp)
        );
    }

    #[test]
    fn timestamp_is_checked_before_the_type() {
        let late = Point {
            ts: NOW + 300_001,
            ..point("pump.pressure", Value::Float(f64::NAN))
        };
        let metadata = [meta("pump.pressure", DataType::U16)];
        assert_eq!(
            only_reason(&[late], &metadata, &Policy::with_now(NOW)),
            Some(Reason::FutureTimestamp)
        );
    }

    #[test]
    fn unknown_key_is_checked_before_the_value() {
        let points = [point("new.key", Value::Float(f64::NAN))];
        assert_eq!(
            only_reason(&points, &[], &strict()),
            Some(Reason::UnknownKey)
        );
    }

    #[test]
    fn metadata_applies_only_to_its_exact_key() {
        let metadata = [meta("pump.pressure", DataType::U16)];
        let points = [
            point("pump.pressure", Value::Float(1.5)),
            point("Pump.pressure", Value::Float(1.5)),
        ];
        assert_eq!(
            reasons(&validate_batch(&points, &metadata, &strict())),
            [Some(Reason::TypeMismatch), Some(Reason::UnknownKey)]
        );
    }

    #[test]
    fn first_metadata_entry_for_a_key_wins() {
        let metadata = [
            meta("pump.pressure", DataType::U16),
            meta("pump.pressure", DataType::F64),
        ];
        let points = [point("pump.pressure", Value::Float(1.5))];
        assert_eq!(
            only_reason(&points, &metadata, &Policy::with_now(NOW)),
            Some(Reason::TypeMismatch)
        );
    }
}
