//! `weir simulate`: a fleet of simulated devices uploading realistic meter data over mutual TLS
//! HTTP/2 with store-and-forward, a live progress line, and a summary of throughput and batch
//! latency. Device certificates are issued on the fly from the CA of a PKI directory.

mod device;
pub mod meter;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use weir_pki::{Ca, ClientAlpn, PkiPaths};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// The device listener, `host:port`.
    pub target: String,
    /// The name the server certificate is checked against.
    pub server_name: String,
    /// PKI directory whose CA issues the devices' certificates and that the server is trusted by.
    pub pki_dir: PathBuf,
    /// Number of devices.
    pub devices: usize,
    /// Organisation of the devices.
    pub org: String,
    /// Prefix of device ids (`<prefix>-0001`...).
    pub device_prefix: String,
    /// Points per second per device; `None` uploads a day of back-filled history as fast as
    /// the server takes it.
    pub rate: Option<f64>,
    /// Points per batch at most.
    pub batch_points: usize,
    /// Stop generating after this long.
    pub duration: Option<Duration>,
    /// Stop generating after this many points per device.
    pub points_per_device: Option<u64>,
    /// How long unacknowledged points may keep being retried after generation stops.
    pub drain_timeout: Duration,
    /// Print a live progress line on stderr.
    pub progress: bool,
}

/// Counters shared by the simulated devices.
#[derive(Default)]
pub struct Stats {
    generated: AtomicU64,
    acknowledged: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    duplicate_batches: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    connect_failures: AtomicU64,
    dropped: AtomicU64,
    unacknowledged: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Stats {
    fn record_ack(
        &self,
        points: u64,
        accepted: u64,
        rejected: u64,
        duplicate: bool,
        latency: Duration,
    ) {
        self.acknowledged.fetch_add(points, Ordering::Relaxed);
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.duplicate_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.latencies.lock().expect("latency lock").push(latency);
    }
}

/// What a simulation achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationReport {
    /// Devices simulated.
    pub devices: usize,
    /// Wall-clock time from start to the last acknowledgement.
    pub elapsed: Duration,
    /// Points read from the simulated meters.
    pub generated: u64,
    /// Points in acknowledged batches.
    pub acknowledged: u64,
    /// Points the server accepted (stored, or identical re-sends).
    pub accepted: u64,
    /// Points the server rejected with a reason.
    pub rejected: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Acknowledged batches the server had already stored (re-sends after a lost answer).
    pub duplicate_batches: u64,
    /// Uploads retried (429, 5xx, lost connection).
    pub retries: u64,
    /// Points dropped because the server refused their batch for good (4xx).
    pub dropped: u64,
    /// Points still queued when the simulation ended.
    pub unacknowledged: u64,
    /// Median batch round trip.
    pub latency_p50: Duration,
    /// 99th percentile batch round trip.
    pub latency_p99: Duration,
}

impl SimulationReport {
    /// Acknowledged points per second.
    pub fn points_per_second(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation summary")?;
        writeln!(f, "  devices              {}", self.devices)?;
        writeln!(
            f,
            "  elapsed              {:.1} s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  points generated     {}", self.generated)?;
        writeln!(
            f,
            "  points acknowledged  {} ({} accepted, {} rejected)",
            self.acknowledged, self.accepted, self.rejected
        )?;
        writeln!(
            f,
            "  throughput           {:.0} points/s",
            self.points_per_second()
        )?;
        writeln!(
            f,
            "  batches              {} ({} answered as duplicates)",
            self.batches, self.duplicate_batches
        )?;
        writeln!(
            f,
            "  batch latency        p50 {:.1} ms, p99 {:.1} ms",
            ms(self.latency_p50),
            ms(self.latency_p99)
        )?;
        writeln!(f, "  retries              {}", self.retries)?;
        write!(
            f,
            "  unacknowledged       {} (dropped {})",
            self.unacknowledged, self.dropped
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the simulation to the end and returns its report.
pub async fn run(config: SimulationConfig) -> anyhow::Result<SimulationReport> {
    let ca = Ca::load(&config.pki_dir)
        .with_context(|| format!("loading the CA of {}", config.pki_dir.display()))?;
    let server_ca = std::fs::read_to_string(PkiPaths::new(&config.pki_dir).ca_cert())?;
    let now = time::OffsetDateTime::now_utc();
    let mut devices = Vec::with_capacity(config.devices);
    for index in 0..config.devices {
        let id = format!("{}-{:04}", config.device_prefix, index + 1);
        let issued = ca.issue_device_cert(
            &id,
            &config.org,
            now - time::Duration::minutes(5),
            now + time::Duration::days(7),
        )?;
        let tls = weir_pki::device_client_config_from_pem(
            &server_ca,
            &issued.cert_pem,
            &issued.key_pem,
            ClientAlpn::H2,
        )?;
        devices.push((id, tls));
    }

    let config = Arc::new(config);
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let generation_limit = config
        .duration
        .unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let deadline = started + generation_limit + config.drain_timeout;
    let progress = config
        .progress
        .then(|| tokio::spawn(show_progress(stats.clone(), started)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (id, tls)) in devices.into_iter().enumerate() {
        tasks.spawn(device::run_device(
            index,
            id,
            tls,
            config.clone(),
            stats.clone(),
            deadline,
        ));
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let mut latencies = std::mem::take(&mut *stats.latencies.lock().expect("latency lock"));
    latencies.sort();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Ok(SimulationReport {
        devices: config.devices,
        elapsed,
        generated: load(&stats.generated),
        acknowledged: load(&stats.acknowledged),
        accepted: load(&stats.accepted),
        rejected: load(&stats.rejected),
        batches: load(&stats.batches),
        duplicate_batches: load(&stats.duplicate_batches),
        retries: load(&stats.retries),
        dropped: load(&stats.dropped),
        unacknowledged: load(&stats.unacknowledged),
        latency_p50: percentile(&latencies, 0.50),
        latency_p99: percentile(&latencies, 0.99),
    })
}

/// The `q` quantile of sorted `values` (nearest rank).
fn percentile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Redraws one status line every second (a new line every 5 s when stderr is not a terminal).
async fn show_progress(stats: Arc<Stats>, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(period).await;
        let acked = stats.acknowledged.load(Ordering::Relaxed);
        let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), acked);
        let queued = stats
            .generated
            .load(Ordering::Relaxed)
            .saturating_sub(acked);
        let line = format!(
            "[{:>4.0} s] acknowledged {acked} points ({rate:.0}/s), waiting {queued}, batches {}, retries {}",
            started.elapsed().as_secs_f64(),
            stats.batches.load(Ordering::Relaxed),
            stats.retries.load(Ordering::Relaxed),
        );
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}
