//! Batch follow-ups: written in the batch's transaction, evaluated exactly once, claimed with a
//! lease, given up and forgotten; and the key limits that refuse new series.

use std::time::Duration;

use weir_storage::{BatchWrite, Followup, KeyLimits, StorageError, StoredValue};

use crate::support::{JUNE_2025, device, point, postgres, receipt};

/// Stores batch `id` of `meter` (one point of `key`) owing an evaluation of `points_json`.
async fn store_owing(
    storage: &weir_storage::Storage,
    meter: &weir_storage::DeviceRef,
    id: &str,
    key: &str,
    takeover_after: Duration,
) -> i64 {
    let points = [point(0, key, JUNE_2025, StoredValue::Int(1))];
    let write = storage
        .store_batch_owing(meter, id, &points, |outcome| {
            let followup = Followup {
                alert_points: Some(format!("[\"{id}\"]")),
                takeover_after,
            };
            (receipt(outcome), Some(followup))
        })
        .await
        .unwrap();
    match write {
        BatchWrite::Stored {
            followup: Some(followup),
            ..
        } => followup,
        other => panic!("stored with a follow-up: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_evaluated_exactly_once_then_forgotten() {
    let (_server, storage) = postgres().await;
    let storage = storage.in_region("eu");
    let meter = device("meter-1");
    let first = store_owing(&storage, &meter, "b1", "k.a", Duration::from_secs(60)).await;
    let second = store_owing(&storage, &meter, "b2", "k.b", Duration::from_secs(60)).await;

    let pending = storage.pending_evaluations(&meter, 10).await.unwrap();
    let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
    assert_eq!(ids, [first, second], "oldest first");
    assert_eq!(pending[0].points_json, "[\"b1\"]");

    storage
        .settle_evaluation(&meter, &[], &[], &[first])
        .await
        .unwrap();
    let again = storage
        .settle_evaluation(&meter, &[], &[], &[first, second])
        .await;
    assert!(
        matches!(again, Err(StorageError::Contention(_))),
        "a batch settled twice is refused, and nothing of it is stored: {again:?}"
    );
    let pending = storage.pending_evaluations(&meter, 10).await.unwrap();
    assert_eq!(pending.len(), 1, "the refused settlement left b2 pending");

    assert_eq!(storage.followups_done(&[first, second]).await.unwrap(), 1);
    let counts = storage.followup_counts("eu").await.unwrap();
    assert_eq!((counts.pending, counts.failed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followup_is_claimed_once_per_lease_and_given_up_rows_are_forgotten() {
    let (_server, storage) = postgres().await;
    let storage = storage.in_region("eu");
    let meter = device("meter-1");
    let mine = store_owing(&storage, &meter, "b1", "k.a", Duration::from_secs(60)).await;
    let orphan = store_owing(&storage, &meter, "b2", "k.b", Duration::ZERO).await;

    // Only the row whose host had its time is due: another host takes it over.
    let claimed = storage
        .claim_followups("eu", 10, Duration::from_secs(60))
        .await
        .unwrap();
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(ids, [orphan]);
    assert!(claimed[0].evaluation_pending);
    assert!(
        storage
            .claim_followups("eu", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "claimed rows stay with their claimer for the lease"
    );
    assert!(
        storage
            .claim_followups("us", 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "another region's hosts never take them"
    );

    // The alerter failing on a batch: given up at the limit, its points cleared.
    assert!(
        !storage
            .evaluation_failed(mine, "function_trapped", 2)
            .await
            .unwrap()
    );
    assert!(
        storage
            .evaluation_failed(mine, "function_trapped", 2)
            .await
            .unwrap()
    );
    let pending = storage.pending_evaluations(&meter, 10).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), [orphan]);

    storage.fail_followups(&[orphan], "max_age").await.unwrap();
    let counts = storage.followup_counts("eu").await.unwrap();
    assert_eq!((counts.pending, counts.failed), (1, 1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = storage.maintain(Duration::from_millis(10)).await.unwrap();
    assert_eq!(report.followups_deleted, 1);
    let counts = storage.followup_counts("eu").await.unwrap();
    assert_eq!((counts.pending, counts.failed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_over_the_limits_are_refused_and_the_rest_stored() {
    let (_server, storage) = postgres().await;
    let storage = storage.with_key_limits(KeyLimits {
        per_device: 2,
        per_org: 3,
    });
    let meter = device("meter-1");
    let points = [
        point(0, "k.a", JUNE_2025, StoredValue::Int(1)),
        point(1, "k.b", JUNE_2025, StoredValue::Int(2)),
        point(2, "k.c", JUNE_2025, StoredValue::Int(3)),
    ];
    let BatchWrite::Stored {
        stored,
        over_key_limit,
        ..
    } = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap()
    else {
        panic!("stored")
    };
    assert_eq!(stored, 2);
    let refused: Vec<(usize, &str)> = over_key_limit
        .iter()
        .map(|o| (o.index, o.key.as_str()))
        .collect();
    assert_eq!(refused, [(2, "k.c")]);

    // The organisation's third key fits another device; its fourth does not.
    let other = device("meter-2");
    let points = [
        point(0, "k.x", JUNE_2025, StoredValue::Int(1)),
        point(1, "k.y", JUNE_2025, StoredValue::Int(1)),
    ];
    let BatchWrite::Stored {
        stored,
        over_key_limit,
        ..
    } = storage
        .store_batch(&other, "b2", &points, receipt)
        .await
        .unwrap()
    else {
        panic!("stored")
    };
    assert_eq!((stored, over_key_limit.len()), (1, 1));
    assert_eq!(storage.count_points(&meter).await.unwrap(), 2);
    assert_eq!(storage.count_points(&other).await.unwrap(), 1);
}
