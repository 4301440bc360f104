//! Weir at the edge: how long devices take to fail over when their region goes away and to come
//! back when it returns, what that costs in lost or doubled points, and the throughput of two
//! regions against one, measured in the same run on the same topology.
//!
//! Two regions of two `weir` hosts behind their own nginx share one PostgreSQL on this machine
//! ([`Topology`]); the far region is 20 ms away each way (a userspace delay proxy). The devices
//! run with the simulator's default selection settings (re-measure every 15 s, return after two
//! good measurements, 5 s timeouts), as `weir simulate` would.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench regions` after `cargo
//! xtask components` and `cargo build --release -p weir`).

use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::{Client, NoTls};
use weir::endpoints::Endpoint;
use weir::simulate::{SimulationConfig, SimulationReport, run};
use weir_services::{RegionSpec, Topology, TopologyOptions, weir_binary};
use weir_tests::functions_dir;

/// Devices in the failover run.
const FAILOVER_DEVICES: usize = 32;
/// Their rate: 10 points/s each, 70 s of readings (outage at 10 s, return at 25 s).
const FAILOVER_RATE: f64 = 10.0;
const FAILOVER_POINTS: u64 = 700;
const OUTAGE_AT: Duration = Duration::from_secs(10);
const OUTAGE_LENGTH: Duration = Duration::from_secs(15);
/// Devices and back-filled points in each throughput run.
const THROUGHPUT_DEVICES: usize = 16;
const THROUGHPUT_POINTS: u64 = 10_000;
const BATCH_POINTS: usize = 100;
const FAR_DELAY: Duration = Duration::from_millis(20);

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("weir-bench-regions-")
        .tempdir()?;
    eprintln!("starting 2 regions × 2 hosts behind nginx...");
    let mut topology = tokio::task::block_in_place(|| {
        Topology::start(TopologyOptions {
            binary: weir_binary()?,
            functions_dir: functions_dir(),
            dir: dir.path().to_owned(),
            regions: vec![
                RegionSpec::new("near", 2, Duration::ZERO),
                RegionSpec::new("far", 2, FAR_DELAY),
            ],
            // The figures are about regions, not the per-device rate limit.
            extra_env: vec![
                ("WEIR_DEVICE_RATE".into(), "1000000".into()),
                ("WEIR_DEVICE_BURST".into(), "1000000".into()),
            ],
        })
    })?;
    let db = connect(&topology.postgres.url()).await?;

    failover(&mut topology, &db).await?;
    throughput(&topology, &db).await?;
    Ok(())
}

/// The near region goes away mid-run and comes back: failover and return times, lost and
/// doubled points.
async fn failover(topology: &mut Topology, db: &Client) -> anyhow::Result<()> {
    let endpoints = ["near", "far"]
        .iter()
        .map(|name| endpoint(topology, name))
        .collect();
    let mut config = SimulationConfig::new(endpoints, "localhost", topology.pki_dir.clone());
    config.devices = FAILOVER_DEVICES;
    config.org = "failover".into();
    config.device_prefix = "failover".into();
    config.rate = Some(FAILOVER_RATE);
    config.batch_points = BATCH_POINTS;
    config.duration = None;
    config.points_per_device = Some(FAILOVER_POINTS);
    eprintln!(
        "failover: {FAILOVER_DEVICES} devices at {FAILOVER_RATE} points/s; near goes away at \
         {OUTAGE_AT:?} for {OUTAGE_LENGTH:?}"
    );
    let simulation = tokio::spawn(run(config));

    tokio::time::sleep(OUTAGE_AT).await;
    let lost_at = Instant::now();
    tokio::task::block_in_place(|| topology.region_mut("near").outage());
    tokio::time::sleep(OUTAGE_LENGTH).await;
    let restored_wall = SystemTime::now();
    tokio::task::block_in_place(|| topology.region_mut("near").restore())?;
    let restore_took = restored_wall.elapsed()?;

    let report = simulation.await??;
    let failovers: Vec<Duration> = report
        .failovers
        .iter()
        .filter(|f| f.noticed_at >= lost_at)
        .map(|f| f.first_ack_at - lost_at)
        .collect();
    let noticed: Vec<Duration> = report
        .failovers
        .iter()
        .filter(|f| f.noticed_at >= lost_at)
        .map(|f| f.first_ack_at - f.noticed_at)
        .collect();
    let returns = return_times(db, restored_wall).await?;
    let stored = stored_points(db, "failover").await?;
    let generated = report.generated as i64;

    println!("regions: failover and return (default selection settings)");
    println!(
        "  region loss → first ack in the other region   p50 {}  p99 {}  max {}  ({} devices)",
        ms(percentile(&failovers, 0.50)),
        ms(percentile(&failovers, 0.99)),
        ms(percentile(&failovers, 1.0)),
        failovers.len()
    );
    println!(
        "  device noticed → first ack elsewhere          p50 {}  p99 {}",
        ms(percentile(&noticed, 0.50)),
        ms(percentile(&noticed, 0.99)),
    );
    println!(
        "  region back → device writes through it again  p50 {}  p99 {}  ({} of {FAILOVER_DEVICES} devices back; restore itself took {})",
        ms(percentile(&returns, 0.50)),
        ms(percentile(&returns, 0.99)),
        returns.len(),
        ms(restore_took),
    );
    println!(
        "  points generated {generated}, stored {stored}, lost {}, stored twice {}, unacknowledged {}, batches answered as duplicates {}",
        (generated - stored).max(0),
        (stored - generated).max(0),
        report.unacknowledged,
        report.duplicate_batches,
    );
    Ok(())
}

