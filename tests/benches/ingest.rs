//! End-to-end ingest throughput: simulated devices → mTLS HTTP/2 → validator component →
//! PostgreSQL + Redis, against a baseline measured in the same run on the same server: a raw
//! binary `COPY` of the very rows the run stored into the same `points` table.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench ingest` after
//! `cargo xtask components`). Everything shares this machine's cores: the simulator, the host,
//! PostgreSQL and Redis.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use weir_tests::stack::Stack;

const DEVICES: usize = 16;
const POINTS_PER_DEVICE: u64 = 20_000;
const BATCH_POINTS: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::start(|config| {
        // The benchmark measures the pipeline, not the per-device rate limit.
        config.ingest.device_rate_per_second = 1e6;
        config.ingest.device_burst = 1e6;
    })
    .await?;

    let report = stack
        .simulate(DEVICES, POINTS_PER_DEVICE, BATCH_POINTS)
        .await?;
    assert_eq!(report.unacknowledged, 0, "every point was acknowledged");

    let (client, connection) =
        tokio_postgres::connect(&stack.postgres.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let stored: i64 = client
        .query_one("SELECT count(*) FROM points", &[])
        .await?
        .get(0);
    assert_eq!(
        stored as u64, report.accepted,
        "stored rows match acknowledged points"
    );

    // Baseline: the same rows, out and back into the same table with binary COPY.
    let mut rows = Vec::new();
    let out = client
        .copy_out("COPY (SELECT * FROM points) TO STDOUT (FORMAT binary)")
        .await?;
    futures_util::pin_mut!(out);
    while let Some(chunk) = out.next().await {
        rows.push(chunk?);
    }
    client.batch_execute("TRUNCATE points").await?;
    let started = Instant::now();
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY points FROM STDIN (FORMAT binary)")
        .await?;
    futures_util::pin_mut!(sink);
    for chunk in rows {
        sink.send(chunk).await?;
    }
    let copied = sink.finish().await?;
    let copy_seconds = started.elapsed().as_secs_f64();
    assert_eq!(copied, stored as u64);
    let copy_rate = copied as f64 / copy_seconds;

    println!(
        "end-to-end ingest, {DEVICES} devices × {POINTS_PER_DEVICE} points, batches of {BATCH_POINTS}"
    );
    println!(
        "  weir (simulator → host → PostgreSQL + Redis) {:>10.0} points/s   batch p50 {:.1} ms, p99 {:.1} ms",
        report.points_per_second(),
        report.latency_p50.as_secs_f64() * 1e3,
        report.latency_p99.as_secs_f64() * 1e3,
    );
    println!(
        "  baseline: raw binary COPY of the same rows    {:>10.0} points/s   ({copied} rows in {copy_seconds:.2} s)",
        copy_rate
    );
    println!(
        "  weir / raw COPY                               {:>10.3}",
        report.points_per_second() / copy_rate
    );
    Ok(())
}
