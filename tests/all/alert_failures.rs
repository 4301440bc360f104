//! A broken alerter never costs a batch: the hostile alerter component
//! (`target/functions/test/hostile-alerter.wasm`) loops or traps on request, and the host stores
//! and acknowledges the batch all the same, stops the alerter at its deadline, logs and counts the
//! failure, retries it, gives the poison batch up after `ingest.followup_evaluation_attempts`,
//! and evaluates the batches that follow.

use std::time::{Duration, Instant};

use serde_json::json;
use weir_tests::poll::eventually;

use crate::alerting::host_with_rule_files;
use crate::ingest::harness::{TestHost, batch, now_ms, ok, point};
use crate::support::component_path;

/// A host whose alerter is the hostile one, with a short deadline, and its rules directory
/// (kept alive by the caller), whose one file gives the hostile alerter its rule.
async fn host_with_hostile_alerter() -> (TestHost, tempfile::TempDir) {
    host_with_hostile_alerter_for(Duration::from_millis(200)).await
}

/// [`host_with_hostile_alerter`] with the alerter's deadline `deadline`.
async fn host_with_hostile_alerter_for(deadline: Duration) -> (TestHost, tempfile::TempDir) {
    let component = component_path("test/hostile-alerter.wasm");
    // The hostile alerter accepts any rule file as one rule watching every key.
    host_with_rule_files(&[("acme.toml", "# any rules\n")], move |config| {
        config.alerting.component = component;
        config.alerting.deadline_ms = Some(deadline.as_millis() as u64);
    })
    .await
}

/// A batch whose `hostile.loop` point makes the hostile alerter loop, with a point beside it.
fn looping_batch(t: i64) -> serde_json::Value {
    batch(
        "loop-1",
        vec![
            point("hostile.loop", json!(1), t),
            point("meter.1.energy", json!(5), t),
        ],
    )
}

/// The value of `weir_alert_failures_total{code}` on the host's `/metrics` (0 when absent).
async fn alert_failures(host: &TestHost, code: &str) -> u64 {
    let (_, metrics) = host.api_get("/metrics").await;
    let series = format!("weir_alert_failures_total{{code=\"{code}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// The value of `weir_followups_failed_total{code}` on the host's `/metrics` (0 when absent).
async fn given_up(host: &TestHost, code: &str) -> u64 {
    let (_, metrics) = host.api_get("/metrics").await;
    let series = format!("weir_followups_failed_total{{code=\"{code}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Submits `poison` (stored all the same), waits until its evaluation failed with `code` the
/// configured number of times and was given up, then proves a calm batch after it is
/// evaluated without another failure.
async fn poison_is_given_up_and_the_next_batch_evaluated(poison: serde_json::Value, code: &str) {
    let (host, _rules) = host_with_hostile_alerter().await;
    let mut meter = host.device("m1", "acme").await;
    let t = now_ms();
    let points = poison["points"].as_array().unwrap().len();

    let receipt = ok(&meter.submit(&poison).await);
    assert_eq!(receipt["accepted"], json!(points), "{receipt}");
    assert_eq!(host.count(meter.id()).await, points as i64);
    assert!(alert_failures(&host, code).await >= 1);
    eventually(
        "the poison batch given up",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || given_up(&host, code).await == 1,
    )
    .await;
    let attempts = weir::Config::default().ingest.followup_evaluation_attempts as u64;
    assert_eq!(alert_failures(&host, code).await, attempts);

    // The host goes on: the next batch is stored and evaluated without a failure.
    let calm = batch("calm-1", vec![point("meter.1.energy", json!(6), t + 1000)]);
    let receipt = ok(&meter.submit(&calm).await);
    assert_eq!(receipt["accepted"], json!(1), "{receipt}");
    assert_eq!(host.count(meter.id()).await, points as i64 + 1);
    crate::followups::all_followups_done(&host).await;
    assert_eq!(alert_failures(&host, code).await, attempts);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_alerter_is_stopped_by_its_deadline_and_the_batch_is_stored() {
    poison_is_given_up_and_the_next_batch_evaluated(
        looping_batch(now_ms()),
        "function_deadline_exceeded",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_alerter_is_counted_and_the_batch_is_stored() {
    // A trap leaves no poisoned instance behind.
    let trapping = batch("trap-1", vec![point("hostile.trap", json!(true), now_ms())]);
    poison_is_given_up_and_the_next_batch_evaluated(trapping, "function_trapped").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_alerter_holds_up_nothing_else_while_it_runs() {
    const LOOPS_FOR: Duration = Duration::from_secs(3);
    let (host, _rules) = host_with_hostile_alerter_for(LOOPS_FOR).await;
    let mut looping_meter = host.device("m1", "acme").await;
    let mut calm_meter = host.device("m2", "acme").await;
    let t = now_ms();
    let looping = looping_batch(t);
    let started = Instant::now();
    let in_flight = tokio::spawn(async move { looping_meter.submit(&looping).await });

    // The call yields at every epoch tick: the rest of the host (and this test) goes on.
    eventually(
        "the looping batch is stored",
        LOOPS_FOR / 2,
        Duration::from_millis(100),
        async || {
            host.count(&weir_storage::DeviceRef::new("acme", "m1"))
                .await
                == 2
        },
    )
    .await;
    let calm = batch("calm-1", vec![point("meter.1.energy", json!(6), t)]);
    let receipt = ok(&calm_meter.submit(&calm).await);
    assert_eq!(receipt["accepted"], json!(1), "{receipt}");
    assert!(
        !in_flight.is_finished(),
        "another device was answered after {:?}, while the alerter still looped",
        started.elapsed()
    );

    let receipt = ok(&in_flight.await.unwrap());
    assert_eq!(receipt["accepted"], json!(2), "{receipt}");
    assert!(
        started.elapsed() >= LOOPS_FOR,
        "stopped by its deadline only"
    );
    assert!(alert_failures(&host, "function_deadline_exceeded").await >= 1);
}
