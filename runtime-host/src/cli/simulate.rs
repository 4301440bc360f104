//! `weir simulate`: the command line of the device simulator. It turns the arguments into a
//! [`SimulationConfig`] for [`crate::simulate`], which does the work, and prints its report.

use std::path::PathBuf;
use std::time::Duration;

use crate::endpoints::{Endpoint, SelectionPolicy};
use crate::simulate::SimulationConfig;

#[derive(Debug, clap::Args)]
pub(super) struct SimulateArgs {
    /// PKI directory whose CA issues the simulated devices' certificates.
    #[arg(long, env = "WEIR_PKI_DIR")]
    pki: PathBuf,
    /// A region endpoint to upload to, `host:port` or `label=host:port` (a device listener or
    /// the region's load balancer). Repeat for several regions: each device measures them,
    /// uploads to the nearest (ties go to the order given), fails over to the next, and comes
    /// back once the nearer one is healthy again.
    #[arg(
        long = "endpoint",
        visible_alias = "target",
        value_name = "[LABEL=]HOST:PORT",
        default_value = "127.0.0.1:7443"
    )]
    endpoints: Vec<String>,
    /// Seconds a connect or an upload may take before its endpoint counts as failed.
    #[arg(long, default_value_t = 5)]
    request_timeout: u64,
    /// Seconds between re-measurements of the endpoints' handshake round trips.
    #[arg(long, default_value_t = 15)]
    remeasure: u64,
    /// The name the server certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Number of devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Organisation of the devices.
    #[arg(long, default_value = "demo")]
    org: String,
    /// Device id prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Points per second per device (5 meters read together); 0 back-fills a day of history
    /// as fast as the server takes it.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Most points per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds to generate readings for.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Stop after this many points per device instead of after --duration.
    #[arg(long)]
    points: Option<u64>,
    /// Seconds to keep retrying unacknowledged points after generation stops.
    #[arg(long, default_value_t = 60)]
    drain: u64,
}

pub(super) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let config = SimulationConfig {
        endpoints: args.endpoints.iter().map(|e| Endpoint::parse(e)).collect(),
        selection: SelectionPolicy {
            remeasure_every: Duration::from_secs(args.remeasure.max(1)),
            ..SelectionPolicy::default()
        },
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        server_name: args.server_name,
        pki_dir: args.pki,
        devices: args.devices,
        org: args.org,
        device_prefix: args.prefix,
        rate: (args.rate > 0.0).then_some(args.rate),
        batch_points: args.batch.max(1),
        duration: args
            .points
            .is_none()
            .then(|| Duration::from_secs(args.duration)),
        points_per_device: args.points,
        drain_timeout: Duration::from_secs(args.drain),
        progress: true,
    };
    let endpoints: Vec<String> = config.endpoints.iter().map(|e| e.addr.clone()).collect();
    eprintln!(
        "simulating {} devices against {} (Ctrl-C stops)",
        config.devices,
        endpoints.join(", ")
    );
    let report = crate::simulate::run(config).await?;
    println!("{report}");
    if report.acknowledged == 0 {
        anyhow::bail!("no batch was acknowledged: is `weir serve` running at that address?");
    }
    Ok(())
}
