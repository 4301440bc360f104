//! `PUT`/`GET /v1/metadata`: each entry judged on its own, and every device sees and sets only
//! its own keys.

use hyper::Method;
use serde_json::{Value as Json, json};

use super::harness::{Device, TestHost, ok};

const ORG: &str = "acme";

/// The device's metadata as `GET /v1/metadata` returns it, sorted by key.
async fn metadata_of(device: &mut Device) -> Vec<Json> {
    let answer = ok(&device
        .send_json(Method::GET, "/v1/metadata", &Json::Null)
        .await);
    let mut entries = answer.as_array().expect("an array of entries").clone();
    entries.sort_by_key(|e| e["key"].as_str().unwrap().to_string());
    entries
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_metadata_stores_good_entries_rejects_bad_ones_and_stays_per_device() {
    let host = TestHost::start().await;
    let mut a = host.device("meter-meta-a", ORG).await;
    let mut b = host.device("meter-meta-b", ORG).await;
    let power = json!({
        "key": "meter.power", "type": "f64", "name": "Power", "unit": "W",
        "description": "Active power", "min": 0.0, "max": 10000.0
    });
    let state = json!({"key": "meter.state", "type": "enum", "value_map": {"0": "off", "1": "on"}});
    let body = json!([
        power,
        state,
        {"key": "meter.heat", "type": "f64", "unit": "watts"},
        {"key": "meter.mode", "type": "enum"},
        {"key": "meter..bad", "type": "f64"},
        {"key": "meter.x", "type": "float"},
        {"key": "weir.own", "type": "f64"},
        {"key": "meter.range", "type": "f64", "min": 5, "max": 1},
        {"key": "meter.y", "type": "f64", "unti": "W"},
    ]);

    let answer = ok(&a.send_json(Method::PUT, "/v1/metadata", &body).await);

    assert_eq!(answer["stored"], json!(2), "{answer}");
    let rejected: Vec<_> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
            (
                r["index"].clone(),
                r["key"].clone(),
                r["field"].clone(),
                r["code"].clone(),
            )
        })
        .collect();
    let expected: Vec<_> = [
        (2, "meter.heat", "unit", "unknown_unit"),
        (3, "meter.mode", "value_map", "missing_field"),
        (4, "meter..bad", "key", "invalid_key"),
        (5, "meter.x", "type", "unknown_type"),
        (6, "weir.own", "key", "reserved_key"),
        (7, "meter.range", "min", "invalid_range"),
        (8, "meter.y", "unti", "unknown_field"),
    ]
    .into_iter()
    .map(|(i, k, f, c)| (json!(i), json!(k), json!(f), json!(c)))
    .collect();
    assert_eq!(rejected, expected);

    assert_eq!(metadata_of(&mut a).await, [power.clone(), state.clone()]);
    assert!(
        metadata_of(&mut b).await.is_empty(),
        "meter-b sees none of meter-a's keys"
    );

    // meter-b typing a key of the same name changes only its own.
    let own = json!({"key": "meter.power", "type": "u16"});
    ok(&b
        .send_json(Method::PUT, "/v1/metadata", &json!([own]))
        .await);
    assert_eq!(metadata_of(&mut b).await, [own]);
    assert_eq!(metadata_of(&mut a).await, [power, state]);
}
