//! The host under abuse: how much of its honest ingest throughput one `weir serve` host keeps
//! while attackers hold idle connections, trickle request bodies, flood HTTP/2 streams and guess
//! API tokens; how much memory the attack costs it; and which of its limits bite.
//!
//! **Topology**, all on loopback, everything sharing this machine's cores: a throw-away
//! PostgreSQL and Redis (`weir-services`); one real host, `target/release/weir serve`, run as a
//! child process ([`WeirHost`]) so that its peak resident memory (`VmHWM` in
//! `/proc/<pid>/status`) is its own; its PKI made here, with the first CRL published before it
//! starts; and, in this process, the honest devices and every attacker.
//!
//! **Honest load**: 16 devices, each with its own enrolled certificate on one mutual-TLS HTTP/2
//! connection, submit batches of 50 points (5 keys × 10 timestamps) in a closed loop, one batch
//! in flight each. Throughput counts acknowledged batches (`200`); latency is each acknowledged
//! batch's round trip. Every other answer, lost connection or timeout is counted and printed.
//!
//! **Phases**: 1, the baseline: the honest load alone for 20 s (after 3 s of warm-up). 2, under
//! attack: the attackers start, and 5 s later the same honest load runs for 20 s while they go
//! on; they keep going 10 s after it so that the slow bodies meet the host's 30 s body timeout
//! and their `408`s are counted. 3, after: the honest load alone for 10 s, to see the host
//! recover. The baseline is phase 1 of the same run rather than a figure from another run: same
//! machine, same host process, same database, same devices on the same connections; only the
//! attackers differ, so the ratio is their cost and not the noise between two runs.
//!
//! **Attacks** (phase 2):
//! - (a) idle connections: 500 TCP connections to the device port and 500 to the API port; half
//!   send nothing, half one byte (a TLS record type, or `G`); each holds until the host closes
//!   it, then comes back 200 ms later.
//! - (b) slow bodies: 8 devices with valid certificates, 2 connections each, 16 streams per
//!   connection, each stream a `POST /v1/submit` claiming `Content-Length: 1000000` and sending
//!   4 bytes a second (one stream in eight claims 8 MiB instead, over the body limit). A stream
//!   answered is opened again a second later.
//! - (c) stream flood: one device certificate on 8 connections, 64 concurrent request loops on
//!   each, every request a valid 1-point `POST /v1/submit`: more connections than
//!   `server.device_max_connections` (4), more streams than `server.device_max_streams` (16)
//!   and more requests at once than `server.device_max_requests` (8).
//! - (d) API abuse: 32 keep-alive connections asking `GET /v1/devices` with random well-formed
//!   bearer tokens (`weir_` + 64 hex digits), 4 hammering `GET /readyz` and 4 `GET
//!   /openapi.json`.
//!
//! Every attacker answer is tallied by status and error code (or by what happened to the
//! connection), and the host's `/metrics` limit series are printed at the end. Beside the load,
//! in every phase, one more honest device connects anew every 0.5 s and submits one batch: what
//! an attack does to devices that are not connected yet (a device coming back after a network
//! blip) does not show in the 16 already connected. `ABUSE_ATTACKS` picks the attacks phase 2
//! runs (default `abcd`; e.g. `ABUSE_ATTACKS=c` for the stream flood alone), to see the cost of
//! each.
//!
//! **Configuration**: the host runs with its shipped defaults (every `server.*` limit) except the
//! per-device request rate: `WEIR_DEVICE_RATE=1000`, `WEIR_DEVICE_BURST=2000`, far above what
//! one honest device reaches in its closed loop (~130 batches a second here at best), so no
//! honest device is rate-limited in any phase; the bench prints honest `429`s if there are any. The
//! flooding device gets the same allowance, so what holds it back is the per-connection stream
//! cap and the per-device caps, not the rate limit.
//!
//! **Caveat**: the attackers run in this process (on threads of their own, so the honest
//! devices' tasks never queue behind theirs) on the same 2 cores as the host, PostgreSQL and
//! Redis, so part of any slow-down is their own CPU. The table gives, per phase, the cores used
//! by the host, PostgreSQL, Redis, the honest devices, the attackers, interrupts and softirqs
//! (the loopback traffic's packet work) and everything else on the machine (other jobs), to
//! tell them apart.
//!
//! Run with `cargo xtask bench -- --bench abuse` (or `cargo bench -p weir-tests --bench abuse`
//! after `cargo xtask components` and `cargo build --release -p weir`). It takes about 1.5
//! minutes.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body, Frame};
use hyper::client::conn::{http1, http2};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use weir::device_client::DeviceClient;
use weir_pki::ClientAlpn;
use weir_services::{WeirHost, WeirHostOptions, weir_binary};
use weir_storage::Storage;
use weir_tests::stack::SERVER_NAME;
use weir_tests::{PostgresServer, RedisServer, component_path, functions_dir};

