//! The Redis latest-value cache: newest timestamp wins, values round-trip.

use weir_storage::{LatestValue, StoredValue};

use crate::support::{device, redis};

fn entry(key: &str, ts_ms: i64, value: StoredValue) -> (String, i64, StoredValue) {
    (key.to_owned(), ts_ms, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_timestamp_wins_in_the_cache() {
    let (_server, cache) = redis().await;
    let meter = device("meter-1");
    cache
        .update(&meter, &[entry("k.a", 2_000, StoredValue::Int(2))])
        .await
        .unwrap();

    // Newer replaces.
    cache
        .update(&meter, &[entry("k.a", 3_000, StoredValue::Int(3))])
        .await
        .unwrap();
    assert_eq!(
        cache.get(&meter).await.unwrap()["k.a"],
        LatestValue {
            ts_ms: 3_000,
            value: StoredValue::Int(3)
        }
    );

    // A back-filled point does not move latest backwards; an equal timestamp keeps the stored value.
    cache
        .update(
            &meter,
            &[
                entry("k.a", 1_000, StoredValue::Int(1)),
                entry("k.a", 3_000, StoredValue::Int(33)),
                entry("k.b", 500, StoredValue::Int(5)),
            ],
        )
        .await
        .unwrap();
    let latest = cache.get(&meter).await.unwrap();
    assert_eq!(
        latest["k.a"],
        LatestValue {
            ts_ms: 3_000,
            value: StoredValue::Int(3)
        }
    );
    assert_eq!(
        latest["k.b"],
        LatestValue {
            ts_ms: 500,
            value: StoredValue::Int(5)
        }
    );

    // Within one batch, the newest point counts, whatever its position.
    cache
        .update(
            &meter,
            &[
                entry("k.b", 900, StoredValue::Int(9)),
                entry("k.b", 700, StoredValue::Int(7)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        cache.get(&meter).await.unwrap()["k.b"].value,
        StoredValue::Int(9)
    );
    assert!(cache.get(&device("other")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_round_trips_through_the_cache() {
    let (_server, cache) = redis().await;
    let meter = device("meter:1%");
    let values = [
        entry("v.u64max", 1, StoredValue::Uint(u64::MAX)),
        entry("v.i64min", 2, StoredValue::Int(i64::MIN)),
        entry("v.f64", 3, StoredValue::Float(0.1 + 0.2)),
        entry("v.negative_ts", -5, StoredValue::Float(-1e-300)),
        entry("v.bool", 4, StoredValue::Bool(true)),
        entry("v.text", 5, StoredValue::Text("a|b\nc".into())),
    ];
    cache.update(&meter, &values).await.unwrap();

    let latest = cache.get(&meter).await.unwrap();

    assert_eq!(latest.len(), values.len());
    for (key, ts_ms, value) in values {
        assert_eq!(latest[&key], LatestValue { ts_ms, value }, "{key}");
    }
}
