//! What the device surface refuses before anything is stored: malformed and mistyped bodies,
//! bodies and batches over the configured limits (also when gzip hides the size), and devices
//! over their request rate.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::harness::{TestHost, assert_error, batch, now_ms, ok, point};

const ORG: &str = "acme";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_answers_bad_input_with_a_stable_error_and_stores_nothing() {
    const MAX_BODY: usize = 4096;
    const MAX_POINTS: usize = 5;
    let host = TestHost::start_with(|config| {
        config.ingest.max_body_bytes = MAX_BODY;
        config.ingest.max_batch_points = MAX_POINTS;
    })
    .await;
    let mut meter = host.device("meter-bad-input", ORG).await;
    let now = now_ms();
    let too_many = (0..=MAX_POINTS as i64)
        .map(|i| point("meter.power", 1.0, now - i))
        .collect();
    let oversized = batch(
        "oversized",
        vec![point("meter.note", "x".repeat(MAX_BODY), now)],
    );
    let cases = [
        (
            "malformed JSON",
            br#"{"batch": "b1", "points": [{"key""#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "ts as a string",
            json!({"batch": "b2", "points": [{"key": "meter.power", "value": 1.0, "ts": "now"}]})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "body over max_body_bytes",
            oversized.to_string().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "more points than max_batch_points",
            batch("b4", too_many).to_string().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_points",
        ),
    ];

    for (what, body, status, code) in cases {
        let answer = meter
            .request(
                Method::POST,
                "/v1/submit",
                body,
                &[("content-type", "application/json")],
            )
            .await;
        let message = assert_error(&answer, status, code);
        if what == "ts as a string" {
            assert!(message.contains("points[0].ts"), "{what}: {message}");
        }
    }
    assert_eq!(host.count(meter.id()).await, 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_accepts_gzip_bodies_and_refuses_gzip_bombs() {
    const MAX_BODY: usize = 64 * 1024;
    const POINTS: i64 = 50;
    let host = TestHost::start_with(|config| config.ingest.max_body_bytes = MAX_BODY).await;
    let mut meter = host.device("meter-gzip", ORG).await;
    let now = now_ms();
    let headers = |encoding| {
        [
            ("content-type", "application/json"),
            ("content-encoding", encoding),
        ]
    };

    // Content codings are case-insensitive, and x-gzip is gzip (RFC 9110).
    for (n, encoding) in ["gzip", "GZIP", "x-gzip"].into_iter().enumerate() {
        let ts = now - 1000 * n as i64;
        let points = (0..POINTS)
            .map(|i| point("meter.power", i, ts - i))
            .collect();
        let zipped = gzip(batch(encoding, points).to_string().as_bytes());
        let answer = meter
            .request(Method::POST, "/v1/submit", zipped, &headers(encoding))
            .await;
        assert_eq!(ok(&answer)["accepted"], json!(POINTS), "{encoding}");
    }

    // 8 MiB of JSON whitespace: a few KiB on the wire, far over the limit once decoded.
    let mut bomb = br#"{"batch": "bomb", "points": ["#.to_vec();
    bomb.resize(bomb.len() + (8 << 20), b' ');
    bomb.extend_from_slice(b"]}");
    let bomb = gzip(&bomb);
    assert!(bomb.len() < MAX_BODY, "the bomb fits the wire limit");
    let answer = meter
        .request(Method::POST, "/v1/submit", bomb, &headers("gzip"))
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(host.count(meter.id()).await, 3 * POINTS);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_rate_limits_each_device_with_retry_after() {
    let host = TestHost::start_with(|config| {
        config.ingest.device_rate_per_second = 1.0;
        config.ingest.device_burst = 2.0;
    })
    .await;
    let mut meter = host.device("meter-eager", ORG).await;
    let mut neighbour = host.device("meter-neighbour", ORG).await;
    let now = now_ms();
    let body = |n: i64| {
        batch(
            &format!("eager-{n}"),
            vec![point("meter.power", 1.0, now + n)],
        )
    };

    ok(&meter.submit(&body(1)).await);
    ok(&meter.submit(&body(2)).await);
    let third = meter.submit(&body(3)).await;

    assert_error(&third, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(
        third.retry_after().is_some_and(|s| s >= 1),
        "Retry-After: {:?}",
        third.headers
    );
    assert_eq!(
        host.count(meter.id()).await,
        2,
        "the refused batch is not stored"
    );
    ok(&neighbour.submit(&body(4)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_over_the_device_and_organisation_limits_are_rejected_and_the_rest_stored() {
    let host = TestHost::start_with(|config| {
        config.ingest.max_keys_per_device = 3;
        config.ingest.max_keys_per_org = 5;
    })
    .await;
    let mut first = host.device("m1", ORG).await;
    let t = now_ms();

    // Three keys fit the device; the fourth new one, in batch order, does not.
    let receipt = ok(&first
        .submit(&batch(
            "k1",
            vec![
                point("k.a", 1, t),
                point("k.b", 2, t),
                point("k.c", 3, t),
                point("k.d", 4, t),
                point("k.a", 5, t + 1),
            ],
        ))
        .await);
    assert_eq!(receipt["accepted"], json!(4), "{receipt}");
    assert_eq!(
        super::harness::rejections(&receipt),
        [(3, "k.d".to_owned(), "key_limit_exceeded".to_owned())]
    );
    // Known keys go on; the new one is still refused.
    let receipt = ok(&first
        .submit(&batch(
            "k2",
            vec![point("k.d", 1, t), point("k.b", 6, t + 1)],
        ))
        .await);
    assert_eq!(receipt["accepted"], json!(1), "{receipt}");
    assert_eq!(host.count(first.id()).await, 5);
    let latest = host.latest_in_postgres(first.id()).await;
    assert!(!latest.contains_key("k.d"), "{latest:?}");

    // The organisation has room for two more keys, whichever device takes them.
    let mut second = host.device("m2", ORG).await;
    let receipt = ok(&second
        .submit(&batch(
            "k3",
            vec![point("k.x", 1, t), point("k.y", 1, t), point("k.z", 1, t)],
        ))
        .await);
    assert_eq!(receipt["accepted"], json!(2), "{receipt}");
    assert_eq!(
        super::harness::rejections(&receipt),
        [(2, "k.z".to_owned(), "key_limit_exceeded".to_owned())]
    );
    let mut third = host.device("m3", "globex").await;
    let receipt = ok(&third.submit(&batch("k4", vec![point("k.z", 1, t)])).await);
    assert_eq!(
        receipt["accepted"],
        json!(1),
        "another organisation has its own limit"
    );

    // Declaring metadata cannot create keys past the limit either; existing keys may be
    // described.
    let refused = first
        .send_json(
            Method::PUT,
            "/v1/metadata",
            &json!([{"key": "k.new", "type": "f64"}]),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "key_limit_exceeded");
    let described = ok(&first
        .send_json(
            Method::PUT,
            "/v1/metadata",
            &json!([{"key": "k.a", "type": "f64", "unit": "W"}]),
        )
        .await);
    assert_eq!(described["stored"], json!(1), "{described}");

    let (_, metrics) = host.api_get("/metrics").await;
    assert!(
        metrics.contains("weir_points_rejected_total{code=\"key_limit_exceeded\"} 3"),
        "{metrics}"
    );
}
