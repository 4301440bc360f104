//! Outages of the stores: without PostgreSQL nothing is acknowledged (the device keeps its
//! points and retries); without Redis submits go on and the cache is repaired afterwards.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;
use weir_tests::poll::eventually;

use super::harness::{TestHost, assert_error, batch, now_ms, ok, point};

const ORG: &str = "acme";

/// How long the repair task may take once Redis is back (it runs every 2 s).
const REPAIR_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn ingest_without_postgres_answers_503_and_stores_the_retry_once() {
    let mut host = TestHost::start().await;
    let mut meter = host.device("meter-pg-outage", ORG).await;
    let now = now_ms();
    ok(&meter
        .submit(&batch(
            "before",
            vec![point("meter.power", 1.0, now - 1000)],
        ))
        .await);
    let body = batch(
        "during",
        vec![
            point("meter.power", 2.0, now),
            point("meter.energy", 10, now),
        ],
    );

    host.stop_postgres();
    let refused = meter.submit(&body).await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    );
    assert!(refused.retry_after().is_some(), "{:?}", refused.headers);
    host.start_postgres_again();

    assert_eq!(
        host.count(meter.id()).await,
        1,
        "nothing of the refused batch"
    );
    let retried = ok(&meter.submit(&body).await);
    assert_eq!(
        (&retried["duplicate"], &retried["accepted"]),
        (&json!(false), &json!(2))
    );
    let resent = ok(&meter.submit(&body).await);
    assert_eq!(resent["duplicate"], json!(true));
    assert_eq!(host.count(meter.id()).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_without_redis_still_stores_and_repairs_latest_afterwards() {
    let mut host = TestHost::start().await;
    let mut meter = host.device("meter-redis-outage", ORG).await;
    let now = now_ms();
    let before = batch(
        "before",
        vec![
            point("meter.power", 1.0, now - 1000),
            point("meter.energy", 10, now - 1000),
        ],
    );
    ok(&meter.submit(&before).await);

    host.stop_redis();
    let during = batch("during", vec![point("meter.power", 2.0, now)]);
    assert_eq!(ok(&meter.submit(&during).await)["accepted"], json!(1));
    // The restarted Redis is empty: the repair must bring back every key of the device, also
    // the one the failed update did not touch.
    host.start_redis_again();

    let in_postgres = host.latest_in_postgres(meter.id()).await;
    assert_eq!(in_postgres.len(), 2);
    eventually(
        "Redis latest values equal PostgreSQL's",
        REPAIR_DEADLINE,
        Duration::from_millis(100),
        async || {
            host.host()
                .latest()
                .get(meter.id())
                .await
                .is_ok_and(|cached| cached == in_postgres)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_database_answers_503_after_the_statement_timeout_and_frees_the_slot() {
    let host = TestHost::start_with(|config| config.ingest.statement_timeout_ms = 1000).await;
    let mut meter = host.device("meter-stall", ORG).await;
    let body = batch("stalled", vec![point("meter.power", 1.0, now_ms())]);

    // Someone holds a lock every batch needs: the statement waits, and is cancelled.
    let (mut locker, connection) =
        tokio_postgres::connect(&host.stack().postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE batches IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = meter.submit(&body).await;
    let waited = started.elapsed();
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    );
    assert!(
        waited < Duration::from_secs(5),
        "answered after the 1 s statement timeout, not when the lock ends: {waited:?}"
    );
    let text = String::from_utf8_lossy(&refused.body);
    assert!(
        !text.contains("statement") && !text.contains("batches"),
        "no SQL text reaches the device: {text}"
    );
    lock.rollback().await.unwrap();

    let stored = ok(&meter.submit(&body).await);
    assert_eq!(
        (&stored["duplicate"], &stored["accepted"]),
        (&json!(false), &json!(1))
    );
}
