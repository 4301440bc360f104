//! The default validator, run as a real compiled component through wasmtime, gives the
//! expected verdict for every type, good and bad, in one batch.

use std::time::Duration;

use weir_runtime::validator::{
    DataType, KeyMetadata, Point, Reason, UnknownKeyPolicy, Value, Verdict,
};

use crate::support::{self, NOW, meta, point};

/// What a test expects for one point.
#[derive(Debug)]
enum Expect {
    Accepted(Value),
    Rejected(Reason),
}

fn ranged(key: &str, data_type: DataType, min: f64, max: f64) -> KeyMetadata {
    KeyMetadata {
        min: Some(min),
        max: Some(max),
        ..meta(key, data_type)
    }
}

fn states(key: &str) -> KeyMetadata {
    KeyMetadata {
        value_map: vec![(0, "off".into()), (1, "on".into()), (2, "fault".into())],
        ..meta(key, DataType::Enumeration)
    }
}

fn metadata() -> Vec<KeyMetadata> {
    vec![
        meta("t.f64", DataType::Float64),
        meta("t.f32", DataType::Float32),
        meta("t.i8", DataType::Int8),
        meta("t.u8", DataType::Uint8),
        meta("t.i16", DataType::Int16),
        meta("t.u16", DataType::Uint16),
        meta("t.i32", DataType::Int32),
        meta("t.u32", DataType::Uint32),
        meta("t.i64", DataType::Int64),
        meta("t.u64", DataType::Uint64),
        meta("t.bool", DataType::Boolean),
        meta("t.text", DataType::Text),
        states("t.state"),
        ranged("t.voltage", DataType::Float64, 0.0, 400.0),
    ]
}

fn cases() -> Vec<(Point, Expect)> {
    use Expect::{Accepted, Rejected};
    use Value::{Boolean, Float, Int, Text, Uint};
    let at = |key: &str, value: Value, ts: i64| Point {
        key: key.into(),
        value,
        ts,
    };
    vec![
        (point("t.f64", Float(230.25)), Accepted(Float(230.25))),
        (point("t.f64", Int(7)), Accepted(Float(7.0))),
        (point("t.f64", Float(f64::NAN)), Rejected(Reason::NotFinite)),
        (
            point("t.f64", Float(f64::INFINITY)),
            Rejected(Reason::NotFinite),
        ),
        (
            point("t.f64", Text("1.5".into())),
            Rejected(Reason::TypeMismatch),
        ),
        (point("t.f32", Float(0.1)), Accepted(Float(0.1f32 as f64))),
        (point("t.f32", Float(1e39)), Rejected(Reason::OutOfRange)),
        (point("t.i8", Int(-128)), Accepted(Int(-128))),
        (point("t.i8", Int(128)), Rejected(Reason::OutOfRange)),
        (point("t.u8", Int(255)), Accepted(Int(255))),
        (point("t.u8", Int(-1)), Rejected(Reason::OutOfRange)),
        (point("t.i16", Int(-32768)), Accepted(Int(-32768))),
        (point("t.i16", Float(12.5)), Rejected(Reason::TypeMismatch)),
        (point("t.u16", Int(65535)), Accepted(Int(65535))),
        (point("t.u16", Int(70000)), Rejected(Reason::OutOfRange)),
        (
            point("t.i32", Int(i32::MIN as i64)),
            Accepted(Int(i32::MIN as i64)),
        ),
        (
            point("t.i32", Int(i32::MAX as i64 + 1)),
            Rejected(Reason::OutOfRange),
        ),
        (
            point("t.u32", Int(u32::MAX as i64)),
            Accepted(Int(u32::MAX as i64)),
        ),
        (point("t.u32", Int(-1)), Rejected(Reason::OutOfRange)),
        (point("t.i64", Int(i64::MIN)), Accepted(Int(i64::MIN))),
        (point("t.i64", Uint(u64::MAX)), Rejected(Reason::OutOfRange)),
        (point("t.u64", Uint(u64::MAX)), Accepted(Uint(u64::MAX))),
        (
            point("t.u64", Boolean(true)),
            Rejected(Reason::TypeMismatch),
        ),
        (point("t.bool", Int(1)), Accepted(Boolean(true))),
        (point("t.bool", Boolean(false)), Accepted(Boolean(false))),
        (
            point("t.bool", Text("true".into())),
            Rejected(Reason::TypeMismatch),
        ),
        (point("t.bool", Int(2)), Rejected(Reason::OutOfRange)),
        (
            point("t.text", Text("pump ok".into())),
            Accepted(Text("pump ok".into())),
        ),
        (
            point("t.text", Text("x".repeat(17))),
            Rejected(Reason::TextTooLong),
        ),
        (point("t.text", Float(1.0)), Rejected(Reason::TypeMismatch)),
        (point("t.state", Int(2)), Accepted(Int(2))),
        (point("t.state", Text("on".into())), Accepted(Int(1))),
        (point("t.state", Int(3)), Rejected(Reason::UnknownEnumValue)),
        (point("t.voltage", Float(231.0)), Accepted(Float(231.0))),
        (
            point("t.voltage", Float(400.5)),
            Rejected(Reason::OutOfRange),
        ),
        (point("no.metadata", Float(3.0)), Accepted(Float(3.0))),
        (point("t..f64", Float(1.0)), Rejected(Reason::InvalidKey)),
        (
            point("weir.internal", Float(1.0)),
            Rejected(Reason::ReservedKey),
        ),
        (
            at("t.f64", Float(1.0), NOW + 60 * 60 * 1000),
            Rejected(Reason::FutureTimestamp),
        ),
        (
            at("t.f64", Float(1.0), NOW - 11 * 365 * 24 * 3600 * 1000),
            Rejected(Reason::AncientTimestamp),
        ),
    ]
}

