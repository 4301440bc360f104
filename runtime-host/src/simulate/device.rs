//! One simulated device: reads its meters on schedule into a local store-and-forward queue,
//! uploads batches over its mutual-TLS HTTP/2 connection, and keeps every point until an upload
//! is acknowledged. A failed upload is resent with the same batch id (so Weir stores it once),
//! after `Retry-After` or an exponential backoff; a lost connection is re-established.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};

use super::meter::{self, Meters, POINTS_PER_ROUND};
use super::{SimulationConfig, Stats};
use crate::device_client::DeviceClient;

/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A partial batch is uploaded once its oldest point waited this long.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// A batch that has been formed and not yet acknowledged.
struct Pending {
    id: String,
    points: Vec<Json>,
}

/// Runs one device until it has generated its share and every point is acknowledged, or the
/// deadline passes.
pub async fn run_device(
    index: usize,
    id: String,
    tls: Arc<rustls::ClientConfig>,
    config: Arc<SimulationConfig>,
    stats: Arc<Stats>,
    deadline: Instant,
) {
    let mut meters = Meters::new(index as u64 + 1);
    let mut queue: VecDeque<Json> = VecDeque::new();
    let mut pending: Option<Pending> = None;
    let mut client: Option<DeviceClient> = None;
    let mut metadata_sent = false;
    let mut sequence = 0u64;
    // Batch ids must never repeat across runs: the host would answer a reused id with the
    // earlier run's receipt and store nothing (that is its duplicate detection working).
    let run = weir_pipeline::clock::now_ms();
    let mut backoff = Duration::from_millis(100);
    let started = Instant::now();
    let mut generated_rounds = 0u64;
    let mut oldest_queued: Option<Instant> = None;
    let target_rounds = config
        .points_per_device
        .map(|points| points.div_ceil(POINTS_PER_ROUND as u64));
    // Back-filling devices upload a day of history; live ones read "now".
    let mut last_ts = match config.rate {
        None => weir_pipeline::clock::now_ms() - 24 * 3600 * 1000,
        Some(_) => 0,
    };

    loop {
        if Instant::now() >= deadline {
            break;
        }
        let generating = target_rounds.is_none_or(|target| generated_rounds < target)
            && config.duration.is_none_or(|d| started.elapsed() < d);
        // 1. Read the meters that are due into the store-and-forward queue.
        if generating {
            let due = match config.rate {
                Some(rate) => {
                    (started.elapsed().as_secs_f64() * rate / POINTS_PER_ROUND as f64) as u64 + 1
                }
                None if queue.len() < config.batch_points => {
                    generated_rounds + (config.batch_points / POINTS_PER_ROUND).max(1) as u64
                }
                None => generated_rounds,
            };
            let due = target_rounds.map_or(due, |target| due.min(target));
            while generated_rounds < due {
                let ts = match config.rate {
                    Some(_) => weir_pipeline::clock::now_ms().max(last_ts + 1),
                    None => last_ts + 1000,
                };
                last_ts = ts;
                queue.extend(meters.read(ts, 1.0));
                generated_rounds += 1;
                stats
                    .generated
                    .fetch_add(POINTS_PER_ROUND as u64, Ordering::Relaxed);
                oldest_queued.get_or_insert_with(Instant::now);
            }
        }
        // 2. Form the next batch when the queue is full enough or has waited long enough.
        if pending.is_none() && !queue.is_empty() {
            let waited = oldest_queued.is_some_and(|t| t.elapsed() >= FLUSH_AFTER);
            if queue.len() >= config.batch_points || waited || !generating {
                let take = queue.len().min(config.batch_points);
                pending = Some(Pending {
                    id: format!("{id}-{run}-{sequence}"),
                    points: queue.drain(..take).collect(),
                });
                sequence += 1;
                oldest_queued = (!queue.is_empty()).then(Instant::now);
            }
        }
        let Some(batch) = &pending else {
            if !generating {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // 3. Upload it; keep it until acknowledged.
        if client.is_none() {
            match DeviceClient::connect(&config.target, &config.server_name, tls.clone()).await {
                Ok(connected) => client = Some(connected),
                Err(error) => {
                    stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(device = %id, error = %error, "connect failed");
                    backoff = pause(backoff, None).await;
                    continue;
                }
            }
        }
        let connection = client.as_mut().expect("connected above");
        if !metadata_sent {
            match connection
                .send_json(Method::PUT, "/v1/metadata", &meter::metadata())
                .await
            {
                Ok(response) if response.status == StatusCode::OK => metadata_sent = true,
                Ok(response) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    backoff = pause(backoff, response.retry_after()).await;
                    continue;
                }
                Err(_) => {
                    client = None;
                    backoff = pause(backoff, None).await;
                    continue;
                }
            }
        }
        let body = json!({"batch": batch.id, "points": batch.points});
        let sent = Instant::now();
        match connection.submit(&body).await {
            Ok(response) if response.status == StatusCode::OK => {
                let receipt = response.json();
                let rejected = receipt["rejected"].as_array().map_or(0, Vec::len) as u64;
                let accepted = receipt["accepted"].as_u64().unwrap_or(0);
                stats.record_ack(
                    batch.points.len() as u64,
                    accepted,
                    rejected,
                    receipt["duplicate"] == json!(true),
                    sent.elapsed(),
                );
                pending = None;
                backoff = Duration::from_millis(100);
            }
            Ok(response)
                if response.status == StatusCode::TOO_MANY_REQUESTS
                    || response.status.is_server_error() =>
            {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                backoff = pause(backoff, response.retry_after()).await;
            }
            Ok(response) => {
                // The server will never take this batch; keeping it would block the device.
                stats
                    .dropped
                    .fetch_add(batch.points.len() as u64, Ordering::Relaxed);
                tracing::warn!(device = %id, status = %response.status, body = %String::from_utf8_lossy(&response.body), "batch refused; dropping it");
                pending = None;
            }
            Err(error) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(device = %id, %error, "upload failed; reconnecting");
                client = None;
                backoff = pause(backoff, None).await;
            }
        }
    }
    let unacked = queue.len() + pending.map_or(0, |p| p.points.len());
    stats
        .unacknowledged
        .fetch_add(unacked as u64, Ordering::Relaxed);
}

/// Waits `Retry-After` when the server gave one, else the current backoff; returns the next
/// backoff.
async fn pause(backoff: Duration, retry_after: Option<u64>) -> Duration {
    let wait = retry_after.map_or(backoff, Duration::from_secs);
    tokio::time::sleep(wait).await;
    (backoff * 2).min(MAX_BACKOFF)
}
