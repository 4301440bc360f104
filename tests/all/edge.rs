//! Weir at the edge, end to end: two regions of real hosts behind real nginx sharing one
//! PostgreSQL, and simulated devices given both regions' endpoints, the far one first.
//!
//! The devices measure both and upload to the near region; a host of that region crashing moves
//! nobody; the whole region going away moves every device to the far one, and its return brings
//! them back; through it all every generated point is stored exactly once. This is the slow
//! topology of the suite (about a minute), so it runs once, as one test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use weir::endpoints::{Endpoint, SelectionPolicy};
use weir::simulate::{SimulationConfig, run};
use weir_services::{RegionSpec, Topology, TopologyOptions, weir_binary};

use weir_tests::functions_dir;

const DEVICES: usize = 6;
const POINTS_PER_DEVICE: u64 = 2000;
/// Points per second per device: the run lasts about 40 s, long enough for every phase.
const RATE: f64 = 50.0;
/// The far region's added latency each way; the near region adds none.
const FAR_DELAY: Duration = Duration::from_millis(25);

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Which region each simulated device last wrote through, from `device_regions`.
async fn regions_of_devices(client: &Client) -> BTreeMap<String, String> {
    client
        .query(
            "SELECT device, region FROM device_regions WHERE org = 'edge'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Polls until every device last wrote through `region`, for up to `timeout`; returns how long
/// it took, or panics showing where the devices are.
async fn until_all_in(client: &Client, region: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let regions = regions_of_devices(client).await;
        if regions.len() == DEVICES && regions.values().all(|r| r == region) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "after {timeout:?} the devices are not all in {region}: {regions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stored points per device, joined through their series.
async fn stored_per_device(client: &Client) -> BTreeMap<String, i64> {
    client
        .query(
            "SELECT s.device, count(*) FROM points p JOIN series s ON s.id = p.series_id \
             WHERE s.org = 'edge' GROUP BY s.device",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_upload_near_ride_out_a_host_crash_fail_over_and_return_losing_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("weir-edge-")
        .tempdir()
        .unwrap();
    let mut topology = tokio::task::block_in_place(|| {
        Topology::start(TopologyOptions {
            binary: weir_binary()?,
            functions_dir: functions_dir(),
            dir: dir.path().to_owned(),
            regions: vec![
                RegionSpec::new("near", 2, Duration::ZERO),
                RegionSpec::new("far", 2, FAR_DELAY),
            ],
            extra_env: Vec::new(),
        })
    })
    .unwrap_or_else(|err| panic!("{err:#}"));
    let db = connect(&topology.postgres.url()).await;

    // The far region first: the devices must find the near one by measuring.
    let endpoints = ["far", "near"]
        .iter()
        .map(|name| {
            let addr = topology.region(name).device_endpoint();
            Endpoint::parse(&format!("{name}={addr}"))
        })
        .collect();
    let mut config = SimulationConfig::new(endpoints, "localhost", topology.pki_dir.clone());
    config.selection = SelectionPolicy {
        remeasure_every: Duration::from_secs(2),
        max_cooldown: Duration::from_secs(2),
        ..SelectionPolicy::default()
    };
    config.request_timeout = Duration::from_secs(3);
    config.devices = DEVICES;
    config.org = "edge".into();
    config.device_prefix = "edge".into();
    config.rate = Some(RATE);
    config.batch_points = 25;
    config.duration = None;
    config.points_per_device = Some(POINTS_PER_DEVICE);
    let simulation = tokio::spawn(run(config));

    until_all_in(&db, "near", Duration::from_secs(15)).await;

    // One host of the near region crashes: its devices reconnect, nginx sends them to the other.
    tokio::task::block_in_place(|| topology.region_mut("near").hosts[0].kill());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        regions_of_devices(&db).await.values().all(|r| r == "near"),
        "a host crash moved devices to the far region: {:?}",
        regions_of_devices(&db).await
    );

    // The whole near region goes away: every device moves to the far one.
    let outage = Instant::now();
    tokio::task::block_in_place(|| topology.region_mut("near").outage());
    let failed_over = until_all_in(&db, "far", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // It comes back (both hosts, nginx): the devices return once they measured it healthy.
    let restored = Instant::now();
    tokio::task::block_in_place(|| topology.region_mut("near").restore())
        .unwrap_or_else(|err| panic!("{err:#}"));
    let returned = until_all_in(&db, "near", Duration::from_secs(30)).await;
    eprintln!(
        "all devices in far {failed_over:?} after the outage, back in near {returned:?} after \
         the restore ({:?} restoring)",
        restored.elapsed() - returned
    );

    let report = simulation.await.unwrap().unwrap();
    eprintln!("{report}");
    let generated = DEVICES as u64 * POINTS_PER_DEVICE;
    assert_eq!(report.generated, generated);
    assert_eq!(report.unacknowledged, 0, "{report}");
    assert_eq!(report.dropped, 0, "{report}");
    assert_eq!(report.accepted, generated, "{report}");
    let stored = stored_per_device(&db).await;
    assert_eq!(stored.len(), DEVICES, "{stored:?}");
    for (device, points) in &stored {
        assert_eq!(
            *points as u64, POINTS_PER_DEVICE,
            "{device}: every point stored exactly once"
        );
    }

    // Failovers went from near (endpoint 1) to far (endpoint 0), none before the outage, and
    // every device was counted; they all returned.
    assert!(
        report.failovers.len() >= DEVICES,
        "every device failed over: {:?}",
        report.failovers
    );
    for failover in &report.failovers {
        assert_eq!((failover.from, failover.to), (1, 0), "{failover:?}");
        assert!(
            failover.noticed_at >= outage,
            "a device failed over before the region went away: {failover:?}"
        );
    }
    assert!(report.returns >= DEVICES as u64, "{report}");
    let near = &report.endpoints[1];
    let far = &report.endpoints[0];
    assert_eq!(near.devices, DEVICES as u64, "{report}");
    assert!(
        far.acknowledged > 0 && near.acknowledged > far.acknowledged,
        "{report}"
    );
    drop(topology);
}