/// Back-filling devices against one region, then the same number split over two regions.
async fn throughput(topology: &Topology, db: &Client) -> anyhow::Result<()> {
    // Both regions equally near: this compares capacity, not distance.
    topology.region("far").proxy.set_delay(Duration::ZERO);
    let one = backfill(topology, &["near"], "one").await?;
    let two = backfill(topology, &["near", "far"], "two").await?;
    for (org, report) in [("one", &one), ("two", &two)] {
        let stored = stored_points(db, org).await?;
        assert_eq!(
            stored as u64, report.accepted,
            "{org}: stored = acknowledged"
        );
    }
    println!(
        "regions: throughput, {THROUGHPUT_DEVICES} devices × {THROUGHPUT_POINTS} back-filled points, batches of {BATCH_POINTS}, one PostgreSQL"
    );
    println!(
        "  one region (2 hosts):        {:>8.0} points/s   batch p50 {}  p99 {}",
        one.points_per_second(),
        ms(one.latency_p50),
        ms(one.latency_p99)
    );
    println!(
        "  two regions (2 hosts each):  {:>8.0} points/s   batch p50 {}  p99 {}   two / one {:.2}",
        two.points_per_second(),
        ms(two.latency_p50),
        ms(two.latency_p99),
        two.points_per_second() / one.points_per_second()
    );
    Ok(())
}

/// Runs `THROUGHPUT_DEVICES` back-filling devices split evenly over `regions` (each group is
/// given only its region), and merges their reports.
async fn backfill(
    topology: &Topology,
    regions: &[&str],
    org: &str,
) -> anyhow::Result<SimulationReport> {
    eprintln!("throughput: back-fill through {regions:?}...");
    let mut runs = Vec::new();
    for name in regions {
        let mut config = SimulationConfig::new(
            vec![endpoint(topology, name)],
            "localhost",
            topology.pki_dir.clone(),
        );
        config.devices = THROUGHPUT_DEVICES / regions.len();
        config.org = org.into();
        config.device_prefix = format!("{org}-{name}");
        config.rate = None;
        config.batch_points = BATCH_POINTS;
        config.duration = None;
        config.points_per_device = Some(THROUGHPUT_POINTS);
        runs.push(tokio::spawn(run(config)));
    }
    let mut reports = Vec::new();
    for handle in runs {
        let report = handle.await??;
        assert_eq!(report.unacknowledged, 0, "{report}");
        reports.push(report);
    }
    Ok(merge(reports))
}

/// One report for simulations that ran side by side: sums, the longest elapsed time, and the
/// worst of their latency percentiles.
fn merge(reports: Vec<SimulationReport>) -> SimulationReport {
    let mut reports = reports.into_iter();
    let mut merged = reports.next().expect("at least one run");
    for report in reports {
        merged.devices += report.devices;
        merged.elapsed = merged.elapsed.max(report.elapsed);
        merged.generated += report.generated;
        merged.acknowledged += report.acknowledged;
        merged.accepted += report.accepted;
        merged.batches += report.batches;
        merged.latency_p50 = merged.latency_p50.max(report.latency_p50);
        merged.latency_p99 = merged.latency_p99.max(report.latency_p99);
    }
    merged
}

/// For each device of the failover run that wrote through the near region again after
/// `restored`, how long after the restore that was (`device_regions.since` is the move).
async fn return_times(db: &Client, restored: SystemTime) -> anyhow::Result<Vec<Duration>> {
    let rows = db
        .query(
            "SELECT since FROM device_regions WHERE org = 'failover' AND region = 'near'",
            &[],
        )
        .await?;
    let mut times: Vec<Duration> = rows
        .iter()
        .filter_map(|row| row.get::<_, SystemTime>(0).duration_since(restored).ok())
        .collect();
    times.sort();
    Ok(times)
}

async fn stored_points(db: &Client, org: &str) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM points p JOIN series s ON s.id = p.series_id WHERE s.org = $1",
            &[&org],
        )
        .await?
        .get(0))
}

fn endpoint(topology: &Topology, region: &str) -> Endpoint {
    let addr = topology.region(region).device_endpoint();
    Endpoint::parse(&format!("{region}={addr}"))
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The `q` quantile of `values` (nearest rank), or zero when there are none.
fn percentile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1e3)
}
