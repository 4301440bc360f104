//! After the commit, nothing is lost: a stored batch's follow-up (its Redis latest values and
//! its alert evaluation) survives a device that gives up on the request, a held alert lock, a
//! Redis outage, an alerter that traps, and a host that dies. Real PostgreSQL, Redis, alerter
//! component and, for the crash, a real `weir serve` process killed with SIGKILL.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value as Json, json};
use weir::device_client::DeviceClient;
use weir_pipeline::alerting::Alerting;
use weir_runtime::AlerterFunction;
use weir_services::{WeirHost, WeirHostOptions, weir_binary};
use weir_storage::DeviceRef;
use weir_tests::poll::eventually;
use weir_tests::stack::SERVER_NAME;

use crate::alerting::{ACME_RULES, events, host_with_rule_files, send};
use crate::ingest::harness::{TestHost, batch, metric_value, now_ms, ok, point};
use crate::support::{component_path, engine};

const MINUTE: i64 = 60_000;
/// How long the tests wait for a follow-up retried or taken over.
const SETTLES_WITHIN: Duration = Duration::from_secs(30);

/// A host with acme's rules, more configuration from `tweak`, and its rules directory.
async fn host_with_acme_rules(
    tweak: impl FnOnce(&mut weir::Config),
) -> (TestHost, tempfile::TempDir) {
    host_with_rule_files(&[("acme.toml", ACME_RULES)], tweak).await
}

/// Makes the hostile alerter (which traps on a batch whose first key is `hostile.trap`) the
/// host's; returns the host's alerting and the real alerter, to swap back.
fn swap_in_the_hostile_alerter(host: &TestHost) -> (Arc<Alerting>, AlerterFunction) {
    let alerting = host.host().alerting().unwrap().clone();
    let engine = engine(Duration::from_secs(1), 64);
    let load = |file| AlerterFunction::load_file(&engine, &component_path(file)).unwrap();
    let real = load("alert.wasm");
    alerting.function.replace(load("test/hostile-alerter.wasm"));
    (alerting, real)
}

/// Waits until the region `test` has no follow-up left to do.
pub(crate) async fn all_followups_done(host: &TestHost) {
    eventually(
        "every batch follow-up done",
        SETTLES_WITHIN,
        Duration::from_millis(200),
        async || {
            host.storage()
                .followup_counts("test")
                .await
                .unwrap()
                .pending
                == 0
        },
    )
    .await;
}

/// Waits until `count` events are listed for the token, and returns them.
async fn events_once_there(host: &TestHost, token: &str, count: usize) -> Vec<Json> {
    eventually(
        &format!("{count} alert events"),
        SETTLES_WITHIN,
        Duration::from_millis(200),
        async || events(host, token, "").await.len() >= count,
    )
    .await;
    events(host, token, "").await
}

