//! The API listener: liveness, readiness naming the store that is down, and Prometheus
//! metrics that count what devices submitted.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value as Json, json};
use weir_tests::poll::eventually;

use super::harness::{TestHost, batch, now_ms, ok, point};

const ORG: &str = "acme";

/// The value of the sample `name` (with its labels, as printed) in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_health_and_readiness_follow_the_stores() {
    let mut host = TestHost::start().await;
    assert_eq!(host.api_get("/healthz").await.0, StatusCode::OK);
    let (status, body) = host.api_get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    host.stop_redis();

    // A verdict is reused for a second (so probes cannot hammer the stores): wait it out.
    let body = eventually(
        "readiness sees Redis down",
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let (status, body) = host.api_get("/readyz").await;
            (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
        },
    )
    .await;
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(body["postgres"], json!("ok"), "{body}");
    assert_eq!(
        body["redis"],
        json!("unavailable"),
        "readiness names Redis, without internal error text: {body}"
    );
    assert_eq!(
        host.api_get("/healthz").await.0,
        StatusCode::OK,
        "alive while a store is down"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_metrics_count_batches_points_and_refused_handshakes() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-metrics", ORG).await;
    let now = now_ms();
    let first = batch(
        "m1",
        vec![
            point("meter.power", 1.0, now),
            point("meter.power", 2.0, now - 1),
            point("meter..bad", 3.0, now),
        ],
    );
    ok(&meter.submit(&first).await);
    ok(&meter.submit(&first).await);
    ok(&meter
        .submit(&batch("m2", vec![point("meter.power", 3.0, now - 2)]))
        .await);

    assert!(
        host.is_refused(host.foreign_certificate("meter-stranger", ORG))
            .await
    );

    // The host counts a refusal just after the device sees it: scrape until it shows.
    let metrics = eventually(
        "the refused handshake is counted",
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || {
            let (status, text) = host.api_get("/metrics").await;
            assert_eq!(status, StatusCode::OK);
            (sample(&text, "weir_tls_handshakes_refused_total") == Some(1.0)).then_some(text)
        },
    )
    .await;
    let expected = [
        (r#"weir_batches_total{code="stored"}"#, 2.0),
        (r#"weir_batches_total{code="duplicate"}"#, 1.0),
        ("weir_points_accepted_total", 3.0),
        (r#"weir_points_rejected_total{code="invalid_key"}"#, 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(sample(&metrics, name), Some(value), "{name} in:\n{metrics}");
    }
}
