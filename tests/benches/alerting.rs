//! The cost of alerting on ingest: end-to-end ingest throughput with 0, 100 and 1,000 active
//! rules, in the same run, each on a fresh stack (its own PostgreSQL, Redis and host).
//!
//! The rules are the worst case for the alerter: every rule watches one of the keys every
//! simulated batch carries and applies to every device, so each batch is evaluated against all
//! of them (the real alerter component, its state in Redis read and written per batch). They mix
//! the rule kinds (thresholds with hysteresis, ranges, states, durations, counts in a window,
//! no-data) with thresholds that real meters rarely reach, so the figures measure evaluation
//! rather than event writing. With 0 rules alerting is on but no batch needs a call: that run is
//! the baseline.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench alerting` after
//! `cargo xtask components`). Everything shares this machine's cores: the simulator, the host,
//! PostgreSQL and Redis.

use std::fmt::Write as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::simulate::SimulationReport;
use weir_tests::stack::Stack;

const DEVICES: usize = 16;
const POINTS_PER_DEVICE: u64 = 5_000;
const BATCH_POINTS: usize = 100;
const RULE_COUNTS: [usize; 3] = [0, 100, 1_000];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "ingest with alerting, {DEVICES} devices × {POINTS_PER_DEVICE} points, batches of {BATCH_POINTS}, every rule evaluated on every batch"
    );
    let mut baseline = None;
    for rules in RULE_COUNTS {
        let measured = measure(rules).await?;
        let rate = measured.report.points_per_second();
        let baseline_rate = *baseline.get_or_insert(rate);
        println!(
            "  {rules:>5} rules {rate:>10.0} points/s   batch p50 {:>6.1} ms, p99 {:>6.1} ms   {:>5.3} of 0 rules   alert failures {}",
            measured.report.latency_p50.as_secs_f64() * 1e3,
            measured.report.latency_p99.as_secs_f64() * 1e3,
            rate / baseline_rate,
            measured.alert_failures,
        );
    }
    Ok(())
}

/// One run's figures.
struct Measured {
    report: SimulationReport,
    /// `weir_alert_failures_total` summed over codes: an honest run has 0.
    alert_failures: u64,
}

/// Runs the simulator against a fresh stack whose organisation has `rules` rules.
async fn measure(rules: usize) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("bench.toml"), rule_file(rules))?;
    let rules_dir = dir.path().to_owned();
    let stack = Stack::start(move |config| {
        // The benchmark measures the pipeline, not the per-device rate limit.
        config.ingest.device_rate_per_second = 1e6;
        config.ingest.device_burst = 1e6;
        config.alerting.rules_dir = Some(rules_dir);
        // Generous: a slow evaluation must show in the latency, not as a failure.
        config.alerting.deadline_ms = Some(10_000);
    })
    .await?;

    let report = stack
        .simulate(DEVICES, POINTS_PER_DEVICE, BATCH_POINTS)
        .await?;
    anyhow::ensure!(report.unacknowledged == 0, "every point was acknowledged");
    let metrics = get_metrics(&stack).await?;
    let alert_failures = metrics
        .lines()
        .filter(|line| line.starts_with("weir_alert_failures_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    Ok(Measured {
        report,
        alert_failures,
    })
}

/// A rule file of `count` rules over the simulated meters' keys, cycling through the rule kinds.
fn rule_file(count: usize) -> String {
    let mut file = String::from("rules = []\n");
    if count > 0 {
        file.clear();
    }
    for i in 0..count {
        let rule = match i % 8 {
            0 => format!(
                "keys = \"meter.power\"\nclear = \"value < {low}\"\n[rules.severity]\ncritical = \"value > {high}\"\nwarning = \"value > {low}\"\n",
                low = 60_000 + i,
                high = 70_000 + i
            ),
            1 => format!(
                "keys = \"meter.voltage.l1\"\nseverity = {{ major = \"value < 100.0 || value > {}.0\" }}\n",
                400 + i % 50
            ),
            2 => "keys = \"pump.state\"\nseverity = { minor = \"value == 9\" }\n".to_owned(),
            3 => format!(
                "keys = \"cabinet.temperature\"\nfor = \"5m\"\nseverity = {{ major = \"value > {}\" }}\n",
                90 + i % 10
            ),
            4 => format!(
                "keys = \"cabinet.temperature\"\ncount = 3\nwithin = \"10m\"\nseverity = {{ warning = \"value > {}\" }}\n",
                85 + i % 10
            ),
            5 => "keys = \"meter.energy.total\"\nstale_after = \"1h\"\n".to_owned(),
            6 => format!(
                "keys = \"meter.power\"\ncontext = \"cabinet.temperature\"\nseverity = {{ minor = \"value > {} && keys['cabinet.temperature'] > 60\" }}\n",
                40_000 + i
            ),
            _ => "keys = \"meter.*\"\nseverity = { warning = \"value < -49999.0\" }\n".to_owned(),
        };
        let _ = write!(file, "[[rules]]\nid = \"bench-{i}\"\nversion = 1\n{rule}\n");
    }
    file
}

/// The host's `/metrics` text over its plain API listener.
async fn get_metrics(stack: &Stack) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(stack.host.api_addr()).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