/// The keys of `events`, sorted.
fn event_keys(events: &[Json]) -> Vec<String> {
    let mut keys: Vec<String> = events
        .iter()
        .map(|event| event["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// Pauses every client of the stack's Redis for `pause` (`CLIENT PAUSE ... ALL`).
async fn pause_redis(host: &TestHost, pause: Duration) {
    let client = redis::Client::open(host.stack().redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_reset_after_the_commit_still_updates_latest_and_raises_the_alert() {
    let (host, _rules) = host_with_acme_rules(|_| {}).await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    let hot = batch(
        "hot-1",
        vec![point("meter.1.temperature", json!(99), now_ms() - MINUTE)],
    );

    // Redis stops answering: the batch commits, then its follow-up waits for Redis, and the
    // device gives up on the request (the stream is reset when its future drops).
    pause_redis(&host, Duration::from_secs(3)).await;
    let given_up = tokio::time::timeout(Duration::from_millis(1000), meter.submit(&hot)).await;
    assert!(given_up.is_err(), "the answer waits for the follow-up");
    assert_eq!(
        host.count(meter.id()).await,
        1,
        "committed before the reset"
    );

    // The resend is a duplicate; what the first request owed was done all the same.
    let resent = ok(&meter.submit(&hot).await);
    assert_eq!(resent["duplicate"], json!(true), "{resent}");
    eventually(
        "the latest value in Redis",
        SETTLES_WITHIN,
        Duration::from_millis(100),
        // Redis answers errors while it is paused.
        async || {
            host.host()
                .latest()
                .get(meter.id())
                .await
                .is_ok_and(|latest| latest.contains_key("meter.1.temperature"))
        },
    )
    .await;
    let listed = events_once_there(&host, &token, 1).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["rule_id"], "meter-hot");
    assert_eq!(listed[0]["severity"], "critical");
    all_followups_done(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_outlast_a_held_lock_a_redis_outage_and_a_trapping_alerter_each_raised_once() {
    let (mut host, _rules) =
        host_with_acme_rules(|config| config.ingest.followup_evaluation_attempts = 1000).await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    let device = meter.id().clone();
    let t = now_ms() - MINUTE;

    // Another evaluation holds the device's lock for 10 s: the batch is stored and answered,
    // its evaluation waits.
    let lock = host
        .storage()
        .lock_alert_device(&device, Duration::from_secs(1))
        .await
        .unwrap();
    let held = std::time::Instant::now();
    send(&mut meter, "b1", &[("meter.1.temperature", json!(99), t)]).await;
    assert!(events(&host, &token, "").await.is_empty());
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(held.elapsed())).await;
    assert!(events(&host, &token, "").await.is_empty(), "the lock held");
    lock.release().await.unwrap();
    let listed = events_once_there(&host, &token, 1).await;
    assert_eq!(event_keys(&listed), ["meter.1.temperature"]);

    // Redis down: the batch is evaluated (states are in PostgreSQL) and its latest values
    // are repaired once Redis is back.
    host.stop_redis();
    send(&mut meter, "b2", &[("meter.2.temperature", json!(99), t)]).await;
    host.start_redis_again();
    eventually(
        "the latest values repaired in Redis",
        SETTLES_WITHIN,
        Duration::from_millis(200),
        async || {
            host.host()
                .latest()
                .get(&device)
                .await
                .is_ok_and(|latest| latest.contains_key("meter.2.temperature"))
        },
    )
    .await;

    // The alerter traps on the next batch until it is swapped back.
    let (alerting, real) = swap_in_the_hostile_alerter(&host);
    send(
        &mut meter,
        "b3",
        &[
            ("hostile.trap", json!(true), t),
            ("meter.3.temperature", json!(99), t),
        ],
    )
    .await;
    let (_, metrics) = host.api_get("/metrics").await;
    assert!(
        metric_value(
            &metrics,
            "weir_alert_failures_total{code=\"function_trapped\"}"
        ) >= 1.0,
        "{metrics}"
    );
    alerting.function.replace(real);

    let listed = events_once_there(&host, &token, 3).await;
    assert_eq!(
        event_keys(&listed),
        [
            "meter.1.temperature",
            "meter.2.temperature",
            "meter.3.temperature"
        ],
        "{listed:?}"
    );
    all_followups_done(&host).await;
    assert_eq!(events(&host, &token, "").await.len(), 3, "each raised once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_batch_is_given_up_after_its_attempts_and_the_next_ones_are_evaluated() {
    let (host, _rules) =
        host_with_acme_rules(|config| config.ingest.followup_evaluation_attempts = 2).await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    let (alerting, real) = swap_in_the_hostile_alerter(&host);
    let t = now_ms() - MINUTE;
    // The first key makes the hostile alerter trap; the second is one acme's rules watch.
    send(
        &mut meter,
        "poison",
        &[
            ("hostile.trap", json!(true), t),
            ("meter.1.temperature", json!(99), t),
        ],
    )
    .await;
    eventually(
        "the poison batch given up",
        SETTLES_WITHIN,
        Duration::from_millis(200),
        async || {
            let (_, metrics) = host.api_get("/metrics").await;
            metrics.contains("weir_followups_failed_total{code=\"function_trapped\"} 1")
        },
    )
    .await;
    alerting.function.replace(real);

    send(&mut meter, "next", &[("meter.2.temperature", json!(99), t)]).await;
    let listed = events(&host, &token, "").await;
    assert_eq!(event_keys(&listed), ["meter.2.temperature"], "{listed:?}");
    all_followups_done(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_between_commit_and_evaluation_has_its_batch_evaluated_by_another() {
    let (host, rules) = host_with_acme_rules(|config| config.ingest.followup_takeover_s = 2).await;
    let token = host.api_token("acme").await;
    let device = DeviceRef::new("acme", "m1");
    let tls = host.enrol("m1", "acme", weir_pki::ClientAlpn::H2).await;

    let config = &host.stack().config;
    let text = |path: &std::path::Path| path.to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let options = WeirHostOptions::new(weir_binary().unwrap(), "doomed", dir.path())
        .env("WEIR_REGION", &config.region)
        .env("WEIR_DATABASE_URL", &config.database_url)
        .env("WEIR_REDIS_URL", &config.redis_url)
        .env("WEIR_PKI_DIR", text(&host.stack().edge_tls_dir))
        .env("WEIR_FUNCTIONS_DIR", text(&config.functions_dir))
        .env("WEIR_STATE_DIR", text(&config.state_dir))
        .env("WEIR_ALERT_RULES_DIR", text(rules.path()))
        .env("WEIR_FOLLOWUP_TAKEOVER_S", "2");
    let mut doomed = tokio::task::block_in_place(|| WeirHost::start(options)).unwrap();

    // The doomed host's evaluation waits for the lock the test holds; the host dies.
    let lock = host
        .storage()
        .lock_alert_device(&device, Duration::from_secs(1))
        .await
        .unwrap();
    let mut client = DeviceClient::connect(&doomed.device_addr().to_string(), SERVER_NAME, tls)
        .await
        .unwrap();
    let hot = batch(
        "hot-1",
        vec![point("meter.1.temperature", json!(99), now_ms() - MINUTE)],
    );
    let in_flight =
        tokio::spawn(async move { client.send_json(Method::POST, "/v1/submit", &hot).await });
    eventually(
        "the batch committed by the doomed host",
        SETTLES_WITHIN,
        Duration::from_millis(50),
        async || host.count(&device).await == 1,
    )
    .await;
    tokio::task::block_in_place(|| doomed.kill());
    assert!(
        in_flight.await.unwrap().is_err(),
        "the doomed host never answered"
    );
    lock.release().await.unwrap();

    // The surviving host of the region takes the follow-up over.
    let listed = events_once_there(&host, &token, 1).await;
    assert_eq!(event_keys(&listed), ["meter.1.temperature"], "{listed:?}");
    all_followups_done(&host).await;
    assert!(
        host.latest_in_redis(&device)
            .await
            .contains_key("meter.1.temperature")
    );
    assert_eq!(events(&host, &token, "").await.len(), 1, "raised once");
}