/// Honest devices, one connection and one batch in flight each.
const HONEST_DEVICES: usize = 16;
/// Points per honest batch: `KEYS` keys × 10 timestamps.
const BATCH_POINTS: usize = 50;
const KEYS: usize = 5;
/// Unmeasured honest load before the baseline.
const WARM_UP: Duration = Duration::from_secs(3);
/// Measured honest load in phases 1 and 2.
const MEASURED: Duration = Duration::from_secs(20);
/// Measured honest load in phase 3.
const RECOVERY: Duration = Duration::from_secs(10);
/// Attackers alone before the honest load of phase 2 starts.
const ATTACK_LEAD: Duration = Duration::from_secs(5);
/// Attackers alone after it ends: with the lead, past the host's 30 s body timeout.
const ATTACK_TAIL: Duration = Duration::from_secs(10);
/// Longest an honest or flood request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the fresh-connection probe connects anew.
const FRESH_EVERY: Duration = Duration::from_millis(500);

/// (a) Idle connections per listener, and how long one waits before coming back.
const IDLE_PER_LISTENER: usize = 500;
const IDLE_RECONNECT: Duration = Duration::from_millis(200);
/// (b) Slow-body devices, their connections and streams.
const SLOW_DEVICES: usize = 8;
const SLOW_CONNECTIONS: usize = 2;
const SLOW_STREAMS: usize = 16;
/// The body a slow stream claims, under the host's 1 MiB limit, and what one in eight claims.
const SLOW_CLAIM: u64 = 1_000_000;
const OVERSIZED_CLAIM: u64 = 8 << 20;
/// A slow stream sends `TRICKLE` every `TRICKLE_EVERY`.
const TRICKLE: &[u8] = b"[   ";
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
/// (c) The flooding device's connections and request loops per connection.
const FLOOD_CONNECTIONS: usize = 8;
const FLOOD_STREAMS: usize = 64;
/// (d) API clients of each kind, one keep-alive connection each.
const FAKE_TOKEN_CLIENTS: usize = 32;
const READYZ_CLIENTS: usize = 4;
const OPENAPI_CLIENTS: usize = 4;

/// The per-device rate the host gets: far above an honest device's closed loop.
const DEVICE_RATE: &str = "1000";
const DEVICE_BURST: &str = "2000";

/// The name of the attackers' threads.
const ATTACKER_THREAD: &str = "attacker";

