//! `POST /v1/submit`: each point judged on its own, batches stored exactly once, the
//! first-value-wins conflict policy, and "latest" meaning the newest timestamp.

use hyper::Method;
use serde_json::{Value as Json, json};
use weir_storage::StoredValue;

use super::harness::{Device, TestHost, batch, now_ms, ok, point, rejections};

const ORG: &str = "acme";

/// Types `device`'s keys through `PUT /v1/metadata`; every entry must be stored.
async fn declare(device: &mut Device, entries: Json) {
    let count = entries.as_array().unwrap().len();
    let answer = ok(&device
        .send_json(Method::PUT, "/v1/metadata", &entries)
        .await);
    assert_eq!(answer, json!({"stored": count, "rejected": []}));
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_judges_each_point_and_stores_the_valid_ones() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-verdicts", ORG).await;
    declare(
        &mut meter,
        json!([
            {"key": "pump.temperature", "type": "i16"},
            {"key": "pump.speed", "type": "u16"},
            {"key": "pump.running", "type": "bool"},
            {"key": "pump.state", "type": "enum", "value_map": {"0": "off", "1": "on", "2": "fault"}},
            {"key": "pump.power", "type": "f64", "unit": "W", "max": 1000},
        ]),
    )
    .await;
    let now = now_ms();
    // Distinct timestamps, so that no two points share a series and a timestamp.
    let points = [
        ("pump.temperature", json!(-5), now),
        ("pump.temperature", json!(1.5), now - 1),
        ("pump.speed", json!(70000), now),
        ("pump.running", json!("true"), now),
        ("pump.running", json!(true), now - 1),
        ("pump.state", json!(7), now),
        ("pump.state", json!("on"), now - 1),
        ("pump.power", json!(1500.5), now),
        ("pump.power", json!(230.5), now - 1),
        ("pump..power", json!(1.0), now),
        ("weir.internal", json!(1.0), now),
        ("pump.power", json!(12.0), now + 3_600_000),
        ("pump.untyped", json!(3), now),
    ];
    let body = batch(
        "verdicts-1",
        points
            .iter()
            .map(|(k, v, ts)| point(k, v.clone(), *ts))
            .collect(),
    );

    let receipt = ok(&meter.submit(&body).await);

    let expected = [
        (1, "pump.temperature", "type_mismatch"),
        (2, "pump.speed", "out_of_range"),
        (3, "pump.running", "type_mismatch"),
        (5, "pump.state", "unknown_enum_value"),
        (7, "pump.power", "out_of_range"),
        (9, "pump..power", "invalid_key"),
        (10, "weir.internal", "reserved_key"),
        (11, "pump.power", "future_timestamp"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(i, k, c)| (*i, k.to_string(), c.to_string()))
        .collect();
    assert_eq!(rejections(&receipt), expected, "{receipt}");
    assert_eq!(receipt["accepted"], json!(5), "{receipt}");
    assert_eq!(receipt["batch"], json!("verdicts-1"));
    assert_eq!(receipt["duplicate"], json!(false));
    assert_eq!(host.count(meter.id()).await, 5);
    let latest = host.latest_in_postgres(meter.id()).await;
    assert_eq!(
        latest["pump.state"].value,
        StoredValue::Int(1),
        "an enum label is stored as its code"
    );
    assert_eq!(latest["pump.running"].value, StoredValue::Bool(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_stores_a_resent_batch_once_and_repeats_its_receipt() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-resend", ORG).await;
    let now = now_ms();
    let body = batch(
        "resend-1",
        vec![
            point("meter.energy.total", 1200.5, now),
            point("meter.energy.total", 1201.0, now + 1),
            point("meter..bad", 1, now),
        ],
    );

    let first = ok(&meter.submit(&body).await);
    let again = ok(&meter.submit(&body).await);

    assert_eq!(first["duplicate"], json!(false));
    assert_eq!(first["accepted"], json!(2));
    let mut expected = first.clone();
    expected["duplicate"] = json!(true);
    assert_eq!(again, expected, "the resend gets the first receipt back");
    assert_eq!(host.count(meter.id()).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_keeps_the_first_value_and_accepts_identical_resends() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-conflict", ORG).await;
    let ts = now_ms();
    let key = "meter.voltage";
    ok(&meter
        .submit(&batch("first", vec![point(key, 230.0, ts)]))
        .await);

    let conflicting = ok(&meter
        .submit(&batch("different", vec![point(key, 231.0, ts)]))
        .await);
    assert_eq!(
        rejections(&conflicting),
        [(0, key.to_string(), "conflict".to_string())]
    );
    assert_eq!(conflicting["accepted"], json!(0));

    let identical = ok(&meter
        .submit(&batch("identical", vec![point(key, 230.0, ts)]))
        .await);
    assert_eq!(rejections(&identical), []);
    assert_eq!(
        identical["accepted"],
        json!(1),
        "an identical point is idempotent"
    );

    assert_eq!(host.count(meter.id()).await, 1);
    let stored = &host.latest_in_postgres(meter.id()).await[key];
    assert_eq!(
        (stored.ts_ms, &stored.value),
        (ts, &StoredValue::Float(230.0))
    );
    let cached = &host.latest_in_redis(meter.id()).await[key];
    assert_eq!(
        cached.value,
        StoredValue::Float(230.0),
        "Redis keeps it too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_backfill_leaves_latest_on_the_newest_point() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-backfill", ORG).await;
    let now = now_ms();
    let key = "meter.power";
    ok(&meter
        .submit(&batch("live", vec![point(key, 10.0, now)]))
        .await);

    let backfill = (1..=3)
        .map(|hours| point(key, hours as f64, now - hours * 3_600_000))
        .collect();
    assert_eq!(
        ok(&meter.submit(&batch("backfill", backfill)).await)["accepted"],
        json!(3)
    );

    let newest = (now, StoredValue::Float(10.0));
    let cached = &host.latest_in_redis(meter.id()).await[key];
    assert_eq!((cached.ts_ms, cached.value.clone()), newest);
    let stored = &host.latest_in_postgres(meter.id()).await[key];
    assert_eq!((stored.ts_ms, stored.value.clone()), newest);
    assert_eq!(host.count(meter.id()).await, 4);
}
