//! One simulated device: reads its meters on schedule into a local store-and-forward queue,
//! uploads batches over its mutual-TLS HTTP/2 connection, and keeps every point until an upload
//! is acknowledged. A failed upload is resent with the same batch id (so Weir stores it once),
//! after `Retry-After` or an exponential backoff; a lost connection is re-established.
//!
//! With several region endpoints the device measures them, uploads to the nearest, and moves to
//! the next on a connect error, a TLS failure, a `503`, or a second lost connection (GOAWAY,
//! reset or timeout) in a row, and back once the nearer one is healthy again
//! ([`crate::endpoints`] decides; this loop measures and reports). A single lost connection is
//! re-established to the same endpoint first: a region's load balancer then picks a live host,
//! so one host crashing or draining does not move its devices to another region.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};

use super::meter::{self, Meters, POINTS_PER_ROUND};
use super::{FailoverRecord, SimulationConfig, Stats};
use crate::device_client::DeviceClient;
use crate::endpoints::{EndpointSelector, Switch, SwitchReason};

/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A partial batch is uploaded once its oldest point waited this long.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// A move away from a failed endpoint whose first acknowledgement elsewhere is still awaited.
struct OpenFailover {
    from: usize,
    noticed_at: Instant,
}

/// A batch that has been formed and not yet acknowledged.
struct Pending {
    id: String,
    points: Vec<Json>,
}

/// Runs one device until it has generated its share and every point is acknowledged, or the
/// deadline passes.
pub async fn run_device(
    device_index: usize,
    id: String,
    tls: Arc<rustls::ClientConfig>,
    config: Arc<SimulationConfig>,
    stats: Arc<Stats>,
    deadline: Instant,
) {
    let mut meters = Meters::new(device_index as u64 + 1);
    let mut queue: VecDeque<Json> = VecDeque::new();
    let mut pending: Option<Pending> = None;
    let mut client: Option<DeviceClient> = None;
    let mut selector = EndpointSelector::new(config.endpoints.clone(), config.selection.clone());
    let mut open_failover: Option<OpenFailover> = None;
    // Whether the connection was lost since the last acknowledgement: the first loss reconnects
    // to the same endpoint, the next one fails over.
    let mut lost_connection = false;
    // Metadata goes to every region once: each region's hosts cache it from the shared store,
    // and a device cannot know which of its regions saw it.
    let mut metadata_sent = vec![false; config.endpoints.len()];
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
        // 3. Measure the endpoints when due; move back to a nearer one when it is time.
        let now = Instant::now();
        let due = selector.due_measurements(now);
        if !due.is_empty() {
            for index in due {
                let outcome = handshake(&config, &tls, &selector, index).await;
                selector.measured(index, outcome.map(|(rtt, _)| rtt), Instant::now());
            }
            let before = selector.current();
            if let Some(switch) = selector.end_round(Instant::now()) {
                moved(&stats, &switch, &mut open_failover, now);
                client = None;
            } else if before != selector.current() {
                client = None;
            }
        }
        // 4. Upload it; keep it until acknowledged.
        if client.is_none() {
            if let Some(switch) = selector.leave_if_down(Instant::now()) {
                moved(&stats, &switch, &mut open_failover, Instant::now());
            }
            if selector.all_down(Instant::now()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let index = selector.current();
            match handshake(&config, &tls, &selector, index).await {
                Ok((rtt, connected)) => {
                    selector.connected(index, rtt);
                    stats.place(device_index, index);
                    client = Some(connected);
                }
                Err(()) => {
                    stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    // When every endpoint cools down, the check above waits.
                    failed_over(&stats, &mut selector, &mut open_failover);
                    continue;
                }
            }
        }
        let connection = client.as_mut().expect("connected above");
        let index = selector.current();
        if !metadata_sent[index] {
            let sent = tokio::time::timeout(
                config.request_timeout,
                connection.send_json(Method::PUT, "/v1/metadata", &meter::metadata()),
            )
            .await;
            match sent {
                Ok(Ok(response)) if response.status == StatusCode::OK => {
                    metadata_sent[index] = true;
                }
                Ok(Ok(response)) if response.status == StatusCode::SERVICE_UNAVAILABLE => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    client = None;
                    failed_over(&stats, &mut selector, &mut open_failover);
                    continue;
                }
                Ok(Ok(response)) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    backoff = pause(backoff, response.retry_after()).await;
                    continue;
                }
                Ok(Err(_)) | Err(_) => {
                    client = None;
                    failed_over(&stats, &mut selector, &mut open_failover);
                    continue;
                }
            }
        }
        let body = json!({"batch": batch.id, "points": batch.points});
        let sent = Instant::now();
        let answer = tokio::time::timeout(config.request_timeout, connection.submit(&body)).await;
        match answer.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in time"))) {
            Ok(response) if response.status == StatusCode::OK => {
                selector.succeeded();
                lost_connection = false;
                stats.acked_on(index, batch.points.len() as u64);
                if let Some(open) = open_failover.take() {
                    stats
                        .failovers
                        .lock()
                        .expect("failover lock")
                        .push(FailoverRecord {
                            device: id.clone(),
                            from: open.from,
                            to: index,
                            noticed_at: open.noticed_at,
                            first_ack_at: Instant::now(),
                        });
                }
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
            Ok(response) if response.status == StatusCode::SERVICE_UNAVAILABLE => {
                // The host is draining or cannot reach its stores: another region may.
                stats.retries.fetch_add(1, Ordering::Relaxed);
                client = None;
                failed_over(&stats, &mut selector, &mut open_failover);
                if let Some(seconds) = response.retry_after()
                    && selector.all_down(Instant::now())
                {
                    tokio::time::sleep(Duration::from_secs(seconds)).await;
                }
            }
            Ok(response)
                if response.status == StatusCode::PAYLOAD_TOO_LARGE && batch.points.len() > 1 =>
            {
                // Too big for this host: send it in halves. The host stored none of it, so the
                // halves may carry new batch ids; the second goes back to the queue's front.
                let mut points = batch.points.clone();
                let rest = points.split_off(points.len() / 2);
                for point in rest.into_iter().rev() {
                    queue.push_front(point);
                }
                tracing::debug!(device = %id, batch = %batch.id, points = points.len(), "batch too large; splitting it");
                pending = Some(Pending {
                    id: format!("{}-half", batch.id),
                    points,
                });
                stats.retries.fetch_add(1, Ordering::Relaxed);
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
                // Connection lost, GOAWAY, or no answer in time: the endpoint is unhealthy.
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(device = %id, %error, "upload failed; reconnecting");
                client = None;
                if lost_connection {
                    failed_over(&stats, &mut selector, &mut open_failover);
                } else {
                    // One host may have gone: the endpoint's next connection finds another.
                    lost_connection = true;
                }
            }
        }
    }
    let unacked = queue.len() + pending.map_or(0, |p| p.points.len());
    stats
        .unacknowledged
        .fetch_add(unacked as u64, Ordering::Relaxed);
}