const IDLE_DEVICE_PORT: &str = "(a) idle, device port";
const IDLE_API_PORT: &str = "(a) idle, API port";
const SLOW_BODIES: &str = "(b) slow bodies";
const STREAM_FLOOD: &str = "(c) stream flood";
const FAKE_TOKENS: &str = "(d) fake tokens, /v1/devices";
const READYZ: &str = "(d) /readyz";
const OPENAPI: &str = "(d) /openapi.json";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let binary = weir_binary()?;
    component_path("validate.wasm");
    let attacks = Attacks::from_env()?;
    eprintln!("starting PostgreSQL, Redis and `weir serve`...");
    let postgres = tokio::task::spawn_blocking(PostgresServer::start_temporary);
    let redis = tokio::task::spawn_blocking(RedisServer::start_temporary);
    let (postgres, redis) = (postgres.await??, redis.await??);
    let dir = tempfile::Builder::new()
        .prefix("weir-bench-abuse-")
        .tempdir()?;
    let pki_dir = dir.path().join("pki");
    let edge_dir = dir.path().join("edge-tls");
    make_pki(&pki_dir, &edge_dir)?;
    let ledger = Storage::connect(&postgres.url(), 4, Duration::from_secs(10)).await?;
    ledger.migrate().await?;
    weir::ca::publish_crl(&ledger, &weir_pki::Ca::load(&pki_dir)?).await?;

    let options = WeirHostOptions::new(&binary, "abused", dir.path().join("host"))
        .env("WEIR_REGION", "bench")
        .env("WEIR_DATABASE_URL", postgres.url())
        .env("WEIR_REDIS_URL", redis.url())
        .env("WEIR_PKI_DIR", text(&edge_dir)?)
        .env("WEIR_FUNCTIONS_DIR", text(&functions_dir())?)
        .env("WEIR_STATE_DIR", text(&dir.path().join("host/state"))?)
        .env("WEIR_DEVICE_RATE", DEVICE_RATE)
        .env("WEIR_DEVICE_BURST", DEVICE_BURST);
    let host = tokio::task::block_in_place(|| -> anyhow::Result<WeirHost> {
        let host = WeirHost::start(options)?;
        host.wait_until_ready(Duration::from_secs(30))?;
        Ok(host)
    })?;
    let pid = host
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the host is not running"))?;
    let (device_addr, api_addr) = (host.device_addr(), host.api_addr());
    eprintln!(
        "host pid {pid}: devices {device_addr}, API {api_addr}, log {}",
        host.log_path().display()
    );

    let ca_pem = pki_dir.join("ca.pem");
    let enrol = async |id: &str| -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let files = weir::ca::enrol_device(&ledger, &pki_dir, "bench", id, 7).await?;
        Ok(weir_pki::device_client_config(
            &ca_pem,
            &files.cert,
            &files.key,
            ClientAlpn::H2,
        )?)
    };
    let base_ts = now_ms() - 3_600_000;
    let mut honest = Vec::with_capacity(HONEST_DEVICES);
    for n in 0..HONEST_DEVICES {
        let id = format!("honest-{n:02}");
        let tls = enrol(&id).await?;
        let client =
            DeviceClient::connect(&device_addr.to_string(), SERVER_NAME, tls.clone()).await?;
        honest.push(HonestDevice {
            id,
            tls,
            client: Some(client),
            seq: 0,
            ts: base_ts,
        });
    }
    let mut slow_tls = Vec::with_capacity(SLOW_DEVICES);
    for n in 0..SLOW_DEVICES {
        slow_tls.push(enrol(&format!("slow-{n}")).await?);
    }
    let flood_tls = enrol("flood").await?;
    let probe = Arc::new(FreshProbe {
        tls: enrol("fresh-probe").await?,
        addr: device_addr.to_string(),
        batches: AtomicI64::new(0),
        base_ts: base_ts - 2 * 3_600_000,
    });
    let cpu = Cpu::new(pid, postgres.data_dir(), redis.port());

    eprintln!(
        "phase 1: {HONEST_DEVICES} honest devices alone ({WARM_UP:?} warm-up, {MEASURED:?} measured)..."
    );
    let (devices, _) = honest_load(honest, device_addr, WARM_UP).await;
    let (devices, baseline) = measured(&cpu, &probe, devices, device_addr, MEASURED).await;
    let memory_before = Memory::read(pid)?;

    eprintln!(
        "phase 2: attackers {} start; honest load from {ATTACK_LEAD:?} on for {MEASURED:?}; \
         attackers stop {ATTACK_TAIL:?} after it...",
        attacks.0
    );
    let tally = Arc::new(Tally::default());
    let attack_started = Instant::now();
    let stop = attack_started + ATTACK_LEAD + MEASURED + ATTACK_TAIL;
    // The attackers get threads of their own (a runtime of their own), so that the honest
    // devices' tasks never queue behind theirs; they still share the cores.
    let attack_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(ATTACKER_THREAD)
        .enable_all()
        .build()?;
    let on = attack_runtime.handle().clone();
    let mut attackers = JoinSet::new();
    // The device attackers connect first: the idle connections would otherwise hold every
    // handshake place and keep them out.
    for tls in slow_tls.iter().filter(|_| attacks.has('b')) {
        for _ in 0..SLOW_CONNECTIONS {
            attackers.spawn_on(
                slow_connection(device_addr, tls.clone(), tally.clone(), stop),
                &on,
            );
        }
    }
    let flood_batches = Arc::new(AtomicI64::new(0));
    for _ in 0..FLOOD_CONNECTIONS * usize::from(attacks.has('c')) {
        attackers.spawn_on(
            flood_connection(
                device_addr,
                flood_tls.clone(),
                flood_batches.clone(),
                base_ts - 3_600_000,
                tally.clone(),
                stop,
            ),
            &on,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in 0..IDLE_PER_LISTENER * usize::from(attacks.has('a')) {
        let byte = (n % 2 == 1).then_some(0x16);
        attackers.spawn_on(
            idle_connection(device_addr, byte, IDLE_DEVICE_PORT, tally.clone(), stop),
            &on,
        );
        let byte = (n % 2 == 1).then_some(b'G');
        attackers.spawn_on(
            idle_connection(api_addr, byte, IDLE_API_PORT, tally.clone(), stop),
            &on,
        );
    }
    let api_clients = [
        (ApiAttack::FakeToken, FAKE_TOKEN_CLIENTS),
        (ApiAttack::Readyz, READYZ_CLIENTS),
        (ApiAttack::OpenApi, OPENAPI_CLIENTS),
    ];
    for (attack, clients) in api_clients {
        for n in 0..clients * usize::from(attacks.has('d')) {
            attackers.spawn_on(
                api_client(api_addr, attack, n as u64, tally.clone(), stop),
                &on,
            );
        }
    }
    tokio::time::sleep_until((attack_started + ATTACK_LEAD).into()).await;
    let halfway = attack_started + ATTACK_LEAD + MEASURED / 2;
    let mid_attack = tokio::spawn(async move {
        tokio::time::sleep_until(halfway.into()).await;
        api_get(api_addr, "/metrics").await
    });
    let (devices, attacked) = measured(&cpu, &probe, devices, device_addr, MEASURED).await;
    let (_, mid_attack) = mid_attack.await??;
    eprintln!("phase 2: honest load done; attackers go on until their stop...");
    while attackers.join_next().await.is_some() {}
    attack_runtime.shutdown_background();
    let attack_seconds = attack_started.elapsed().as_secs_f64();
    let memory_after = Memory::read(pid)?;

    eprintln!("phase 3: honest devices alone again for {RECOVERY:?}...");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, after) = measured(&cpu, &probe, devices, device_addr, RECOVERY).await;
    let memory_end = Memory::read(pid)?;
    let (_, metrics) = api_get(api_addr, "/metrics").await?;

    report(
        &[
            ("1 baseline (honest alone)", &baseline, memory_before),
            ("2 under attack", &attacked, memory_after),
            ("3 after the attack", &after, memory_end),
        ],
        &attacks,
        &tally,
        attack_seconds,
        &mid_attack,
        &metrics,
    );
    drop(host);
    Ok(())
}

/// The CA, the server certificate (for `localhost` and 127.0.0.1) and what the host holds: the
/// CA certificate and the server's key pair, no CA key.
fn make_pki(pki_dir: &Path, edge_dir: &Path) -> anyhow::Result<()> {
    weir_pki::init_ca(pki_dir, "Weir Abuse Bench CA")?;
    weir_pki::issue_server(pki_dir, &[SERVER_NAME.into(), "127.0.0.1".into()], 30)?;
    std::fs::create_dir_all(edge_dir)?;
    for file in ["ca.pem", "server.pem", "server-key.pem"] {
        std::fs::copy(pki_dir.join(file), edge_dir.join(file))?;
    }
    Ok(())
}

