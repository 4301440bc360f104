//! Swapping a validator while calls run: every call gets a complete answer from exactly one
//! version, none fails, and calls that start after the swap see the new version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use weir_runtime::validator::{UnknownKeyPolicy, Value, Verdict};
use weir_runtime::{FunctionSlot, ValidatorFunction};
use weir_tests::poll::eventually;

use crate::support::{self, HOSTILE_MARK, point};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Which version produced a whole answer; panics on an answer mixing both.
fn version_of(verdicts: &[Verdict]) -> Version {
    let is_v2 = |v: &Verdict| matches!(v, Verdict::Rejected(r) if r.message == HOSTILE_MARK);
    let is_v1 = |v: &Verdict| matches!(v, Verdict::Accepted(_));
    if verdicts.iter().all(is_v1) {
        Version::V1
    } else if verdicts.iter().all(is_v2) {
        Version::V2
    } else {
        panic!("an answer mixes versions: {verdicts:?}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_under_concurrency_gives_whole_answers_from_one_version() {
    const TASKS: usize = 8;
    /// Calls each task makes before the swap is attempted, and after it has happened.
    const CALLS_EACH_SIDE: usize = 15;
    /// Bound on the loop, so a swap that never happens fails the test instead of hanging it.
    const MAX_CALLS_PER_TASK: usize = 5000;
    const POINTS: usize = 50;
    let engine = support::engine(Duration::from_secs(5), 32);
    let slot = Arc::new(FunctionSlot::new(support::load(
        &engine,
        support::VALIDATOR,
    )));
    let swapped = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (slot, swapped, completed) = (slot.clone(), swapped.clone(), completed.clone());
        tasks.push(tokio::spawn(async move {
            let points: Vec<_> = (0..POINTS)
                .map(|i| point(&format!("swap.t{task}.k{i}"), Value::Float(i as f64)))
                .collect();
            let mut seen = Vec::new();
            let mut after_swap = 0;
            while after_swap < CALLS_EACH_SIDE && seen.len() < MAX_CALLS_PER_TASK {
                let started_after_swap = swapped.load(Ordering::SeqCst);
                let validator = slot.current();
                let verdicts = validator
                    .validate(
                        &points,
                        &[],
                        support::policy(UnknownKeyPolicy::AcceptUntyped),
                    )
                    .await
                    .expect("no call fails during a swap");
                assert_eq!(verdicts.len(), POINTS, "a complete answer");
                seen.push((started_after_swap, version_of(&verdicts)));
                after_swap += usize::from(started_after_swap);
                completed.fetch_add(1, Ordering::SeqCst);
            }
            seen
        }));
    }

    // A task that panicked never counts its calls: give up then rather than hang.
    eventually(
        "every task's calls before the swap",
        Duration::from_secs(60),
        Duration::from_millis(1),
        async || completed.load(Ordering::SeqCst) >= TASKS * CALLS_EACH_SIDE,
    )
    .await;
    // Compiled and linked while the calls run; only then swapped in.
    let engine_for_load = engine.clone();
    let v2 = tokio::task::spawn_blocking(move || {
        ValidatorFunction::load_file(&engine_for_load, &support::component_path(support::HOSTILE))
    })
    .await
    .unwrap()
    .expect("v2 loads");
    slot.replace(v2);
    swapped.store(true, Ordering::SeqCst);

    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("no task panics"));
    }
    let after_swap: Vec<_> = answers.iter().filter(|(after, _)| *after).collect();
    assert!(
        after_swap
            .iter()
            .all(|(_, version)| *version == Version::V2),
        "calls started after the swap see v2"
    );
    assert!(
        answers.iter().any(|(_, v)| *v == Version::V1),
        "some calls ran on v1"
    );
    assert!(
        after_swap.len() >= TASKS * CALLS_EACH_SIDE,
        "every task made its calls after the swap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_in_flight_finishes_on_the_version_it_started_with() {
    let engine = support::engine(Duration::from_secs(5), 32);
    let slot = FunctionSlot::new(support::load(&engine, support::VALIDATOR));
    let v1 = slot.current();
    slot.replace(support::load(&engine, support::HOSTILE));
    let verdicts = v1
        .validate(
            &[point("inflight.k", Value::Float(2.0))],
            &[],
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await
        .unwrap();
    assert_eq!(version_of(&verdicts), Version::V1);
    let verdicts = slot
        .current()
        .validate(
            &[point("inflight.k", Value::Float(2.0))],
            &[],
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await
        .unwrap();
    assert_eq!(version_of(&verdicts), Version::V2);
}