fn assert_verdicts(cases: &[(Point, Expect)], verdicts: &[Verdict]) {
    assert_eq!(verdicts.len(), cases.len(), "one verdict per point");
    for (index, ((point, expect), verdict)) in cases.iter().zip(verdicts).enumerate() {
        match (expect, verdict) {
            (Expect::Accepted(want), Verdict::Accepted(got)) => {
                assert_eq!(got, want, "point {index} ({point:?})");
            }
            (Expect::Rejected(want), Verdict::Rejected(rejection)) => {
                assert_eq!(rejection.reason, *want, "point {index} ({point:?})");
                assert!(
                    !rejection.message.is_empty(),
                    "point {index}: a rejection explains itself"
                );
            }
            _ => panic!("point {index} ({point:?}): expected {expect:?}, got {verdict:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_gets_its_verdict_through_the_component() {
    let engine = support::engine(Duration::from_secs(2), 64);
    let validator = support::load(&engine, support::VALIDATOR);
    let cases = cases();
    let points: Vec<Point> = cases.iter().map(|(p, _)| p.clone()).collect();
    let verdicts = validator
        .validate(
            &points,
            &metadata(),
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await
        .expect("the validator answers");
    assert_verdicts(&cases, &verdicts);
}

#[tokio::test(flavor = "multi_thread")]
async fn component_agrees_with_the_native_library() {
    let engine = support::engine(Duration::from_secs(2), 64);
    let validator = support::load(&engine, support::VALIDATOR);
    let cases = cases();
    let points: Vec<Point> = cases.iter().map(|(p, _)| p.clone()).collect();
    let through_wasm = validator
        .validate(
            &points,
            &metadata(),
            support::policy(UnknownKeyPolicy::Reject),
        )
        .await
        .unwrap();
    let native = weir_validate::validate_batch(
        &points
            .iter()
            .map(weir_tests::native::point)
            .collect::<Vec<_>>(),
        &metadata()
            .iter()
            .map(weir_tests::native::metadata)
            .collect::<Vec<_>>(),
        &weir_tests::native::policy(&support::policy(UnknownKeyPolicy::Reject)),
    );
    assert_eq!(through_wasm.len(), native.len());
    for (index, (wasm, native)) in through_wasm.iter().zip(&native).enumerate() {
        assert_eq!(
            weir_tests::native::verdict_summary(wasm),
            weir_tests::native::native_summary(native),
            "point {index}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_rejected_when_the_policy_says_so() {
    let engine = support::engine(Duration::from_secs(2), 64);
    let validator = support::load(&engine, support::VALIDATOR);
    let points = [
        point("t.f64", Value::Float(1.0)),
        point("no.metadata", Value::Float(1.0)),
    ];
    let verdicts = validator
        .validate(
            &points,
            &metadata(),
            support::policy(UnknownKeyPolicy::Reject),
        )
        .await
        .unwrap();
    assert!(matches!(verdicts[0], Verdict::Accepted(_)));
    match &verdicts[1] {
        Verdict::Rejected(r) => assert_eq!(r.reason, Reason::UnknownKey),
        other => panic!("expected unknown_key, got {other:?}"),
    }
}
