//! The write path: exactly-once batches, idempotent points, conflicts, value round trips.

use serde_json::json;
use weir_storage::{BatchWrite, StorageError, StoredValue};

use crate::support::{JUNE_2025, device, point, postgres, receipt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_batch_is_stored_and_counted() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let points = [
        point(0, "meter.energy.total", JUNE_2025, StoredValue::Float(12.5)),
        point(
            1,
            "meter.energy.total",
            JUNE_2025 + 60_000,
            StoredValue::Float(12.75),
        ),
        point(2, "meter.relay", JUNE_2025, StoredValue::Bool(true)),
    ];

    let write = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();

    assert_eq!(
        write,
        BatchWrite::Stored {
            stored: 3,
            idempotent: 0,
            conflicts: vec![],
            over_key_limit: vec![],
            moved_from: None,
            followup: None,
        }
    );
    assert_eq!(storage.count_points(&meter).await.unwrap(), 3);
    assert_eq!(storage.count_points(&device("other")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_batch_is_stored_once_and_answered_with_the_first_receipt() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let points = [point(0, "k.a", JUNE_2025, StoredValue::Int(7))];
    storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();

    let resent = storage
        .store_batch(&meter, "b1", &points, |_| {
            json!("a receipt that must not be used")
        })
        .await
        .unwrap();

    assert_eq!(
        resent,
        BatchWrite::Duplicate {
            receipt: json!({"stored": 1, "idempotent": 0, "conflicts": []})
        }
    );
    assert_eq!(storage.count_points(&meter).await.unwrap(), 1);
    // The batch id is per device: another device may use it.
    let other = device("meter-2");
    let write = storage
        .store_batch(&other, "b1", &points, receipt)
        .await
        .unwrap();
    assert!(
        matches!(write, BatchWrite::Stored { stored: 1, .. }),
        "{write:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_copies_of_a_batch_are_stored_once() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    for round in 0..5 {
        let batch_id = format!("b{round}");
        let points: Vec<_> = (0..50)
            .map(|i| {
                point(
                    i,
                    &format!("k.{}", i % 5),
                    JUNE_2025 + (round * 100 + i as i64) * 1000,
                    StoredValue::Int(i as i64),
                )
            })
            .collect();
        let (a, b) = tokio::join!(
            storage.store_batch(&meter, &batch_id, &points, receipt),
            storage.store_batch(&meter, &batch_id, &points, receipt),
        );
        let mut writes = [a.unwrap(), b.unwrap()];
        writes.sort_by_key(|write| matches!(write, BatchWrite::Duplicate { .. }));
        assert!(
            matches!(
                writes[0],
                BatchWrite::Stored {
                    stored: 50,
                    idempotent: 0,
                    ..
                }
            ),
            "{writes:?}"
        );
        assert_eq!(
            writes[1],
            BatchWrite::Duplicate {
                receipt: json!({"stored": 50, "idempotent": 0, "conflicts": []})
            }
        );
    }
    assert_eq!(storage.count_points(&meter).await.unwrap(), 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_point_in_a_new_batch_is_idempotent() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let first = [point(0, "k.a", JUNE_2025, StoredValue::Float(f64::NAN))];
    storage
        .store_batch(&meter, "b1", &first, receipt)
        .await
        .unwrap();

    let again = [
        point(0, "k.a", JUNE_2025, StoredValue::Float(f64::NAN)),
        point(1, "k.a", JUNE_2025 + 1, StoredValue::Float(1.0)),
    ];
    let write = storage
        .store_batch(&meter, "b2", &again, receipt)
        .await
        .unwrap();

    assert_eq!(
        write,
        BatchWrite::Stored {
            stored: 1,
            idempotent: 1,
            conflicts: vec![],
            over_key_limit: vec![],
            moved_from: None,
            followup: None,
        }
    );
    assert_eq!(storage.count_points(&meter).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_value_at_a_stored_timestamp_is_a_conflict_and_the_first_value_stays() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let first = [point(0, "k.a", JUNE_2025, StoredValue::Int(111))];
    storage
        .store_batch(&meter, "b1", &first, receipt)
        .await
        .unwrap();

    let second = [
        point(0, "k.b", JUNE_2025, StoredValue::Int(5)),
        point(1, "k.a", JUNE_2025, StoredValue::Int(222)),
    ];
    let BatchWrite::Stored {
        stored,
        idempotent,
        conflicts,
        ..
    } = storage
        .store_batch(&meter, "b2", &second, receipt)
        .await
        .unwrap()
    else {
        panic!("a new batch is stored");
    };

    assert_eq!((stored, idempotent, conflicts.len()), (1, 0, 1));
    assert_eq!(conflicts[0].index, 1);
    assert_eq!(conflicts[0].key, "k.a");
    assert!(
        conflicts[0].message.contains("111") && conflicts[0].message.contains("222"),
        "the message names both values: {}",
        conflicts[0].message
    );
    let latest = storage.latest_from_postgres(&meter).await.unwrap();
    assert_eq!(latest["k.a"].value, StoredValue::Int(111));
    assert_eq!(storage.count_points(&meter).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_timestamps_within_a_batch_keep_the_first_value() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let points = [
        point(0, "k.a", JUNE_2025, StoredValue::Text("first".into())),
        point(1, "k.a", JUNE_2025, StoredValue::Text("first".into())),
        point(2, "k.a", JUNE_2025, StoredValue::Text("second".into())),
    ];

    let write = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();

    let BatchWrite::Stored {
        stored,
        idempotent,
        conflicts,
        ..
    } = write
    else {
        panic!("a new batch is stored");
    };
    assert_eq!((stored, idempotent), (1, 1));
    assert_eq!(conflicts.iter().map(|c| c.index).collect::<Vec<_>>(), [2]);
    let latest = storage.latest_from_postgres(&meter).await.unwrap();
    assert_eq!(latest["k.a"].value, StoredValue::Text("first".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_round_trips_exactly() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let values = [
        ("v.u64max", StoredValue::Uint(u64::MAX)),
        ("v.u64small", StoredValue::Uint(42)),
        ("v.i64min", StoredValue::Int(i64::MIN)),
        ("v.f64", StoredValue::Float(0.1 + 0.2)),
        ("v.f64tiny", StoredValue::Float(f64::MIN_POSITIVE)),
        ("v.bool", StoredValue::Bool(false)),
        (
            "v.text",
            StoredValue::Text("Grüße, \"quoted\" | piped".into()),
        ),
    ];
    let points: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, (key, value))| point(i, key, JUNE_2025 - 1, value.clone()))
        .collect();
    storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();

    let latest = storage.latest_from_postgres(&meter).await.unwrap();

    assert_eq!(latest.len(), values.len());
    for (key, value) in values {
        assert_eq!(latest[key].ts_ms, JUNE_2025 - 1, "{key}");
        assert_eq!(latest[key].value, value.normalized(), "{key}");
    }
    assert_eq!(latest["v.u64small"].value, StoredValue::Int(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_from_postgres_is_the_newest_timestamp_not_the_last_received() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let recent = [point(0, "k.a", JUNE_2025, StoredValue::Int(2))];
    storage
        .store_batch(&meter, "b1", &recent, receipt)
        .await
        .unwrap();
    let backfill = [
        point(0, "k.a", JUNE_2025 - 86_400_000 * 60, StoredValue::Int(1)),
        point(1, "k.b", JUNE_2025 - 1, StoredValue::Int(9)),
    ];
    storage
        .store_batch(&meter, "b2", &backfill, receipt)
        .await
        .unwrap();

    let latest = storage.latest_from_postgres(&meter).await.unwrap();

    assert_eq!(latest["k.a"].ts_ms, JUNE_2025);
    assert_eq!(latest["k.a"].value, StoredValue::Int(2));
    assert_eq!(latest["k.b"].value, StoredValue::Int(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_outside_the_supported_range_are_refused_whole() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let points = [
        point(0, "k.a", JUNE_2025, StoredValue::Int(1)),
        point(
            1,
            "k.a",
            weir_storage::MAX_TIMESTAMP_MS,
            StoredValue::Int(1),
        ),
    ];

    let err = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap_err();

    assert!(
        matches!(err, StorageError::TimestampOutOfRange { index: 1, .. }),
        "{err}"
    );
    assert_eq!(err.code(), "timestamp_out_of_range");
    assert_eq!(storage.count_points(&meter).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batch_is_recorded() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let write = storage
        .store_batch(&meter, "b1", &[], receipt)
        .await
        .unwrap();
    assert_eq!(
        write,
        BatchWrite::Stored {
            stored: 0,
            idempotent: 0,
            conflicts: vec![],
            over_key_limit: vec![],
            moved_from: None,
            followup: None,
        }
    );
    let again = storage
        .store_batch(&meter, "b1", &[], receipt)
        .await
        .unwrap();
    assert!(matches!(again, BatchWrite::Duplicate { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batches_with_the_same_points_store_each_point_once() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    // Same points, different batch ids (a device that lost its batch bookkeeping), written at
    // once: one transaction inserts each point, the other sees it committed and accepts it.
    let points: Vec<_> = (0..200)
        .map(|i| {
            point(
                i,
                &format!("k.{}", i % 7),
                JUNE_2025 + i as i64,
                StoredValue::Int(i as i64),
            )
        })
        .collect();
    storage
        .store_batch(&meter, "warm-up", &points[..1], receipt)
        .await
        .unwrap();

    let (a, b) = tokio::join!(
        storage.store_batch(&meter, "b1", &points, receipt),
        storage.store_batch(&meter, "b2", &points, receipt),
    );

    let mut stored = 0;
    let mut idempotent = 0;
    for write in [a.unwrap(), b.unwrap()] {
        let BatchWrite::Stored {
            stored: s,
            idempotent: i,
            conflicts,
            ..
        } = write
        else {
            panic!("different batch ids are different batches");
        };
        assert!(conflicts.is_empty(), "{conflicts:?}");
        stored += s;
        idempotent += i;
    }
    assert_eq!((stored, idempotent), (199, 201));
    assert_eq!(storage.count_points(&meter).await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_forgets_old_batch_ids_and_a_late_resend_stays_idempotent() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let points = [point(0, "k.a", JUNE_2025, StoredValue::Int(1))];
    storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();

    let kept = storage
        .maintain(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(kept.batches_deleted, 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let forgotten = storage
        .maintain(std::time::Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(forgotten.batches_deleted, 1);

    let resent = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();
    assert_eq!(
        resent,
        BatchWrite::Stored {
            stored: 0,
            idempotent: 1,
            conflicts: vec![],
            over_key_limit: vec![],
            moved_from: None,
            followup: None,
        }
    );
    assert_eq!(storage.count_points(&meter).await.unwrap(), 1);
}
