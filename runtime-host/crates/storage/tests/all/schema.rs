//! Migrations and partitions.

use std::time::Duration;

use weir_storage::{Storage, StoredValue};

use crate::support::{JUNE_2025, device, point, postgres, receipt, sql};

/// Names of the partitions attached to `points`, sorted.
async fn partitions(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'points'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_again_is_a_no_op() {
    let (server, storage) = postgres().await;
    let client = sql(&server).await;
    let partitions_before = partitions(&client).await;

    assert_eq!(storage.migrate().await.unwrap(), 0);

    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let every_migration: Vec<i32> = (1..=versions.len() as i32).collect();
    assert!(versions.len() >= 4, "{versions:?}");
    assert_eq!(versions, every_migration);
    assert_eq!(partitions(&client).await, partitions_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_together_migrate_once() {
    let (server, _migrated) = postgres().await;
    let client = sql(&server).await;
    client.batch_execute("CREATE DATABASE fresh").await.unwrap();
    let url = server.url_for("fresh");
    let first = Storage::connect(&url, 2, Duration::from_secs(5))
        .await
        .unwrap();
    let second = Storage::connect(&url, 2, Duration::from_secs(5))
        .await
        .unwrap();

    let (a, b) = tokio::join!(first.migrate(), second.migrate());

    let migrations: i64 = first
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(migrations >= 4);
    assert_eq!((a.unwrap() + b.unwrap()) as i64, migrations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_created_ahead_from_last_month() {
    let (server, _storage) = postgres().await;
    let client = sql(&server).await;
    let expected: Vec<String> = client
        .query(
            "SELECT to_char(m, '\"points_y\"YYYY\"m\"MM') \
             FROM generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month', \
                                  date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months', \
                                  interval '1 month') AS m",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(expected.len(), 5);
    let existing = partitions(&client).await;
    for name in &expected {
        assert!(existing.contains(name), "{name} missing from {existing:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_month_gets_its_partition_on_demand() {
    let (server, storage) = postgres().await;
    let client = sql(&server).await;
    let may_2019 = 1_558_000_000_000; // 2019-05-16
    assert!(
        !partitions(&client)
            .await
            .contains(&"points_y2019m05".to_owned())
    );

    let meter = device("meter-1");
    let points = [
        point(0, "meter.energy.total", may_2019, StoredValue::Float(1.5)),
        point(1, "meter.energy.total", JUNE_2025, StoredValue::Float(2.5)),
    ];
    storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();

    let existing = partitions(&client).await;
    assert!(
        existing.contains(&"points_y2019m05".to_owned()),
        "{existing:?}"
    );
    assert!(
        existing.contains(&"points_y2025m06".to_owned()),
        "{existing:?}"
    );
    assert!(
        !existing.contains(&"points_y2019m06".to_owned()),
        "only touched months: {existing:?}"
    );
    let in_may: i64 = client
        .query_one("SELECT count(*) FROM points_y2019m05", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_may, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_partition_is_created_again_when_a_batch_needs_it() {
    let (server, storage) = postgres().await;
    let client = sql(&server).await;
    let meter = device("meter-1");
    let first = [point(0, "k.a", JUNE_2025, StoredValue::Int(1))];
    storage
        .store_batch(&meter, "b1", &first, receipt)
        .await
        .unwrap();
    // An operator (or a tiering job) removes the month behind storage's back.
    client
        .batch_execute("DROP TABLE points_y2025m06")
        .await
        .unwrap();

    let second = [point(0, "k.a", JUNE_2025 + 1, StoredValue::Int(2))];
    storage
        .store_batch(&meter, "b2", &second, receipt)
        .await
        .unwrap();

    assert_eq!(storage.count_points(&meter).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_months_have_partitions() {
    let (_server, storage) = postgres().await;
    let meter = device("meter-1");
    let points = [
        point(
            0,
            "k.a",
            weir_storage::MIN_TIMESTAMP_MS,
            StoredValue::Int(1),
        ),
        point(
            1,
            "k.a",
            weir_storage::MAX_TIMESTAMP_MS - 1,
            StoredValue::Int(2),
        ),
    ];
    storage
        .store_batch(&meter, "b1", &points, receipt)
        .await
        .unwrap();
    let latest = storage.latest_from_postgres(&meter).await.unwrap();
    assert_eq!(latest["k.a"].ts_ms, weir_storage::MAX_TIMESTAMP_MS - 1);
}