fn text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}

/// The attacks phase 2 runs: the letters of `ABUSE_ATTACKS` (default `abcd`, all of them), so
/// that the cost of each can be seen alone.
struct Attacks(String);

impl Attacks {
    fn from_env() -> anyhow::Result<Attacks> {
        let letters = std::env::var("ABUSE_ATTACKS").unwrap_or_else(|_| "abcd".into());
        anyhow::ensure!(
            !letters.is_empty() && letters.chars().all(|c| "abcd".contains(c)),
            "ABUSE_ATTACKS={letters:?}: give some of the letters a, b, c, d (e.g. `ac`)"
        );
        Ok(Attacks(letters))
    }

    fn has(&self, letter: char) -> bool {
        self.0.contains(letter)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

// ----- honest devices -----

/// An honest device: its certificate, its connection (reopened if lost) and where its batch
/// ids and timestamps are.
struct HonestDevice {
    id: String,
    tls: Arc<rustls::ClientConfig>,
    client: Option<DeviceClient>,
    seq: u64,
    ts: i64,
}

impl HonestDevice {
    /// The next batch: `KEYS` keys at the next 10 timestamps, a fresh batch id.
    fn next_batch(&mut self) -> Json {
        self.seq += 1;
        let mut points = Vec::with_capacity(BATCH_POINTS);
        for _ in 0..BATCH_POINTS / KEYS {
            self.ts += 1;
            for key in 0..KEYS {
                points.push(json!({
                    "key": format!("meter.k{key}"),
                    "value": (self.ts % 10_000) as f64 * 0.5 + key as f64,
                    "ts": self.ts,
                }));
            }
        }
        json!({"batch": format!("{}-{}", self.id, self.seq), "points": points})
    }
}

/// What the honest devices did in one stretch of load.
#[derive(Default)]
struct HonestRun {
    batches: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    failures: BTreeMap<String, u64>,
    /// The fresh-connection probe beside the load.
    fresh: FreshRun,
    /// Cores used meanwhile: the host, PostgreSQL, Redis, this process (devices and attackers).
    cores: Cores,
}

impl HonestRun {
    fn batches_per_second(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let at = ((self.latencies.len() - 1) as f64 * quantile) as usize;
        self.latencies[at].as_secs_f64() * 1e3
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Honest load for `duration` with the fresh-connection probe beside it, and the CPU every
/// process used meanwhile.
async fn measured(
    cpu: &Cpu,
    probe: &Arc<FreshProbe>,
    devices: Vec<HonestDevice>,
    addr: SocketAddr,
    duration: Duration,
) -> (Vec<HonestDevice>, HonestRun) {
    let before = cpu.sample();
    let fresh = tokio::spawn(probe.clone().run(Instant::now() + duration));
    let (devices, mut run) = honest_load(devices, addr, duration).await;
    run.fresh = fresh.await.expect("the fresh-connection probe panicked");
    run.cores = before.cores_until(&cpu.sample());
    (devices, run)
}

/// One more honest device that does what a device coming back does: a new connection (TLS
/// handshake with its certificate), one 5-point batch, close; every [`FRESH_EVERY`]. Whether
/// it gets in shows what an attack does to devices that are not connected yet.
struct FreshProbe {
    tls: Arc<rustls::ClientConfig>,
    addr: String,
    batches: AtomicI64,
    base_ts: i64,
}

/// What the probe met: connections that got their batch stored, how long that took, and the
/// rest.
#[derive(Default)]
struct FreshRun {
    latencies: Vec<Duration>,
    failures: BTreeMap<String, u64>,
}

impl FreshProbe {
    async fn run(self: Arc<Self>, until: Instant) -> FreshRun {
        let mut run = FreshRun::default();
        while Instant::now() < until {
            let n = self.batches.fetch_add(1, Ordering::Relaxed);
            let points: Vec<Json> = (0..5)
                .map(|k| json!({"key": format!("probe.k{k}"), "value": n, "ts": self.base_ts + n}))
                .collect();
            let batch = json!({"batch": format!("probe-{n}"), "points": points});
            let started = Instant::now();
            let attempt = async {
                let connect = DeviceClient::connect(&self.addr, SERVER_NAME, self.tls.clone());
                let Ok(mut client) = connect.await else {
                    return "connection refused".to_owned();
                };
                match client.submit(&batch).await {
                    Ok(answer) => outcome(answer.status, &answer.body),
                    Err(_) => "refused or cut after the handshake".to_owned(),
                }
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
                Ok(answer) if answer == "200" => run.latencies.push(started.elapsed()),
                Ok(failure) => *run.failures.entry(failure).or_default() += 1,
                Err(_) => {
                    let failure = format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
                    *run.failures.entry(failure).or_default() += 1;
                }
            }
            tokio::time::sleep_until((started + FRESH_EVERY).into()).await;
        }
        run.latencies.sort();
        run
    }
}

/// Every device submits back to back until `duration` has passed; the last batches finish.
async fn honest_load(
    devices: Vec<HonestDevice>,
    addr: SocketAddr,
    duration: Duration,
) -> (Vec<HonestDevice>, HonestRun) {
    let started = Instant::now();
    let until = started + duration;
    let addr: Arc<str> = addr.to_string().into();
    let mut tasks = JoinSet::new();
    for device in devices {
        tasks.spawn(honest_device(device, addr.clone(), until));
    }
    let mut devices = Vec::new();
    let mut run = HonestRun::default();
    while let Some(done) = tasks.join_next().await {
        let (device, latencies, failures) = done.expect("an honest device task panicked");
        devices.push(device);
        run.batches += latencies.len() as u64;
        run.latencies.extend(latencies);
        for (failure, count) in failures {
            *run.failures.entry(failure).or_default() += count;
        }
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    (devices, run)
}

/// One honest device's closed loop: the latency of each acknowledged batch, and every failure.
async fn honest_device(
    mut device: HonestDevice,
    addr: Arc<str>,
    until: Instant,
) -> (HonestDevice, Vec<Duration>, BTreeMap<String, u64>) {
    let mut latencies = Vec::new();
    let mut failures = BTreeMap::<String, u64>::new();
    while Instant::now() < until {
        if device.client.is_none() {
            let connect = DeviceClient::connect(&addr, SERVER_NAME, device.tls.clone());
            match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
                Ok(Ok(client)) => device.client = Some(client),
                _ => {
                    *failures.entry("reconnect failed".into()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let batch = device.next_batch();
        let Some(client) = device.client.as_mut() else {
            continue;
        };
        let sent = Instant::now();
        let failure = match tokio::time::timeout(REQUEST_TIMEOUT, client.submit(&batch)).await {
            Ok(Ok(answer)) if answer.status == StatusCode::OK => {
                latencies.push(sent.elapsed());
                continue;
            }
            Ok(Ok(answer)) => outcome(answer.status, &answer.body),
            Ok(Err(_)) => {
                device.client = None;
                "connection lost".into()
            }
            Err(_) => {
                device.client = None;
                format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
            }
        };
        *failures.entry(failure).or_default() += 1;
    }
    (device, latencies, failures)
}

/// `"<status>"`, or `"<status> <code>"` when the body is a Weir error.
fn outcome(status: StatusCode, body: &[u8]) -> String {
    let code = serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
    match code {
        Some(code) => format!("{} {code}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

// ----- attackers -----

/// How many times each attack met each outcome.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Tally {
    fn add(&self, attack: &'static str, outcome: impl Into<String>) {
        let mut counts = self.counts.lock().expect("tally lock");
        *counts.entry((attack, outcome.into())).or_default() += 1;
    }
}

/// (a) One idle connection after another: connect, send `byte` if any, hold until the host
/// closes it, come back shortly after.
async fn idle_connection(
    addr: SocketAddr,
    byte: Option<u8>,
    attack: &'static str,
    tally: Arc<Tally>,
    stop: Instant,
) {
    while Instant::now() < stop {
        let held = async {
            let mut stream = TcpStream::connect(addr).await?;
            if let Some(byte) = byte {
                stream.write_all(&[byte]).await?;
            }
            let opened = Instant::now();
            let mut buffer = [0; 1024];
            while let Ok(1..) = stream.read(&mut buffer).await {}
            io::Result::Ok(opened.elapsed())
        };
        match timeout_at(stop.into(), held).await {
            Err(_) => {
                tally.add(attack, "held open until the attack stopped");
                return;
            }
            Ok(Err(_)) => tally.add(attack, "connect failed"),
            Ok(Ok(held)) if held < Duration::from_millis(500) => {
                tally.add(attack, "closed by the host at once (< 0.5 s)");
            }
            Ok(Ok(held)) if held < Duration::from_secs(5) => {
                tally.add(attack, "closed by the host after 0.5-5 s");
            }
            Ok(Ok(_)) => tally.add(attack, "closed by the host after >= 5 s"),
        }
        tokio::time::sleep(IDLE_RECONNECT).await;
    }
}

/// A mutual-TLS HTTP/2 connection to the device listener.
async fn h2_connect<B>(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<http2::SendRequest<B>>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(SERVER_NAME)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

type SlowBody = StreamBody<BoxStream<'static, Result<Frame<Bytes>, io::Error>>>;

/// A body that sends [`TRICKLE`] every [`TRICKLE_EVERY`] forever, and breaks off (resetting
/// the stream) once `answered` is set.
fn trickle(answered: Arc<AtomicBool>) -> SlowBody {
    let frames = futures_util::stream::unfold(answered, |answered| async move {
        tokio::time::sleep(TRICKLE_EVERY).await;
        let frame = if answered.load(Ordering::Relaxed) {
            Err(io::Error::other("answered: stop sending"))
        } else {
            Ok(Frame::data(Bytes::from_static(TRICKLE)))
        };
        Some((frame, answered))
    });
    StreamBody::new(frames.boxed())
}

/// (b) One slow-body connection: [`SLOW_STREAMS`] streams trickling their bodies, opened again
/// when answered; the connection is opened again if it is lost.
async fn slow_connection(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    tally: Arc<Tally>,
    stop: Instant,
) {
    while Instant::now() < stop {
        let sender = match timeout_at(stop.into(), h2_connect::<SlowBody>(addr, tls.clone())).await
        {
            Err(_) => return,
            Ok(Err(_)) => {
                tally.add(SLOW_BODIES, "connection refused");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Ok(Ok(sender)) => sender,
        };
        let streams = (0..SLOW_STREAMS).map(|n| {
            let claim = if n % 8 == 7 {
                OVERSIZED_CLAIM
            } else {
                SLOW_CLAIM
            };
            slow_stream(sender.clone(), claim, tally.clone(), stop)
        });
        futures_util::future::join_all(streams).await;
    }
}

/// One slow stream after another on `sender`, until the attack stops or the connection is lost.
async fn slow_stream(
    mut sender: http2::SendRequest<SlowBody>,
    claim: u64,
    tally: Arc<Tally>,
    stop: Instant,
) {
    while Instant::now() < stop && !sender.is_closed() {
        let answered = Arc::new(AtomicBool::new(false));
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{SERVER_NAME}/v1/submit"))
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, claim)
            .body(trickle(answered.clone()))
            .expect("a valid request");
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            hyper::Result::Ok((status, body))
        };
        let answer = timeout_at(stop.into(), exchange).await;
        answered.store(true, Ordering::Relaxed);
        match answer {
            Err(_) => {
                tally.add(SLOW_BODIES, "still trickling when the attack stopped");
                return;
            }
            Ok(Err(_)) => tally.add(SLOW_BODIES, "stream or connection error"),
            Ok(Ok((status, body))) => {
                let claimed = if claim == OVERSIZED_CLAIM {
                    "claiming 8 MiB"
                } else {
                    "claiming 1 MB"
                };
                tally.add(
                    SLOW_BODIES,
                    format!("{} ({claimed})", outcome(status, &body)),
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// (c) One connection of the flooding device: [`FLOOD_STREAMS`] request loops of 1-point
/// batches; the connection is opened again if it is lost.
async fn flood_connection(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    batches: Arc<AtomicI64>,
    base_ts: i64,
    tally: Arc<Tally>,
    stop: Instant,
) {
    while Instant::now() < stop {
        let sender =
            match timeout_at(stop.into(), h2_connect::<Full<Bytes>>(addr, tls.clone())).await {
                Err(_) => return,
                Ok(Err(_)) => {
                    tally.add(STREAM_FLOOD, "connection refused");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Ok(Ok(sender)) => sender,
            };
        let streams = (0..FLOOD_STREAMS).map(|_| {
            flood_stream(
                sender.clone(),
                batches.clone(),
                base_ts,
                tally.clone(),
                stop,
            )
        });
        futures_util::future::join_all(streams).await;
    }
}

/// One request loop of the flood, until the attack stops or the connection is lost.
async fn flood_stream(
    mut sender: http2::SendRequest<Full<Bytes>>,
    batches: Arc<AtomicI64>,
    base_ts: i64,
    tally: Arc<Tally>,
    stop: Instant,
) {
    while Instant::now() < stop && !sender.is_closed() {
        let n = batches.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "batch": format!("flood-{n}"),
            "points": [{"key": "flood.k", "value": n, "ts": base_ts + n}],
        });
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{SERVER_NAME}/v1/submit"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            hyper::Result::Ok((status, body))
        };
        match timeout_at(stop.into(), tokio::time::timeout(REQUEST_TIMEOUT, exchange)).await {
            Err(_) => return,
            Ok(Err(_)) => tally.add(
                STREAM_FLOOD,
                format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
            ),
            Ok(Ok(Err(_))) => tally.add(STREAM_FLOOD, "stream or connection error"),
            Ok(Ok(Ok((status, body)))) => tally.add(STREAM_FLOOD, outcome(status, &body)),
        }
    }
}

/// (d) What an API client asks for.
#[derive(Debug, Clone, Copy)]
enum ApiAttack {
    /// `GET /v1/devices` with a random well-formed bearer token.
    FakeToken,
    /// `GET /readyz` (the host pings PostgreSQL and Redis).
    Readyz,
    /// `GET /openapi.json` (answered by the query component).
    OpenApi,
}

impl ApiAttack {
    fn name(self) -> &'static str {
        match self {
            ApiAttack::FakeToken => FAKE_TOKENS,
            ApiAttack::Readyz => READYZ,
            ApiAttack::OpenApi => OPENAPI,
        }
    }
}

/// (d) One API client on one keep-alive HTTP/1.1 connection (opened again if lost), asking
/// back to back.
async fn api_client(
    addr: SocketAddr,
    attack: ApiAttack,
    seed: u64,
    tally: Arc<Tally>,
    stop: Instant,
) {
    let name = attack.name();
    let mut random = SplitMix(seed ^ now_ms() as u64);
    while Instant::now() < stop {
        let mut sender = match timeout_at(stop.into(), api_connect(addr)).await {
            Err(_) => return,
            Ok(Err(_)) => {
                tally.add(name, "connect failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(Ok(sender)) => sender,
        };
        while Instant::now() < stop && !sender.is_closed() {
            let mut request = Request::builder().header(HOST, addr.to_string());
            request = match attack {
                ApiAttack::FakeToken => request
                    .uri("/v1/devices")
                    .header(AUTHORIZATION, format!("Bearer {}", random.token())),
                ApiAttack::Readyz => request.uri("/readyz"),
                ApiAttack::OpenApi => request.uri("/openapi.json"),
            };
            let request = request
                .body(Empty::<Bytes>::new())
                .expect("a valid request");
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                hyper::Result::Ok((status, body))
            };
            match timeout_at(stop.into(), tokio::time::timeout(REQUEST_TIMEOUT, exchange)).await {
                Err(_) => return,
                Ok(Err(_)) => {
                    tally.add(
                        name,
                        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
                    );
                    break;
                }
                Ok(Ok(Err(_))) => {
                    tally.add(name, "connection closed by the host");
                    break;
                }
                Ok(Ok(Ok((status, body)))) => tally.add(name, outcome(status, &body)),
            }
        }
    }
}

async fn api_connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `GET path` on the API listener: status and body.
async fn api_get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let mut sender = api_connect(addr).await?;
    let request = Request::builder()
        .uri(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A small pseudo-random generator (SplitMix64) for made-up tokens: no security needed, only
/// tokens the host has never seen.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `weir_` and 64 lowercase hex digits: the shape of a real token.
    fn token(&mut self) -> String {
        let digits: String = (0..4).map(|_| format!("{:016x}", self.next())).collect();
        format!("weir_{digits}")
    }
}

// ----- the host's resources -----

/// The host's resident memory: peak (`VmHWM`) and current (`VmRSS`), in KiB.
#[derive(Clone, Copy)]
struct Memory {
    peak_kib: u64,
    current_kib: u64,
}

impl Memory {
    fn read(pid: u32) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))
        };
        Ok(Memory {
            peak_kib: field("VmHWM:")?,
            current_kib: field("VmRSS:")?,
        })
    }
}

/// CPU time of the host, its PostgreSQL (postmaster and backends) and Redis, and this process,
/// to tell the host's slow-down from the CPU the attackers take on the shared cores.
struct Cpu {
    host_pid: u32,
    postgres_pid_file: std::path::PathBuf,
    redis_port: u16,
    ticks_per_second: f64,
}

/// Cores used on average over a stretch of time.
#[derive(Default, Clone, Copy)]
struct Cores {
    host: f64,
    postgres: f64,
    redis: f64,
    /// This process but the attackers: the honest devices and the probe.
    devices: f64,
    attackers: f64,
    /// Interrupts and softirqs (`/proc/stat`): mostly the loopback traffic's packet work.
    irq: f64,
    /// Everything else on the machine: other jobs.
    other: f64,
}

struct CpuSample {
    at: Instant,
    /// CPU seconds so far of the host, PostgreSQL, Redis, this process, its attacker threads,
    /// interrupts and softirqs, and the whole machine.
    seconds: [f64; 7],
}

impl Cpu {
    fn new(host_pid: u32, postgres_data_dir: &Path, redis_port: u16) -> Cpu {
        let ticks_per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0);
        Cpu {
            host_pid,
            postgres_pid_file: postgres_data_dir.join("postmaster.pid"),
            redis_port,
            ticks_per_second,
        }
    }

    fn sample(&self) -> CpuSample {
        let all = processes("/proc");
        let machine = machine_ticks();
        // The postmaster's own time, its reaped children's, and its live backends'.
        let postmaster = std::fs::read_to_string(&self.postgres_pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
        let postgres = postmaster.map_or(0, |pid| {
            all.iter()
                .filter(|p| p.pid == pid || p.ppid == pid)
                .map(|p| p.ticks + if p.pid == pid { p.children_ticks } else { 0 })
                .sum()
        });
        let redis_port = format!(":{}", self.redis_port);
        let redis = all
            .iter()
            .filter(|p| p.cmdline.contains("redis-server") && p.cmdline.contains(&redis_port))
            .map(|p| p.ticks)
            .sum();
        let ticks = |pid: u32| all.iter().find(|p| p.pid == pid).map_or(0, |p| p.ticks);
        let attackers = processes("/proc/self/task")
            .iter()
            .filter(|thread| thread.comm == ATTACKER_THREAD)
            .map(|thread| thread.ticks)
            .sum();
        let seconds = [
            ticks(self.host_pid),
            postgres,
            redis,
            ticks(std::process::id()),
            attackers,
            machine[1],
            machine[0],
        ]
        .map(|ticks| ticks as f64 / self.ticks_per_second);
        CpuSample {
            at: Instant::now(),
            seconds,
        }
    }
}

impl CpuSample {
    fn cores_until(&self, later: &CpuSample) -> Cores {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let cores = |n: usize| (later.seconds[n] - self.seconds[n]) / wall;
        let (bench, attackers) = (cores(3), cores(4));
        Cores {
            host: cores(0),
            postgres: cores(1),
            redis: cores(2),
            devices: bench - attackers,
            attackers,
            irq: cores(5),
            other: (cores(6) - cores(0) - cores(1) - cores(2) - bench - cores(5)).max(0.0),
        }
    }
}

/// Ticks of the whole machine since boot (`/proc/stat`): busy (all but idle and iowait), and
/// of those, interrupts and softirqs.
fn machine_ticks() -> [u64; 2] {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return [0; 2];
    };
    let Some(cpu) = stat.lines().next() else {
        return [0; 2];
    };
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let at = |n: usize| fields.get(n).copied().unwrap_or(0);
    [(0..8).map(at).sum::<u64>() - at(3) - at(4), at(5) + at(6)]
}

/// A process (or thread) as `/proc` shows it: ids, name, CPU ticks (its own, and its reaped
/// children's) and its command line.
struct ProcessCpu {
    pid: u32,
    ppid: u32,
    comm: String,
    ticks: u64,
    children_ticks: u64,
    cmdline: String,
}

/// The processes of `/proc`, or the threads of `/proc/<pid>/task`.
fn processes(dir: &str) -> Vec<ProcessCpu> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("{dir}/{pid}/stat")).ok()?;
            let comm = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
            // "pid (comm) state ppid ...": after comm, ppid is field 1, utime/stime 11/12,
            // cutime/cstime 13/14.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok());
            let cmdline = std::fs::read(format!("{dir}/{pid}/cmdline")).unwrap_or_default();
            Some(ProcessCpu {
                pid,
                ppid: u32::try_from(field(1)?).ok()?,
                comm,
                ticks: field(11)? + field(12)?,
                children_ticks: field(13)? + field(14)?,
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            })
        })
        .collect()
}

// ----- the report -----

fn report(
    phases: &[(&str, &HonestRun, Memory)],
    attacks: &Attacks,
    tally: &Tally,
    attack_seconds: f64,
    mid_attack: &str,
    metrics: &str,
) {
    let baseline = phases[0].1.batches_per_second();
    println!(
        "Honest ingest under abuse: {HONEST_DEVICES} devices, batches of {BATCH_POINTS} points, \
         one in flight each; phase 2 attacks: {} (host: `weir serve`, defaults but \
         WEIR_DEVICE_RATE={DEVICE_RATE}, WEIR_DEVICE_BURST={DEVICE_BURST})",
        attacks.0
    );
    println!(
        "  {:<26} {:>9} {:>9} {:>7} {:>7} {:>6} {:>7} {:>47} {:>17}",
        "phase",
        "batches/s",
        "points/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "of ph.1",
        "cores host/pg/redis/devices/attackers/irq/other",
        "host RSS peak/now"
    );
    for (name, run, memory) in phases {
        let cores = run.cores;
        println!(
            "  {:<26} {:>9.1} {:>9.0} {:>7.1} {:>7.1} {:>6} {:>7.3} {:>47} {:>17}",
            name,
            run.batches_per_second(),
            run.batches_per_second() * BATCH_POINTS as f64,
            run.latency_ms(0.5),
            run.latency_ms(0.99),
            run.failed(),
            run.batches_per_second() / baseline,
            format!(
                "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
                cores.host,
                cores.postgres,
                cores.redis,
                cores.devices,
                cores.attackers,
                cores.irq,
                cores.other
            ),
            format!(
                "{:.1}/{:.1} MiB",
                memory.peak_kib as f64 / 1024.0,
                memory.current_kib as f64 / 1024.0
            ),
        );
    }
    let ratio = phases[1].1.batches_per_second() / baseline;
    println!(
        "  phase 2 / phase 1 honest throughput: {ratio:.3} (goal >= 0.8: {})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    println!(
        "  (host RSS: VmHWM and VmRSS of the `weir` process at the end of the phase; phase 2 ends \
         when the attackers stop)"
    );
    let listed = |failures: &BTreeMap<String, u64>| {
        if failures.is_empty() {
            return "none".to_owned();
        }
        let list: Vec<String> = failures
            .iter()
            .map(|(failure, count)| format!("{count} × {failure}"))
            .collect();
        list.join(", ")
    };
    for (name, run, _) in phases {
        println!("  honest failures, {name}: {}", listed(&run.failures));
    }
    println!(
        "A device connecting anew every {} ms beside the load (handshake + one 5-point batch):",
        FRESH_EVERY.as_millis()
    );
    for (name, run, _) in phases {
        let fresh = &run.fresh;
        let ok = fresh.latencies.len();
        let tried = ok as u64 + fresh.failures.values().sum::<u64>();
        let at = |q: f64| {
            fresh
                .latencies
                .get(((ok.max(1) - 1) as f64 * q) as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "  {name}: {ok} of {tried} stored (p50 {:.1} ms, max {:.1} ms); failed: {}",
            at(0.5),
            at(1.0),
            listed(&fresh.failures)
        );
    }

    println!("Attacker outcomes ({attack_seconds:.0} s of attack):");
    let counts = tally.counts.lock().expect("tally lock");
    let mut attacks: Vec<&'static str> = counts.keys().map(|(attack, _)| *attack).collect();
    attacks.dedup();
    for attack in attacks {
        let mut outcomes: Vec<(&String, u64)> = counts
            .iter()
            .filter(|((a, _), _)| *a == attack)
            .map(|((_, outcome), count)| (outcome, *count))
            .collect();
        outcomes.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        let total: u64 = outcomes.iter().map(|(_, count)| count).sum();
        println!(
            "  {attack}: {total} ({:.0}/s)",
            total as f64 / attack_seconds
        );
        for (outcome, count) in outcomes {
            println!("      {count:>8}  {outcome}");
        }
    }

    let gauges: Vec<&str> = mid_attack
        .lines()
        .filter(|line| line.starts_with("weir_db_pool") || line.starts_with("weir_event_streams "))
        .collect();
    println!("Host gauges halfway through phase 2: {}", gauges.join(", "));
    println!("Host limit metrics at the end (/metrics):");
    let watched = [
        "limit",
        "refused",
        "connections_cut",
        "too_many",
        "overloaded",
        "rate_limited",
        "timeout",
        "weir_batches_total",
        "weir_db_pool",
    ];
    for line in metrics.lines() {
        if !line.starts_with('#') && watched.iter().any(|word| line.contains(word)) {
            println!("  {line}");
        }
    }
}
