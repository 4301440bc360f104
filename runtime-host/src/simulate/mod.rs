//! `weir simulate`: a fleet of simulated devices uploading realistic meter data over mutual TLS
//! HTTP/2 with store-and-forward, a live progress line, and a summary of throughput and batch
//! latency. Device certificates are issued on the fly from the CA of a PKI directory. Given
//! several region endpoints, each device picks the nearest and fails over between them
//! ([`crate::endpoints`]); the progress line and the summary show where the devices are and how
//! many moved.

mod device;
pub mod meter;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use weir_pki::{Ca, ClientAlpn, PkiPaths};

use crate::endpoints::{Endpoint, SelectionPolicy, Switch, SwitchReason};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// The region endpoints (device listeners or their load balancers), in configured order.
    pub endpoints: Vec<Endpoint>,
    /// How devices choose between the endpoints.
    pub selection: SelectionPolicy,
    /// How long a connect or an upload may take before the endpoint counts as failed.
    pub request_timeout: Duration,
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

impl SimulationConfig {
    /// The defaults of `weir simulate` against `endpoints`: 10 devices of organisation `demo`,
    /// 5 points/s each for 30 s in batches of at most 100.
    pub fn new(endpoints: Vec<Endpoint>, server_name: &str, pki_dir: PathBuf) -> Self {
        SimulationConfig {
            endpoints,
            selection: SelectionPolicy::default(),
            request_timeout: Duration::from_secs(5),
            server_name: server_name.to_owned(),
            pki_dir,
            devices: 10,
            org: "demo".into(),
            device_prefix: "sim".into(),
            rate: Some(5.0),
            batch_points: 100,
            duration: Some(Duration::from_secs(30)),
            points_per_device: None,
            drain_timeout: Duration::from_secs(60),
            progress: false,
        }
    }
}

/// A device's failover: when it noticed its endpoint fail, and when a batch was first
/// acknowledged by another.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRecord {
    /// The device id.
    pub device: String,
    /// The endpoint that failed (index into the configured list).
    pub from: usize,
    /// The endpoint that acknowledged next.
    pub to: usize,
    /// When the device noticed the failure.
    pub noticed_at: Instant,
    /// When the first batch was acknowledged afterwards.
    pub first_ack_at: Instant,
}

/// Where the devices are and what each endpoint acknowledged, at the end of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReport {
    /// The endpoint's label.
    pub label: String,
    /// Devices whose last connection was to this endpoint.
    pub devices: u64,
    /// Points this endpoint acknowledged.
    pub acknowledged: u64,
}

/// No endpoint yet, in [`Stats::placement`].
const NOWHERE: usize = usize::MAX;

/// Counters shared by the simulated devices.
#[derive(Default)]
pub struct Stats {
    /// Per device, the endpoint of its last connection.
    placement: Vec<AtomicUsize>,
    /// Per endpoint, points acknowledged.
    acknowledged_on: Vec<AtomicU64>,
    switches: AtomicU64,
    returns: AtomicU64,
    failovers: Mutex<Vec<FailoverRecord>>,
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
    fn new(devices: usize, endpoints: usize) -> Stats {
        Stats {
            placement: (0..devices).map(|_| AtomicUsize::new(NOWHERE)).collect(),
            acknowledged_on: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
            ..Stats::default()
        }
    }

    fn place(&self, device: usize, endpoint: usize) {
        self.placement[device].store(endpoint, Ordering::Relaxed);
    }

    fn acked_on(&self, endpoint: usize, points: u64) {
        self.acknowledged_on[endpoint].fetch_add(points, Ordering::Relaxed);
    }

    fn switched(&self, switch: &Switch) {
        self.switches.fetch_add(1, Ordering::Relaxed);
        if switch.reason == SwitchReason::Return {
            self.returns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Devices per endpoint now.
    fn devices_on(&self, endpoints: usize) -> Vec<u64> {
        let mut counts = vec![0; endpoints];
        for place in &self.placement {
            if let Some(count) = counts.get_mut(place.load(Ordering::Relaxed)) {
                *count += 1;
            }
        }
        counts
    }

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
    /// Per endpoint, in configured order: devices there at the end and points acknowledged.
    pub endpoints: Vec<EndpointReport>,
    /// Moves between endpoints (failovers and returns).
    pub switches: u64,
    /// Of those, moves back to a nearer endpoint.
    pub returns: u64,
    /// Every failover, with when it was noticed and when the next batch was acknowledged.
    pub failovers: Vec<FailoverRecord>,
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
        if self.endpoints.len() > 1 {
            let places: Vec<String> = self
                .endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{} {} devices, {} points",
                        e.label, e.devices, e.acknowledged
                    )
                })
                .collect();
            writeln!(f, "  endpoints            {}", places.join("; "))?;
            writeln!(
                f,
                "  switches             {} ({} back to a nearer endpoint)",
                self.switches, self.returns
            )?;
        }
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

    anyhow::ensure!(
        !config.endpoints.is_empty(),
        "give at least one endpoint to upload to"
    );
    let config = Arc::new(config);
    let stats = Arc::new(Stats::new(config.devices, config.endpoints.len()));
    let started = Instant::now();
    let generation_limit = config
        .duration
        .unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let deadline = started + generation_limit + config.drain_timeout;
    let progress = config
        .progress
        .then(|| tokio::spawn(show_progress(stats.clone(), config.clone(), started)));
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
    let devices_on = stats.devices_on(config.endpoints.len());
    let endpoints = config
        .endpoints
        .iter()
        .zip(devices_on)
        .zip(&stats.acknowledged_on)
        .map(|((endpoint, devices), acknowledged)| EndpointReport {
            label: endpoint.label.clone(),
            devices,
            acknowledged: load(acknowledged),
        })
        .collect();
    let failovers = std::mem::take(&mut *stats.failovers.lock().expect("failover lock"));
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
        endpoints,
        switches: load(&stats.switches),
        returns: load(&stats.returns),
        failovers,
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
async fn show_progress(stats: Arc<Stats>, config: Arc<SimulationConfig>, started: Instant) {
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
        let mut line = format!(
            "[{:>4.0} s] acknowledged {acked} points ({rate:.0}/s), waiting {queued}, batches {}, retries {}",
            started.elapsed().as_secs_f64(),
            stats.batches.load(Ordering::Relaxed),
            stats.retries.load(Ordering::Relaxed),
        );
        if config.endpoints.len() > 1 {
            let places: Vec<String> = config
                .endpoints
                .iter()
                .zip(stats.devices_on(config.endpoints.len()))
                .map(|(endpoint, devices)| format!("{endpoint} {devices}"))
                .collect();
            line.push_str(&format!(
                ", devices {}, switched {}",
                places.join(" / "),
                stats.switches.load(Ordering::Relaxed)
            ));
        }
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}
