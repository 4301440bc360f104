//! A function that loops, hogs memory or traps fails its own call, within its deadline plus a
//! margin, and the host and every other call carry on.

use std::time::{Duration, Instant};

use weir_runtime::CallError;
use weir_runtime::validator::{UnknownKeyPolicy, Value, Verdict};

use crate::support::{self, point};

const DEADLINE: Duration = Duration::from_millis(100);
/// Scheduling slack allowed on top of the deadline. Generous on purpose: how far past it a call
/// ends depends on how loaded the machine is (two cores, many tests at once), not on the
/// sandbox; a broken sandbox never returns at all, and the deadline a stopped call reports is
/// asserted exactly. (No benchmark times the overshoot.)
const MARGIN: Duration = Duration::from_secs(5);

async fn call_hostile(key: &str) -> (Result<Vec<Verdict>, CallError>, Duration) {
    let engine = support::engine(DEADLINE, 16);
    let hostile = support::load(&engine, support::HOSTILE);
    let good = support::load(&engine, support::VALIDATOR);
    let started = Instant::now();
    let outcome = hostile
        .validate(
            &[point(key, Value::Int(1))],
            &[],
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await;
    let elapsed = started.elapsed();
    let next = good
        .validate(
            &[point("after.hostile", Value::Float(1.0))],
            &[],
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await
        .expect("the next call to a good function succeeds");
    assert!(matches!(next[0], Verdict::Accepted(_)));
    (outcome, elapsed)
}

#[tokio::test(flavor = "multi_thread")]
async fn looping_function_is_stopped_at_its_deadline() {
    let (outcome, elapsed) = call_hostile("hostile.loop").await;
    match outcome {
        Err(CallError::DeadlineExceeded { deadline, .. }) => assert_eq!(deadline, DEADLINE),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + MARGIN, "stopped after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_stopped_by_its_memory_cap() {
    let (outcome, elapsed) = call_hostile("hostile.hog").await;
    match outcome {
        Err(error @ CallError::MemoryExhausted { limit_bytes, .. }) => {
            assert_eq!(limit_bytes, 16 << 20);
            assert_eq!(error.code(), "function_memory_exhausted");
        }
        other => panic!("expected a memory error, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + MARGIN, "stopped after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn trapping_function_reports_its_panic_message() {
    let (outcome, elapsed) = call_hostile("hostile.trap").await;
    match outcome {
        Err(CallError::Trapped { message, .. }) => assert!(
            message.contains("hostile validator was asked to trap"),
            "the guest's panic message is quoted: {message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + MARGIN, "stopped after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_call_does_not_disturb_concurrent_good_calls() {
    let engine = support::engine(Duration::from_millis(300), 16);
    let hostile = support::load(&engine, support::HOSTILE);
    let good = std::sync::Arc::new(support::load(&engine, support::VALIDATOR));
    let looping = tokio::spawn(async move {
        hostile
            .validate(
                &[point("hostile.loop", Value::Int(1))],
                &[],
                support::policy(UnknownKeyPolicy::AcceptUntyped),
            )
            .await
    });
    let mut calls = Vec::new();
    for i in 0..40 {
        let good = good.clone();
        calls.push(tokio::spawn(async move {
            good.validate(
                &[point(&format!("meter.k{i}"), Value::Float(i as f64))],
                &[],
                support::policy(UnknownKeyPolicy::AcceptUntyped),
            )
            .await
        }));
    }
    for call in calls {
        let verdicts = call.await.unwrap().expect("good calls succeed");
        assert!(matches!(verdicts[0], Verdict::Accepted(_)));
    }
    assert!(matches!(
        looping.await.unwrap(),
        Err(CallError::DeadlineExceeded { .. })
    ));
}
