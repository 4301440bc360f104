//! Servers and small builders shared by the tests.

use std::time::Duration;

use serde_json::json;
use weir_services::{PostgresServer, RedisServer};
use weir_storage::{BatchOutcome, DeviceRef, LatestCache, NewPoint, Storage, StoredValue};

/// 2025-06-15T12:00:00Z, a timestamp in no partition created ahead of a test run far from it.
pub const JUNE_2025: i64 = 1_749_988_800_000;

/// A fresh PostgreSQL server and a migrated storage on it.
pub async fn postgres() -> (PostgresServer, Storage) {
    let server = tokio::task::spawn_blocking(PostgresServer::start_temporary)
        .await
        .expect("the start task runs")
        .expect("PostgreSQL starts");
    let storage = Storage::connect(&server.url(), 4, Duration::from_secs(5))
        .await
        .expect("storage connects");
    storage.migrate().await.expect("migrations run");
    (server, storage)
}

/// A fresh Redis server and a cache connected to it.
pub async fn redis() -> (RedisServer, LatestCache) {
    let server = tokio::task::spawn_blocking(RedisServer::start_temporary)
        .await
        .expect("the start task runs")
        .expect("Redis starts");
    let cache = LatestCache::connect(&server.url())
        .await
        .expect("cache connects");
    (server, cache)
}

/// A plain connection for checking what storage wrote.
pub async fn sql(server: &PostgresServer) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .expect("psql connection");
    tokio::spawn(connection);
    client
}

pub fn device(name: &str) -> DeviceRef {
    DeviceRef::new("acme", name)
}

pub fn point(index: usize, key: &str, ts_ms: i64, value: StoredValue) -> NewPoint {
    NewPoint {
        index,
        key: key.to_owned(),
        ts_ms,
        value,
    }
}

/// The receipt a host might keep: the counts and conflicts.
pub fn receipt(outcome: &BatchOutcome) -> serde_json::Value {
    json!({
        "stored": outcome.stored,
        "idempotent": outcome.idempotent,
        "conflicts": outcome.conflicts,
    })
}

/// Runs a blocking server operation (stop, start again) without stalling the runtime.
pub fn blocking<T>(operation: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(operation)
}
