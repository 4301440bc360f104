//! Outages and overload: errors come fast and say "unavailable", nothing is half-stored, and
//! everything works again once the server is back.

use std::time::{Duration, Instant};

use weir_storage::{
    BatchWrite, LatestCache, MetadataChange, Storage, StoredValue, listen_metadata_changes,
    repair_device,
};

use crate::support::{JUNE_2025, blocking, device, point, postgres, receipt, redis, sql};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_fast_and_repair_restores_latest_values() {
    let (_postgres, storage) = postgres().await;
    let (mut redis_server, cache) = redis().await;
    let meter = device("meter-1");
    let before = [point(0, "k.a", JUNE_2025, StoredValue::Int(1))];
    storage
        .store_batch(&meter, "b1", &before, receipt)
        .await
        .unwrap();
    cache
        .update(&meter, &[("k.a".into(), JUNE_2025, StoredValue::Int(1))])
        .await
        .unwrap();

    blocking(|| redis_server.stop());
    let during = [
        point(0, "k.a", JUNE_2025 + 1_000, StoredValue::Int(2)),
        point(1, "k.b", JUNE_2025, StoredValue::Bool(true)),
    ];
    storage
        .store_batch(&meter, "b2", &during, receipt)
        .await
        .unwrap();
    let started = Instant::now();
    let err = cache
        .update(
            &meter,
            &[("k.a".into(), JUNE_2025 + 1_000, StoredValue::Int(2))],
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unavailable(), "{err}");
    assert!(took < Duration::from_secs(1), "failing took {took:?}");
    let started = Instant::now();
    let err = LatestCache::connect(&redis_server.url())
        .await
        .err()
        .expect("Redis is down");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(repair_device(&storage, &cache, &meter).await.is_err());

    blocking(|| redis_server.start_again()).unwrap();
    repair_device(&storage, &cache, &meter).await.unwrap();

    assert_eq!(
        cache.get(&meter).await.unwrap(),
        storage.latest_from_postgres(&meter).await.unwrap()
    );
    assert_eq!(
        cache.get(&meter).await.unwrap()["k.a"].value,
        StoredValue::Int(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_and_storage_recovers() {
    let (mut server, storage) = postgres().await;
    let mut listener = listen_metadata_changes(&server.url()).await.unwrap();
    assert_eq!(listener.next_change().await, Some(MetadataChange::All));
    let meter = device("meter-1");
    let points = [point(0, "k.a", JUNE_2025, StoredValue::Int(1))];

    blocking(|| server.stop());
    let started = Instant::now();
    let err = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(err.code(), "storage_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(storage.ping().await.unwrap_err().is_unavailable());

    blocking(|| server.start_again()).unwrap();
    storage.ping().await.unwrap();
    assert_eq!(
        storage.count_points(&meter).await.unwrap(),
        0,
        "nothing was half-stored"
    );
    let write = storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();
    assert!(
        matches!(write, BatchWrite::Stored { stored: 1, .. }),
        "{write:?}"
    );
    // The listener reconnected and asks for a full reload, since it may have missed changes.
    let change = tokio::time::timeout(Duration::from_secs(15), listener.next_change()).await;
    assert_eq!(change.unwrap(), Some(MetadataChange::All));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_pushes_back_instead_of_queueing() {
    let (server, _storage) = postgres().await;
    let storage = Storage::connect(&server.url(), 1, Duration::from_millis(300))
        .await
        .unwrap();
    let meter = device("meter-1");
    // The month's partition exists, so the writes below do no DDL first.
    let warm_up = [point(0, "k.a", JUNE_2025, StoredValue::Int(0))];
    storage
        .store_batch(&device("meter-0"), "b0", &warm_up, receipt)
        .await
        .unwrap();
    // Another session holds the batches table, so the first write keeps the only connection busy.
    let mut locker = sql(&server).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE batches IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let points = [point(0, "k.a", JUNE_2025, StoredValue::Int(1))];
    let busy = {
        let storage = storage.clone();
        let meter = meter.clone();
        let points = points.clone();
        tokio::spawn(async move { storage.store_batch(&meter, "b1", &points, receipt).await })
    };
    while storage.pool_status().available > 0 || storage.pool_status().size == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let err = storage
        .store_batch(&meter, "b2", &points, receipt)
        .await
        .unwrap_err();

    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    lock.rollback().await.unwrap();
    let first = busy.await.unwrap().unwrap();
    assert!(
        matches!(first, BatchWrite::Stored { stored: 1, .. }),
        "{first:?}"
    );
}
