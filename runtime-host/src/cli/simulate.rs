//! `weir simulate`: the command line of the device simulator. It turns the arguments into a
//! [`SimulationConfig`] for [`crate::simulate`], which does the work, and prints its report.

use std::path::PathBuf;
use std::time::Duration;

use crate::simulate::SimulationConfig;

#[derive(Debug, clap::Args)]
pub(super) struct SimulateArgs {
    /// PKI directory whose CA issues the simulated devices' certificates.
    #[arg(long, env = "WEIR_PKI_DIR")]
    pki: PathBuf,
    /// The device listener to upload to.
    #[arg(long, default_value = "127.0.0.1:7443")]
    target: String,
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
        target: args.target,
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
    eprintln!(
        "simulating {} devices against {} (Ctrl-C stops)",
        config.devices, config.target
    );
    let report = crate::simulate::run(config).await?;
    println!("{report}");
    if report.acknowledged == 0 {
        anyhow::bail!("no batch was acknowledged: is `weir serve` running at that address?");
    }
    Ok(())
}
