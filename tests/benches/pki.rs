//! The device PKI of a fleet: renewals per second through one edge host, with a small ledger
//! and with 10,000 more issued certificates in it (the goal: no slowdown with the count), and
//! how long a revocation takes to reach every host of two regions.
//!
//! Three hosts (two in region `a`, one in region `b` with its own Redis) share one PostgreSQL;
//! the issuing service runs in this process, the hosts hold no CA key. A renewal is the whole
//! path: a device's request over mutual TLS, the host queueing it in the ledger, the issuing
//! service checking, signing and recording it, the host answering. The baseline is the raw
//! signing rate of the same CA for the same CSRs on every core of this machine: no renewal path
//! can issue faster.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench pki` after `cargo xtask
//! components`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rcgen::{CertificateParams, KeyPair};
use serde_json::json;
use weir::device_client::DeviceClient;
use weir::host::Host;
use weir_pki::{Ca, ClientAlpn, DeviceIdentity};
use weir_services::RedisServer;
use weir_storage::{IssuedCertificate, Storage};
use weir_tests::stack::{SERVER_NAME, Stack};

/// Devices renewing in each run (each renews once).
const RENEWING: usize = 400;
/// Renewal requests in flight at once.
const CONCURRENCY: usize = 32;
/// Certificates added to the ledger between the two runs.
const LEDGER_GROWTH: usize = 10_000;
/// Revocations timed.
const REVOCATIONS: usize = 10;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    eprintln!("starting 2 regions (3 hosts) on one PostgreSQL...");
    let stack = Stack::start(|config| {
        config.region = "a".into();
        config.ingest.device_rate_per_second = 1e6;
        config.ingest.device_burst = 1e6;
    })
    .await?;
    let a2 = stack.another_host().await?;
    let redis_b = tokio::task::spawn_blocking(RedisServer::start_temporary).await??;
    let mut config_b = stack.config.clone();
    config_b.region = "b".into();
    config_b.redis_url = redis_b.url();
    config_b.state_dir = stack.dir.path().join("state-b");
    let b = Host::start(config_b).await?;
    let ledger = stack.ledger().await?;
    let ca = Ca::load(&stack.pki_dir)?;

    let baseline = signing_baseline(&ca)?;
    let small = renewals(&stack, &ledger, "small").await?;
    eprintln!("adding {LEDGER_GROWTH} certificates to the ledger...");
    grow_ledger(&ledger).await?;
    let large = renewals(&stack, &ledger, "large").await?;

    println!("Renewals through one edge host ({RENEWING} devices, {CONCURRENCY} in flight):");
    println!(
        "  ledger ~{:>6} certificates   {:>7.0} renewals/s   p50 {:>6.1} ms   p99 {:>6.1} ms",
        small.ledger, small.rate, small.p50_ms, small.p99_ms
    );
    println!(
        "  ledger ~{:>6} certificates   {:>7.0} renewals/s   p50 {:>6.1} ms   p99 {:>6.1} ms",
        large.ledger, large.rate, large.p50_ms, large.p99_ms
    );
    println!(
        "  baseline: the CA signing the same CSRs on {} threads   {:>7.0} signatures/s",
        baseline.threads, baseline.rate
    );
    println!(
        "  ratio large/small {:.2}; renewals/s ÷ baseline {:.3}",
        large.rate / small.rate,
        large.rate / baseline.rate
    );

    let hosts = [("a", &stack.host), ("a", &a2), ("b", &b)];
    revocations(&stack, &ledger, &ca, &hosts).await?;
    Ok(())
}

struct RenewalRun {
    ledger: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Baseline {
    threads: usize,
    rate: f64,
}

fn fresh_csr() -> String {
    let key = KeyPair::generate().expect("a key");
    CertificateParams::default()
        .serialize_request(&key)
        .expect("a CSR")
        .pem()
        .expect("PEM")
}

/// Raw signing: `RENEWING` CSRs renewed by the CA on every core.
fn signing_baseline(ca: &Ca) -> anyhow::Result<Baseline> {
    let threads = std::thread::available_parallelism()?.get();
    let csrs: Vec<String> = (0..RENEWING).map(|_| fresh_csr()).collect();
    let presented = DeviceIdentity {
        device: "meter".into(),
        org: "bench".into(),
        serial_hex: "40".into(),
        not_after: 0,
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in csrs.chunks(RENEWING.div_ceil(threads)) {
            let presented = &presented;
            scope.spawn(move || {
                for csr in chunk {
                    weir_pki::renew(ca, presented, csr, 7).expect("signed");
                }
            });
        }
    });
    Ok(Baseline {
        threads,
        rate: RENEWING as f64 / started.elapsed().as_secs_f64(),
    })
}