/// Connects to endpoint `index` within the request timeout; the time it took is the
/// endpoint's handshake round trip (TCP, TLS with the device certificate, HTTP/2 preface).
async fn handshake(
    config: &SimulationConfig,
    tls: &Arc<rustls::ClientConfig>,
    selector: &EndpointSelector,
    index: usize,
) -> Result<(Duration, DeviceClient), ()> {
    let endpoint = selector
        .endpoints()
        .nth(index)
        .expect("index from the selector");
    let started = Instant::now();
    let connect = DeviceClient::connect(&endpoint.addr, &config.server_name, tls.clone());
    match tokio::time::timeout(config.request_timeout, connect).await {
        Ok(Ok(client)) => Ok((started.elapsed(), client)),
        Ok(Err(error)) => {
            tracing::debug!(endpoint = %endpoint, %error, "handshake failed");
            Err(())
        }
        Err(_) => Err(()),
    }
}

/// The endpoint in use failed: mark it, move on, and remember when the device noticed.
fn failed_over(
    stats: &Stats,
    selector: &mut EndpointSelector,
    open_failover: &mut Option<OpenFailover>,
) {
    let now = Instant::now();
    if let Some(switch) = selector.failed(now) {
        moved(stats, &switch, open_failover, now);
    }
}

/// Counts a move and, for a failover, starts timing it until the next acknowledgement.
fn moved(stats: &Stats, switch: &Switch, open_failover: &mut Option<OpenFailover>, now: Instant) {
    stats.switched(switch);
    if switch.reason == SwitchReason::Failover {
        // A failover during a failover keeps the first notice: the outage began then.
        open_failover.get_or_insert(OpenFailover {
            from: switch.from,
            noticed_at: now,
        });
    }
}

/// Waits `Retry-After` when the server gave one, else the current backoff; returns the next
/// backoff.
async fn pause(backoff: Duration, retry_after: Option<u64>) -> Duration {
    let wait = retry_after.map_or(backoff, Duration::from_secs);
    tokio::time::sleep(wait).await;
    (backoff * 2).min(MAX_BACKOFF)
}
