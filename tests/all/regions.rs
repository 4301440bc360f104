//! Two regions over one PostgreSQL, each with its own Redis: a device that moves between them
//! keeps the right latest values in both regions' query APIs (newest timestamp wins), through
//! `device_regions` and the `weir_device_moved` notifications.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};
use weir::host::Host;
use weir_services::RedisServer;
use weir_storage::DeviceRef;
use weir_tests::poll::eventually;

use crate::ingest::harness::{TestHost, api_exchange_at, batch, now_ms, ok, point};

/// Region `b`: a host on the shared PostgreSQL and PKI with a Redis of its own.
pub(crate) async fn start_region_b(region_a: &TestHost) -> (Host, RedisServer) {
    let redis = tokio::task::spawn_blocking(RedisServer::start_temporary)
        .await
        .unwrap()
        .unwrap();
    let mut config = region_a.stack().config.clone();
    config.region = "b".into();
    config.redis_url = redis.url();
    config.state_dir = region_a.stack().dir.path().join("state-b");
    (Host::start(config).await.unwrap(), redis)
}

async fn latest_via_api(host: &Host, device: &str, token: &str) -> Json {
    let authorization = format!("Bearer {token}");
    let (status, _, body) = api_exchange_at(
        host,
        Method::GET,
        &format!("/v1/devices/{device}/latest"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_that_moves_between_regions_reads_its_newest_values_in_both() {
    let region_a = TestHost::start_with(|config| config.region = "a".into()).await;
    let (host_b, _redis_b) = start_region_b(&region_a).await;
    let token = region_a.api_token("acme").await;
    let id = DeviceRef::new("acme", "roamer-1");
    let tls = region_a
        .enrol("roamer-1", "acme", weir_pki::ClientAlpn::H2)
        .await;
    let t0 = now_ms() - 60_000;

    // Region a first: two keys.
    let mut in_a = region_a
        .device_at(region_a.host(), tls.clone(), id.clone())
        .await;
    let first = batch(
        "roam-1",
        vec![point("power", 10, t0), point("door", true, t0)],
    );
    assert_eq!(ok(&in_a.submit(&first).await)["accepted"], json!(2));

    // Then region b: a newer power reading only.
    let mut in_b = region_a.device_at(&host_b, tls.clone(), id.clone()).await;
    let second = batch("roam-2", vec![point("power", 20, t0 + 1000)]);
    assert_eq!(ok(&in_b.submit(&second).await)["accepted"], json!(1));
    let expected = json!({
        "device": "roamer-1",
        "keys": {
            "power": {"value": 20, "ts": t0 + 1000},
            "door": {"value": true, "ts": t0},
        }
    });
    // Region b rebuilt the device's values on arrival, before acknowledging: its Redis has
    // every key, including the one only region a saw.
    let in_redis_b = host_b.latest().get(&id).await.unwrap();
    assert_eq!(in_redis_b.len(), 2, "{in_redis_b:?}");
    assert_eq!(latest_via_api(&host_b, "roamer-1", &token).await, expected);
    // Region a is told of the move and drops its stale values: its API answers from
    // PostgreSQL, with region b's newer reading.
    eventually(
        "region a drops the moved device's cached values",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { region_a.latest_in_redis(&id).await.is_empty() },
    )
    .await;
    assert_eq!(
        latest_via_api(region_a.host(), "roamer-1", &token).await,
        expected
    );

    // Back to region a with a newer door reading: a rebuilds everything, b drops its copy.
    let third = batch("roam-3", vec![point("door", false, t0 + 2000)]);
    assert_eq!(ok(&in_a.submit(&third).await)["accepted"], json!(1));
    let expected = json!({
        "device": "roamer-1",
        "keys": {
            "power": {"value": 20, "ts": t0 + 1000},
            "door": {"value": false, "ts": t0 + 2000},
        }
    });
    assert_eq!(region_a.latest_in_redis(&id).await.len(), 2);
    eventually(
        "region b drops the moved device's cached values",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { host_b.latest().get(&id).await.unwrap().is_empty() },
    )
    .await;
    for host in [region_a.host(), &host_b] {
        assert_eq!(latest_via_api(host, "roamer-1", &token).await, expected);
    }
    host_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_that_missed_moves_drops_the_values_of_devices_now_elsewhere() {
    let region_a = TestHost::start_with(|config| config.region = "a".into()).await;
    let id = DeviceRef::new("acme", "roamer-2");
    let tls = region_a
        .enrol("roamer-2", "acme", weir_pki::ClientAlpn::H2)
        .await;
    let mut in_a = region_a
        .device_at(region_a.host(), tls.clone(), id.clone())
        .await;
    let t0 = now_ms() - 60_000;
    let first = batch("roam-1", vec![point("power", 10, t0)]);
    assert_eq!(ok(&in_a.submit(&first).await)["accepted"], json!(1));
    assert_eq!(region_a.latest_in_redis(&id).await.len(), 1);

    // The device moves to region b while region a's hosts are not listening: a fresh host
    // of region a (its listener starts with "some moves may have been missed") cleans up.
    let (host_b, _redis_b) = start_region_b(&region_a).await;
    let mut in_b = region_a.device_at(&host_b, tls, id.clone()).await;
    let second = batch("roam-2", vec![point("power", 20, t0 + 1000)]);
    assert_eq!(ok(&in_b.submit(&second).await)["accepted"], json!(1));
    // Region a's running host follows the move; only then simulate a missed notification by
    // putting region a's stale value back (before, the move could still remove it).
    eventually(
        "region a's running host follows the move",
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || region_a.latest_in_redis(&id).await.is_empty(),
    )
    .await;
    let stale = vec![("power".to_owned(), t0, weir_storage::StoredValue::Int(10))];
    region_a.host().latest().update(&id, &stale).await.unwrap();
    assert_eq!(region_a.latest_in_redis(&id).await.len(), 1);

    let another_a = region_a.stack().another_host().await.unwrap();
    eventually(
        "a starting host of region a drops values of devices now in region b",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { another_a.latest().get(&id).await.unwrap().is_empty() },
    )
    .await;
    another_a.shutdown().await;
    host_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_follow_a_device_between_regions_raised_once_and_cleared() {
    let (region_a, _rules) = crate::alerting::host_with_rules_in_region("a").await;
    let (host_b, _redis_b) = start_region_b(&region_a).await;
    let token = region_a.api_token("acme").await;
    let id = DeviceRef::new("acme", "roamer-3");
    let tls = region_a
        .enrol("roamer-3", "acme", weir_pki::ClientAlpn::H2)
        .await;
    let t = now_ms() - 3_600_000;
    let hot = |ts| vec![("meter.1.temperature", json!(85.0), ts)];

    // Hot in region a: raised there.
    let mut in_a = region_a
        .device_at(region_a.host(), tls.clone(), id.clone())
        .await;
    crate::alerting::send(&mut in_a, "a-1", &hot(t)).await;
    let raised = crate::alerting::events(&region_a, &token, "").await;
    assert_eq!(raised.len(), 1, "{raised:?}");

    // Still hot in region b: the state followed the device, nothing is raised again.
    let mut in_b = region_a.device_at(&host_b, tls.clone(), id.clone()).await;
    crate::alerting::send(&mut in_b, "b-1", &hot(t + 60_000)).await;
    assert_eq!(
        crate::alerting::events(&region_a, &token, "").await.len(),
        1,
        "no second raise after the move"
    );
    // Cool in region b: region b clears the alert region a raised.
    crate::alerting::send(
        &mut in_b,
        "b-2",
        &[("meter.1.temperature", json!(70.0), t + 120_000)],
    )
    .await;
    let events = crate::alerting::events(&region_a, &token, "").await;
    assert_eq!(events.len(), 1, "one alert, now cleared: {events:?}");
    assert_eq!(events[0]["state"], "cleared", "{}", events[0]);
    host_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moving_device_is_validated_by_the_region_it_writes_through() {
    let region_a = TestHost::start_with(|config| config.region = "a".into()).await;
    let (host_b, _redis_b) = start_region_b(&region_a).await;
    let state = tempfile::tempdir().unwrap();
    let registry = crate::registry::registry(&region_a, &state).await;
    // Region b runs the marking validator (it rejects `marked.*` keys); region a the default.
    let marking = weir_tests::component_bytes("test/marking-validator.wasm");
    let deployed = registry
        .deploy(
            weir_pipeline::registry::FunctionName::Validator,
            &marking,
            "b",
        )
        .await
        .unwrap();
    eventually(
        "region b runs the version deployed to it",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { crate::registry::validator_of(&host_b) == deployed.sha256 },
    )
    .await;
    assert_ne!(
        crate::registry::validator_of(region_a.host()),
        deployed.sha256,
        "region a is untouched"
    );

    let id = DeviceRef::new("acme", "roamer-4");
    let tls = region_a
        .enrol("roamer-4", "acme", weir_pki::ClientAlpn::H2)
        .await;
    let mut in_a = region_a
        .device_at(region_a.host(), tls.clone(), id.clone())
        .await;
    let mut in_b = region_a.device_at(&host_b, tls.clone(), id.clone()).await;
    let t0 = now_ms() - 60_000;
    for round in 0..2 {
        // The same device, moving back and forth: each region judges with its own validator.
        let ts = t0 + i64::from(round) * 1000;
        let probe = |id: String| batch(&id, vec![point("marked.power", 1, ts)]);
        let in_region_a = ok(&in_a.submit(&probe(format!("a-{round}"))).await);
        assert_eq!(in_region_a["accepted"], json!(1), "{in_region_a}");
        let in_region_b = ok(&in_b.submit(&probe(format!("b-{round}"))).await);
        assert_eq!(in_region_b["accepted"], json!(0), "{in_region_b}");
        assert_eq!(
            in_region_b["rejected"][0]["message"],
            json!("judged by marking-validator"),
            "{in_region_b}"
        );
    }
    host_b.shutdown().await;
}
