//! The simulator against a real host: store-and-forward turns an outage into delay, never into
//! loss or duplication.

use std::time::Duration;

use weir::endpoints::{Endpoint, SelectionPolicy};
use weir::simulate::{SimulationConfig, SimulationReport, run};
use weir_tests::stack::{SERVER_NAME, Stack};

const DEVICES: usize = 4;
const POINTS_PER_DEVICE: u64 = 1000;

async fn count_points(stack: &Stack) -> i64 {
    let (client, connection) =
        tokio_postgres::connect(&stack.postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
        .query_one("SELECT count(*) FROM points", &[])
        .await
        .unwrap()
        .get(0)
}

fn simulation(stack: &Stack) -> SimulationConfig {
    SimulationConfig {
        endpoints: vec![Endpoint::parse(&stack.host.device_addr().to_string())],
        selection: SelectionPolicy::default(),
        request_timeout: Duration::from_secs(30),
        server_name: SERVER_NAME.into(),
        pki_dir: stack.pki_dir.clone(),
        devices: DEVICES,
        org: "sim".into(),
        device_prefix: "sim".into(),
        rate: Some(500.0),
        batch_points: 50,
        duration: None,
        points_per_device: Some(POINTS_PER_DEVICE),
        drain_timeout: Duration::from_secs(60),
        progress: false,
    }
}

fn assert_everything_landed_once(report: &SimulationReport, stored: i64) {
    let generated = DEVICES as u64 * POINTS_PER_DEVICE;
    assert_eq!(report.generated, generated);
    assert_eq!(
        report.unacknowledged, 0,
        "every point was acknowledged: {report}"
    );
    assert_eq!(report.dropped, 0, "{report}");
    assert_eq!(report.accepted, generated, "{report}");
    assert_eq!(stored as u64, generated, "stored exactly once: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_devices_upload_everything_exactly_once() {
    let stack = Stack::start(|_| {}).await.unwrap();
    let report = run(simulation(&stack)).await.unwrap();
    assert_everything_landed_once(&report, count_points(&stack).await);
    assert!(report.batches >= (DEVICES as u64 * POINTS_PER_DEVICE) / 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_run_of_the_same_devices_is_stored_too() {
    let stack = Stack::start(|_| {}).await.unwrap();
    let first = run(simulation(&stack)).await.unwrap();
    assert_everything_landed_once(&first, count_points(&stack).await);
    let second = run(simulation(&stack)).await.unwrap();
    assert_eq!(
        second.duplicate_batches, 0,
        "new batches get new ids: {second}"
    );
    assert_eq!(
        count_points(&stack).await as u64,
        first.accepted + second.accepted,
        "the second run's points are stored as well: {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_mid_run_is_retried_and_resends_land_exactly_once() {
    let mut stack = Stack::start(|_| {}).await.unwrap();
    let simulation = tokio::spawn(run(simulation(&stack)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| stack.postgres.stop());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| stack.postgres.start_again()).expect("restarting PostgreSQL");
    let report = simulation.await.unwrap().unwrap();
    assert!(
        report.retries > 0,
        "the outage was seen by the devices (503, nothing acknowledged): {report}"
    );
    assert_everything_landed_once(&report, count_points(&stack).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_too_large_for_the_host_are_split_not_resent_or_dropped() {
    // 50 meter points are about 4 KiB of JSON: over a 2 KiB limit, so every batch gets 413.
    let stack = Stack::start(|config| config.ingest.max_body_bytes = 2048)
        .await
        .unwrap();
    let report = run(simulation(&stack)).await.unwrap();
    assert_everything_landed_once(&report, count_points(&stack).await);
    assert!(report.retries > 0, "the large batches were split: {report}");
}