/// Enrols `RENEWING` devices, connects them all to the first host, then renews each once with
/// `CONCURRENCY` requests in flight.
async fn renewals(stack: &Stack, ledger: &Storage, run: &str) -> anyhow::Result<RenewalRun> {
    let ca_pem = stack.pki_dir.join("ca.pem");
    let addr = stack.host.device_addr().to_string();
    let mut clients = Vec::with_capacity(RENEWING);
    for n in 0..RENEWING {
        let id = format!("{run}-{n:04}");
        let files = weir::ca::enrol_device(ledger, &stack.pki_dir, "bench", &id, 7).await?;
        let tls = weir_pki::device_client_config(&ca_pem, &files.cert, &files.key, ClientAlpn::H2)?;
        clients.push((
            DeviceClient::connect(&addr, SERVER_NAME, tls).await?,
            fresh_csr(),
        ));
    }
    let ledger_size = count_certificates(stack).await?;
    let queue = Arc::new(tokio::sync::Mutex::new(clients));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let queue = queue.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some((mut client, csr)) = queue.lock().await.pop() else {
                    return anyhow::Ok(latencies);
                };
                let sent = Instant::now();
                let answer = client
                    .send_json(Method::POST, "/v1/renew", &json!({ "csr": csr }))
                    .await?;
                anyhow::ensure!(answer.status == StatusCode::OK, "{}", answer.json());
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(RENEWING);
    while let Some(done) = workers.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    Ok(RenewalRun {
        ledger: ledger_size,
        rate: RENEWING as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

async fn count_certificates(stack: &Stack) -> anyhow::Result<usize> {
    let (client, connection) =
        tokio_postgres::connect(&stack.config.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let count: i64 = client
        .query_one("SELECT count(*) FROM pki_certificates", &[])
        .await?
        .get(0);
    Ok(count as usize)
}

/// Adds `LEDGER_GROWTH` issued certificates (of other devices, a third of them superseded, a
/// few revoked) to the ledger.
async fn grow_ledger(ledger: &Storage) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    let week = Duration::from_secs(7 * 86_400);
    for n in 0..LEDGER_GROWTH {
        let device = format!("fleet-{:05}", n / 3);
        ledger
            .record_certificate(&IssuedCertificate {
                serial: format!("4{:031x}", 0x1000_0000 + n),
                org: "fleet".into(),
                device,
                not_before: now,
                not_after: now + week,
                renewed: n % 3 != 0,
                revoked_at: (n % 97 == 0).then_some(now),
                superseded_by: None,
                superseded_at: None,
            })
            .await?;
    }
    Ok(())
}

/// Times `REVOCATIONS` revocations: from the start of `weir pki revoke` to the moment each host
/// refuses a new connection of the device.
async fn revocations(
    stack: &Stack,
    ledger: &Storage,
    ca: &Ca,
    hosts: &[(&str, &Host)],
) -> anyhow::Result<()> {
    let ca_pem = stack.pki_dir.join("ca.pem");
    let mut per_host: Vec<Vec<Duration>> = vec![Vec::new(); hosts.len()];
    let mut slowest = Vec::new();
    for n in 0..REVOCATIONS {
        let id = format!("revoked-{n}");
        let files = weir::ca::enrol_device(ledger, &stack.pki_dir, "bench", &id, 7).await?;
        let tls = weir_pki::device_client_config(&ca_pem, &files.cert, &files.key, ClientAlpn::H2)?;
        for (_, host) in hosts {
            anyhow::ensure!(!refused(host, tls.clone()).await, "enrolled device refused");
        }
        let started = Instant::now();
        weir::ca::revoke_device(ledger, ca, "bench", &id).await?;
        let waits = hosts.iter().map(|(_, host)| {
            let tls = tls.clone();
            async move {
                while !refused(host, tls.clone()).await {
                    anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "not revoked");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                anyhow::Ok(started.elapsed())
            }
        });
        let times = futures_util::future::try_join_all(waits).await?;
        slowest.push(times.iter().copied().max().unwrap_or_default());
        for (host_times, time) in per_host.iter_mut().zip(times) {
            host_times.push(time);
        }
    }
    println!(
        "Revocation reaching every host ({REVOCATIONS} revocations; from `weir pki revoke` to a refused handshake):"
    );
    for ((region, host), times) in hosts.iter().zip(&mut per_host) {
        times.sort();
        println!(
            "  region {region} host {}   p50 {:>6.1} ms   max {:>6.1} ms",
            host.device_addr(),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    slowest.sort();
    println!(
        "  every host of both regions: p50 {:.1} ms, max {:.1} ms (goal: 2,000 ms)",
        ms(slowest[slowest.len() / 2]),
        ms(slowest[slowest.len() - 1])
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Whether `host` refuses a connection with `tls` (handshake or first request fails).
async fn refused(host: &Host, tls: Arc<rustls::ClientConfig>) -> bool {
    let attempt = async {
        let mut client =
            DeviceClient::connect(&host.device_addr().to_string(), SERVER_NAME, tls).await?;
        client.send_json(Method::GET, "/v1/ping", &json!({})).await
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_or(true, |answer| answer.is_err())
}
