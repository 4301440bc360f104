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

    // Baseline: the same rows, out and back into the same table with binary COPY, in 1, 2 and
    // 4 parallel streams (split by series); the best is the limit of the raw tool here.
    let mut copy_rate: f64 = 0.0;
    let mut best = (0, 0.0);
    for streams in [1u32, 2, 4] {
        let (rate, seconds) = parallel_copy(&stack.postgres.url(), streams, stored as u64).await?;
        if rate > copy_rate {
            copy_rate = rate;
            best = (streams, seconds);
        }
    }
    let (streams, copy_seconds) = best;
    let copied = stored;

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
        "  baseline: raw binary COPY of the same rows    {:>10.0} points/s   ({copied} rows in {copy_seconds:.2} s, best of 1/2/4 streams: {streams})",
        copy_rate
    );
    println!(
        "  weir / raw COPY                               {:>10.3}",
        report.points_per_second() / copy_rate
    );
    Ok(())
}

/// Copies the stored rows out in `streams` parts (by series), empties `points`, and loads the
/// parts back in parallel, one connection each; returns points per second and seconds.
async fn parallel_copy(url: &str, streams: u32, expected: u64) -> anyhow::Result<(f64, f64)> {
    let mut connections = Vec::new();
    for _ in 0..streams {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        connections.push(client);
    }
    let mut parts = Vec::new();
    for (part, client) in connections.iter().enumerate() {
        let query = format!(
            "COPY (SELECT * FROM points WHERE series_id % {streams} = {part}) TO STDOUT (FORMAT binary)"
        );
        let out = client.copy_out(query.as_str()).await?;
        futures_util::pin_mut!(out);
        let mut chunks = Vec::new();
        while let Some(chunk) = out.next().await {
            chunks.push(chunk?);
        }
        parts.push(chunks);
    }
    connections[0].batch_execute("TRUNCATE points").await?;
    let started = Instant::now();
    let loads = connections
        .iter()
        .zip(parts)
        .map(|(client, chunks)| async move {
            let sink = client
                .copy_in::<_, bytes::Bytes>("COPY points FROM STDIN (FORMAT binary)")
                .await?;
            futures_util::pin_mut!(sink);
            for chunk in chunks {
                sink.send(chunk).await?;
            }
            anyhow::Ok(sink.finish().await?)
        });
    let copied: u64 = futures_util::future::try_join_all(loads)
        .await?
        .iter()
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(copied, expected);
    Ok((copied as f64 / seconds, seconds))
}
