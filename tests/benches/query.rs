//! Query API throughput and latency through the component path (bearer token → host → a fresh
//! query-component instance → Redis or PostgreSQL → JSON), against baselines measured in the
//! same run on the same servers and data:
//!
//! - latest values: `GET /v1/devices/{device}/latest` from concurrent kept-alive HTTP/1.1
//!   clients, against `HGETALL` of the very Redis hash the component reads, from as many
//!   concurrent clients;
//! - a 10,000-point history page: `GET …/history?…&limit=10000` answered by the component
//!   (a host without its answer cache) and from the host's answer cache, against the same rows
//!   read directly with tokio-postgres.
//!
//! Data goes in through the real device path (mTLS HTTP/2, validator, PostgreSQL + Redis).
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench query` after
//! `cargo xtask components`). Everything shares this machine's cores: the clients, the host,
//! PostgreSQL and Redis.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};
use weir::device_client::DeviceClient;
use weir::host::Host;
use weir_pki::ClientAlpn;
use weir_storage::Storage;
use weir_tests::stack::{SERVER_NAME, Stack};

const ORG: &str = "bench";
/// Devices whose latest values are read, each with every key of [`LATEST_KEYS`].
const DEVICES: usize = 16;
/// A key's value on device number `d`.
type ValueOf = fn(usize) -> Json;
/// Keys of every device: one of each value type.
const LATEST_KEYS: [(&str, ValueOf); 4] = [
    ("meter.power", |d| json!(1500.25 + d as f64)),
    ("meter.energy.total", |d| json!(1_234_567 + d as i64)),
    ("meter.relay", |d| json!(d % 2 == 0)),
    ("meter.state", |_| json!("on")),
];
/// Concurrent clients of each latest-value run.
const CLIENTS: [usize; 2] = [8, 32];
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);

/// Points of the history series, and the page size asked for.
const HISTORY_POINTS: usize = 10_000;
const HISTORY_DEVICE: &str = "meter-history";
const HISTORY_KEY: &str = "meter.power";
/// Spacing of the history points: 10,000 of them span ~22 h.
const HISTORY_STEP_MS: i64 = 8_000;
/// The history grid: a range off it answers a redirect.
const GRID_MS: i64 = 300_000;
/// Requests timed per history variant.
const HISTORY_REQUESTS: usize = 50;
const BATCH_POINTS: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::start(|config| {
        // The benchmark measures the query path, not the per-device rate limit.
        config.ingest.device_rate_per_second = 1e6;
        config.ingest.device_burst = 1e6;
    })
    .await?;
    let storage = Storage::connect(&stack.postgres.url(), 2, Duration::from_secs(5)).await?;
    let token: Arc<str> = storage
        .create_token(ORG, Some("bench"))
        .await?
        .secret
        .into();
    let api = stack.host.api_addr();

    let now = now_ms();
    for d in 0..DEVICES {
        let points = LATEST_KEYS
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value(d), "ts": now - 60_000}))
            .collect();
        submit(&stack, &device_id(d), points).await?;
    }
    check_latest_answer(api, &token).await?;

    println!(
        "query API, {} cores shared by the bench clients, the host, PostgreSQL and Redis",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "latest values: {DEVICES} devices × {} keys, kept-alive connections, {} s measured after {} s warm-up",
        LATEST_KEYS.len(),
        MEASURE.as_secs(),
        WARM_UP.as_secs()
    );
    println!(
        "  {:<44} {:>8} {:>10} {:>9} {:>9}",
        "", "clients", "requests/s", "p50 ms", "p99 ms"
    );
    for clients in CLIENTS {
        let api_run = Run::collect(
            (0..clients)
                .map(|c| tokio::spawn(api_client(api, token.clone(), c, Window::now())))
                .collect(),
        )
        .await?;
        let redis_url = stack.redis.url();
        let redis_run = Run::collect(
            (0..clients)
                .map(|c| tokio::spawn(redis_client(redis_url.clone(), c, Window::now())))
                .collect(),
        )
        .await?;
        api_run.print("GET /v1/devices/{d}/latest (component)", clients);
        redis_run.print("baseline: raw Redis HGETALL of the same hash", clients);
        println!(
            "  {:<44} {:>8} {:>10.3}   (goal ≥ 0.5)",
            "API / Redis requests/s",
            clients,
            api_run.per_second() / redis_run.per_second()
        );
    }

    history(&stack, &storage, &token).await?;
    Ok(())
}

/// Sends 10,000 points of one key, then times the page that holds them all: answered by the
/// component (first request, and a host whose answer cache is off), from the answer cache, and
/// read directly from PostgreSQL.
async fn history(stack: &Stack, storage: &Storage, token: &str) -> anyhow::Result<()> {
    // On the grid, ~47 h ago; the range ends over a day ago (the lateness window), so the
    // answer is immutable and the cache keeps it.
    let from = (now_ms() - 47 * 3_600_000).div_euclid(GRID_MS) * GRID_MS;
    let timestamps: Vec<i64> = (0..HISTORY_POINTS as i64)
        .map(|i| from + 1 + i * HISTORY_STEP_MS)
        .collect();
    let to = (timestamps[HISTORY_POINTS - 1] + 1).div_euclid(GRID_MS) * GRID_MS + GRID_MS;
    let points: Vec<Json> = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| {
            json!({"key": HISTORY_KEY, "value": 1000.0 + (i % 977) as f64 * 0.25, "ts": ts})
        })
        .collect();
    submit(stack, HISTORY_DEVICE, points).await?;
    assert_eq!(
        storage
            .count_points(&weir_storage::DeviceRef::new(ORG, HISTORY_DEVICE))
            .await?,
        HISTORY_POINTS as i64
    );

    let url = format!(
        "/v1/devices/{HISTORY_DEVICE}/keys/{HISTORY_KEY}/history?from={from}&to={to}&limit={HISTORY_POINTS}"
    );
    let mut cached_api = Api::connect(stack.host.api_addr(), token).await?;
    let started = Instant::now();
    let body = cached_api.get(&url).await?;
    let first = started.elapsed();
    let page: Json = serde_json::from_slice(&body)?;
    let page_points = page["points"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        page_points == HISTORY_POINTS && page["next"].is_null(),
        "the page holds every point ({page_points} of {HISTORY_POINTS}, next {})",
        page["next"]
    );
    anyhow::ensure!(
        page["points"][0][0] == json!(timestamps[0])
            && page["points"][0][1].as_f64() == Some(1000.0),
        "the page starts with the first point: {}",
        page["points"][0]
    );

    let mut cached = Vec::new();
    for _ in 0..HISTORY_REQUESTS {
        let started = Instant::now();
        anyhow::ensure!(cached_api.get(&url).await? == body, "cached page differs");
        cached.push(started.elapsed());
    }

    // The same data through a second host whose answer cache is off: every request runs the
    // component. One unmeasured request first opens its read-only pool's connections.
    let mut config = stack.config.clone();
    config.query.answer_cache_entries = 0;
    let uncached_host = Host::start(config).await?;
    let mut uncached_api = Api::connect(uncached_host.api_addr(), token).await?;
    anyhow::ensure!(
        uncached_api.get(&url).await? == body,
        "uncached page differs"
    );
    let mut uncached = Vec::new();
    for _ in 0..HISTORY_REQUESTS {
        let started = Instant::now();
        anyhow::ensure!(
            uncached_api.get(&url).await? == body,
            "uncached page differs"
        );
        uncached.push(started.elapsed());
    }

    // Baseline: the same rows straight from PostgreSQL, one prepared statement.
    let (client, connection) =
        tokio_postgres::connect(&stack.postgres.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let statement = client
        .prepare(
            "SELECT ts, v_float FROM points p JOIN series s ON s.id = p.series_id \
             WHERE s.org = $1 AND s.device = $2 AND s.key = $3 AND ts >= $4 AND ts < $5 \
             ORDER BY ts LIMIT 10000",
        )
        .await?;
    let (from_ts, to_ts) = (system_time(from), system_time(to));
    let mut postgres = Vec::new();
    for round in 0..=HISTORY_REQUESTS {
        let started = Instant::now();
        let rows = client
            .query(
                &statement,
                &[&ORG, &HISTORY_DEVICE, &HISTORY_KEY, &from_ts, &to_ts],
            )
            .await?;
        let values: Vec<(SystemTime, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let elapsed = started.elapsed();
        anyhow::ensure!(values.len() == HISTORY_POINTS, "{} rows", values.len());
        // The first round plans and warms the statement, like the uncached host's first request.
        if round > 0 {
            postgres.push(elapsed);
        }
    }
    drop(uncached_api);
    drop(uncached_host);

    println!(
        "history page: {HISTORY_POINTS} points of one key, one client, {HISTORY_REQUESTS} requests each, body {} bytes",
        body.len()
    );
    println!("  {:<44} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "  {:<44} {:>9.1}",
        "first request (component + PostgreSQL)",
        ms(first)
    );
    let row = |name: &str, mut times: Vec<Duration>| {
        times.sort();
        println!(
            "  {name:<44} {:>9.1} {:>9.1}",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99))
        );
    };
    row("component, answer cache off", uncached);
    row("host answer cache", cached);
    row("baseline: the rows via tokio-postgres", postgres);
    Ok(())
}

/// Enrols `device` and submits `points` through the device API in batches.
async fn submit(stack: &Stack, device: &str, points: Vec<Json>) -> anyhow::Result<()> {
    let files = weir_pki::issue_device(&stack.pki_dir, device, ORG, 7)?;
    let tls = weir_pki::device_client_config(
        &stack.pki_dir.join("ca.pem"),
        &files.cert,
        &files.key,
        ClientAlpn::H2,
    )?;
    let mut client =
        DeviceClient::connect(&stack.host.device_addr().to_string(), SERVER_NAME, tls).await?;
    for (n, chunk) in points.chunks(BATCH_POINTS).enumerate() {
        let receipt = client
            .submit(&json!({"batch": format!("{device}-{n}"), "points": chunk}))
            .await?;
        let body = receipt.json();
        anyhow::ensure!(
            receipt.status == StatusCode::OK
                && body["accepted"] == json!(chunk.len())
                && body["rejected"] == json!([]),
            "every point of {device} is accepted: {} {body}",
            receipt.status
        );
    }
    Ok(())
}

/// Checks that a latest answer holds what was sent: a benchmark of 404s would be worthless.
async fn check_latest_answer(api: SocketAddr, token: &str) -> anyhow::Result<()> {
    let d = DEVICES - 1;
    let body = Api::connect(api, token)
        .await?
        .get(&format!("/v1/devices/{}/latest", device_id(d)))
        .await?;
    let answer: Json = serde_json::from_slice(&body)?;
    for (key, value) in LATEST_KEYS {
        anyhow::ensure!(
            answer["keys"][key]["value"] == value(d),
            "the latest answer holds {key} = {}: {answer}",
            value(d)
        );
    }
    Ok(())
}

fn device_id(d: usize) -> String {
    format!("meter-{d:02}")
}

/// An HTTP/1.1 connection to the API listener, kept alive, with a bearer token.
struct Api {
    addr: SocketAddr,
    authorization: String,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Api {
    async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Api> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Api {
            addr,
            authorization: format!("Bearer {token}"),
            sender,
        })
    }

    /// `GET path`: the body of a 200 answer; any other status is an error.
    async fn get(&mut self, path: &str) -> anyhow::Result<Bytes> {
        let request = hyper::Request::get(path)
            .header(HOST, self.addr.to_string())
            .header(AUTHORIZATION, &self.authorization)
            .body(Empty::<Bytes>::new())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status == StatusCode::OK,
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(body)
    }
}

/// One API client: latest values of every device in turn, until the window closes.
async fn api_client(
    addr: SocketAddr,
    token: Arc<str>,
    client: usize,
    window: Window,
) -> anyhow::Result<Vec<Duration>> {
    let mut api = Api::connect(addr, &token).await?;
    let mut latencies = Vec::new();
    let mut d = client;
    while window.is_open() {
        let path = format!("/v1/devices/{}/latest", device_id(d % DEVICES));
        let sent = Instant::now();
        api.get(&path).await?;
        window.record(&mut latencies, sent);
        d += 1;
    }
    Ok(latencies)
}

/// One Redis client: `HGETALL` of the hash the component reads for every device in turn.
async fn redis_client(url: String, client: usize, window: Window) -> anyhow::Result<Vec<Duration>> {
    let mut connection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut latencies = Vec::new();
    let mut d = client;
    while window.is_open() {
        // `weir:latest:<org>:<device>`, as weir-storage writes it and the component reads it
        // (nothing to escape in these names).
        let hash = format!("weir:latest:{ORG}:{}", device_id(d % DEVICES));
        let sent = Instant::now();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&hash)
            .query_async(&mut connection)
            .await?;
        window.record(&mut latencies, sent);
        anyhow::ensure!(fields.len() == LATEST_KEYS.len(), "{hash}: {fields:?}");
        d += 1;
    }
    Ok(latencies)
}

/// When a run's clients stop, and from when their requests count.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
}

impl Window {
    fn now() -> Window {
        let measure_from = Instant::now() + WARM_UP;
        Window {
            measure_from,
            until: measure_from + MEASURE,
        }
    }

    fn is_open(&self) -> bool {
        Instant::now() < self.until
    }

    /// Keeps the latency of a request sent at `sent` if it lies wholly in the measured part.
    fn record(&self, latencies: &mut Vec<Duration>, sent: Instant) {
        let done = Instant::now();
        if sent >= self.measure_from && done <= self.until {
            latencies.push(done - sent);
        }
    }
}

/// The latencies of every request of one run, sorted.
struct Run {
    latencies: Vec<Duration>,
}

impl Run {
    async fn collect(
        clients: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    ) -> anyhow::Result<Run> {
        let mut latencies = Vec::new();
        for client in clients {
            latencies.extend(client.await??);
        }
        latencies.sort();
        Ok(Run { latencies })
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / MEASURE.as_secs_f64()
    }

    fn print(&self, name: &str, clients: usize) {
        println!(
            "  {name:<44} {clients:>8} {:>10.0} {:>9.2} {:>9.2}",
            self.per_second(),
            ms(percentile(&self.latencies, 0.50)),
            ms(percentile(&self.latencies, 0.99))
        );
    }
}

/// The `q` quantile of sorted `times` (nearest rank).
fn percentile(times: &[Duration], q: f64) -> Duration {
    times[((times.len() - 1) as f64 * q).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}
