//! Alerting end to end: rule files in a directory, the real alerter component
//! (`target/functions/alert.wasm`) evaluating every accepted batch, its state and its events in
//! the real PostgreSQL, events read, acknowledged and cleared through the host's `/v1/events`
//! API.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};
use weir_runtime::alerter::{Rule, RuleState};
use weir_runtime::{AlerterFunction, CallError};
use weir_tests::poll::eventually;

use crate::ingest::harness::{Device, TestHost, batch, now_ms, ok, point};
use crate::support::{component_path, engine};

/// The alerter component, relative to the functions directory.
const ALERTER: &str = "alert.wasm";
const MINUTE: i64 = 60_000;

/// acme's rules: one of each kind (a threshold with hysteresis and two severities, a duration,
/// a count in a window, no data).
pub(crate) const ACME_RULES: &str = r#"
[[rules]]
id = "meter-hot"
version = 3
keys = "meter.*.temperature"
clear = "value < 75"
[rules.severity]
critical = "value > 90"
warning = "value > 80"

[[rules]]
id = "pump-overload"
version = 1
keys = "pump.current"
for = "5m"
severity = { major = "value > 10" }

[[rules]]
id = "door-bounce"
version = 2
keys = "door.open"
count = 3
within = "10m"
severity = { minor = "value == true && previous == false" }

[[rules]]
id = "meter-silent"
version = 1
keys = "meter.*.energy"
stale_after = "10m"
stale_severity = "major"
"#;

/// A host whose rules directory holds `acme.toml` with [`ACME_RULES`].
pub(crate) async fn host_with_rules() -> (TestHost, tempfile::TempDir) {
    host_with_rules_and(|_| {}).await
}

/// Like [`host_with_rules`], the host serving `region`.
pub(crate) async fn host_with_rules_in_region(region: &str) -> (TestHost, tempfile::TempDir) {
    let region = region.to_owned();
    host_with_rules_and(move |config| config.region = region).await
}

/// Like [`host_with_rules`], with more configuration.
async fn host_with_rules_and(
    tweak: impl FnOnce(&mut weir::Config),
) -> (TestHost, tempfile::TempDir) {
    host_with_rule_files(&[("acme.toml", ACME_RULES)], tweak).await
}

/// A host whose rules directory (kept alive by the caller) holds `files` (name, text), more
/// configuration from `tweak`.
pub(crate) async fn host_with_rule_files(
    files: &[(&str, &str)],
    tweak: impl FnOnce(&mut weir::Config),
) -> (TestHost, tempfile::TempDir) {
    let rules = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(rules.path().join(name), text).unwrap();
    }
    let dir = rules.path().to_owned();
    let host = TestHost::start_with(move |config| {
        config.alerting.rules_dir = Some(dir);
        tweak(config);
    })
    .await;
    (host, rules)
}

/// Submits one batch of `(key, value, ts)` points, all accepted.
pub(crate) async fn send(device: &mut Device, id: &str, points: &[(&str, Json, i64)]) {
    let body = batch(
        id,
        points
            .iter()
            .map(|(key, value, ts)| point(key, value.clone(), *ts))
            .collect(),
    );
    let receipt = ok(&device.submit(&body).await);
    assert_eq!(receipt["accepted"], json!(points.len()), "{receipt}");
}

/// The next `count` pub/sub messages of `messages`, as JSON, each within 5 s.
pub(crate) async fn next_messages(
    messages: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin),
    count: usize,
) -> Vec<Json> {
    let mut received = Vec::with_capacity(count);
    for _ in 0..count {
        let message = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(messages),
        )
        .await
        .expect("an event message within 5 s")
        .expect("the subscription is open");
        let payload: String = message.get_payload().unwrap();
        received.push(serde_json::from_str::<Json>(&payload).unwrap());
    }
    received
}

/// `method path` with the token: status and JSON body.
pub(crate) async fn call(
    host: &TestHost,
    method: Method,
    path: &str,
    token: &str,
) -> (StatusCode, Json) {
    let authorization = format!("Bearer {token}");
    let (status, body) = host
        .api_request(method, path, &[("authorization", &authorization)])
        .await;
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, body)
}

/// The events `GET /v1/events?query` lists.
pub(crate) async fn events(host: &TestHost, token: &str, query: &str) -> Vec<Json> {
    let (status, body) = call(host, Method::GET, &format!("/v1/events?{query}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// The rule ids with an alerter state of `device` of `org` in PostgreSQL.
async fn state_fields(host: &TestHost, org: &str, device: &str) -> Vec<String> {
    let device = weir_storage::DeviceRef::new(org, device);
    let states = host.storage().alert_states(&device).await.unwrap();
    states.into_iter().map(|state| state.rule_id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn threshold_rule_raises_and_clears_with_hysteresis() {
    let (host, _rules) = host_with_rules().await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    let t = now_ms() - 60 * MINUTE;

    send(&mut meter, "b1", &[("meter.1.temperature", json!(70.0), t)]).await;
    assert!(events(&host, &token, "").await.is_empty());

    send(
        &mut meter,
        "b2",
        &[("meter.1.temperature", json!(83.5), t + MINUTE)],
    )
    .await;
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let event = &listed[0];
    assert_eq!(event["rule_id"], "meter-hot");
    assert_eq!(event["rule_version"], 3);
    assert_eq!(event["device"], "m1");
    assert_eq!(event["key"], "meter.1.temperature");
    assert_eq!(event["severity"], "warning");
    assert_eq!(event["state"], "raised");
    assert_eq!(event["trigger"], "condition");
    assert_eq!(event["value"], json!(83.5));
    assert_eq!(event["raised_at"], json!(t + MINUTE));
    assert!(!event["message"].as_str().unwrap().is_empty());
    assert_eq!(state_fields(&host, "acme", "m1").await, ["meter-hot"]);

    // Between the raise and the clear condition the alert stays; below 75 it clears.
    send(
        &mut meter,
        "b3",
        &[("meter.1.temperature", json!(78), t + 2 * MINUTE)],
    )
    .await;
    assert_eq!(events(&host, &token, "state=raised").await.len(), 1);
    send(
        &mut meter,
        "b4",
        &[("meter.1.temperature", json!(74), t + 3 * MINUTE)],
    )
    .await;
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "cleared");
    assert_eq!(listed[0]["cleared_at"], json!(t + 3 * MINUTE));

    // Keys no rule watches cost nothing and raise nothing.
    send(
        &mut meter,
        "b5",
        &[("meter.1.humidity", json!(99), t + 4 * MINUTE)],
    )
    .await;
    assert_eq!(events(&host, &token, "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_recorded_event_is_published_on_the_organisations_channel() {
    let (host, _rules) = host_with_rules().await;
    let client = redis::Client::open(host.stack().config.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("weir:events:acme").await.unwrap();
    let mut meter = host.device("m9", "acme").await;
    let t = now_ms() - 60 * MINUTE;
    send(&mut meter, "p1", &[("meter.2.temperature", json!(95.5), t)]).await;
    send(
        &mut meter,
        "p2",
        &[("meter.2.temperature", json!(60), t + MINUTE)],
    )
    .await;

    let received = next_messages(&mut pubsub.on_message(), 2).await;
    let summary: Vec<_> = received
        .iter()
        .map(|m| (m["kind"].clone(), m["severity"].clone(), m["ts"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("raise"), json!("critical"), json!(t)),
            (json!("clear"), json!("critical"), json!(t + MINUTE)),
        ]
    );
    assert_eq!(received[0]["rule_id"], "meter-hot");
    assert_eq!(received[0]["rule_version"], 3);
    assert_eq!(received[0]["device"], "m9");
    assert_eq!(received[0]["value"], json!(95.5));
}

#[tokio::test(flavor = "multi_thread")]
async fn duration_and_count_rules_raise_only_when_met() {
    let (host, _rules) = host_with_rules().await;
    let token = host.api_token("acme").await;
    let mut pump = host.device("p1", "acme").await;
    let t = now_ms() - 60 * MINUTE;

    send(&mut pump, "d1", &[("pump.current", json!(12), t)]).await;
    send(
        &mut pump,
        "d2",
        &[("pump.current", json!(13), t + 3 * MINUTE)],
    )
    .await;
    assert!(events(&host, &token, "device=p1").await.is_empty());
    send(
        &mut pump,
        "d3",
        &[("pump.current", json!(12.5), t + 5 * MINUTE)],
    )
    .await;
    let listed = events(&host, &token, "device=p1").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0]["rule_id"], &listed[0]["severity"]),
        (&json!("pump-overload"), &json!("major"))
    );

    // Three openings within ten minutes; two are not enough.
    let door = |open: bool, minute: i64| ("door.open", json!(open), t + minute * MINUTE);
    send(
        &mut pump,
        "c1",
        &[door(false, 0), door(true, 1), door(false, 2)],
    )
    .await;
    send(&mut pump, "c2", &[door(true, 3), door(false, 4)]).await;
    assert!(events(&host, &token, "key=door.open").await.is_empty());
    send(&mut pump, "c3", &[door(true, 5)]).await;
    let listed = events(&host, &token, "key=door.open").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["rule_id"], "door-bounce");
    assert_eq!(listed[0]["rule_version"], 2);
    assert_eq!(listed[0]["raised_at"], json!(t + 5 * MINUTE));
}

#[tokio::test(flavor = "multi_thread")]
async fn escalation_updates_the_event_then_ack_and_clear_end_it() {
    let (host, _rules) = host_with_rules().await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    let t = now_ms() - 60 * MINUTE;

    send(&mut meter, "e1", &[("meter.2.temperature", json!(85), t)]).await;
    send(
        &mut meter,
        "e2",
        &[("meter.2.temperature", json!(95), t + MINUTE)],
    )
    .await;
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "one event, escalated: {listed:?}");
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(listed[0]["severity"], "critical");
    assert_eq!(listed[0]["escalated_at"], json!(t + MINUTE));
    assert_eq!(events(&host, &token, "severity=critical").await.len(), 1);
    assert!(events(&host, &token, "severity=warning").await.is_empty());

    let ack = format!("/v1/events/{id}/ack");
    let (status, body) = call(&host, Method::POST, &ack, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["state"], "acknowledged");
    assert!(body["event"]["acknowledged_at"].is_i64());
    let (status, body) = call(&host, Method::POST, &ack, &token).await;
    assert_eq!(
        (status, &body["event"]["state"]),
        (StatusCode::OK, &json!("acknowledged")),
        "acknowledging again changes nothing"
    );

    let clear = format!("/v1/events/{id}/clear");
    let (status, body) = call(&host, Method::POST, &clear, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["state"], "cleared");
    let (status, body) = call(&host, Method::POST, &ack, &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "event_cleared");

    // The condition still holds: the next point raises a new alert.
    send(
        &mut meter,
        "e3",
        &[("meter.2.temperature", json!(96), t + 2 * MINUTE)],
    )
    .await;
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        (&listed[0]["state"], &listed[0]["severity"]),
        (&json!("raised"), &json!("critical"))
    );
    assert_ne!(listed[0]["id"], json!(id));
    assert_eq!(events(&host, &token, "state=cleared").await.len(), 1);

    let (status, body) = call(&host, Method::POST, "/v1/events/999999/ack", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "event_not_found");
    let (status, body) = call(&host, Method::GET, "/v1/events?limit=0", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_parameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_organisation_neither_sees_nor_changes_events() {
    let (host, _rules) = host_with_rules().await;
    let acme = host.api_token("acme").await;
    let globex = host.api_token("globex").await;
    let mut meter = host.device("m1", "acme").await;
    let t = now_ms() - 60 * MINUTE;
    send(&mut meter, "i1", &[("meter.1.temperature", json!(99), t)]).await;
    let listed = events(&host, &acme, "").await;
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_i64().unwrap();

    assert!(events(&host, &globex, "").await.is_empty());
    for action in ["ack", "clear"] {
        let path = format!("/v1/events/{id}/{action}");
        let (status, body) = call(&host, Method::POST, &path, &globex).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {body}");
        assert_eq!(body["error"]["code"], "event_not_found");
    }
    assert_eq!(events(&host, &acme, "state=raised").await.len(), 1);

    // globex has no rules: its devices' batches are stored and raise nothing.
    let mut other = host.device("m1", "globex").await;
    send(&mut other, "i2", &[("meter.1.temperature", json!(99), t)]).await;
    assert!(events(&host, &globex, "").await.is_empty());

    let (status, _) = host.api_get("/v1/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_key_raises_a_no_data_alert_that_its_next_point_clears() {
    let (host, _rules) = host_with_rules_and(|config| config.alerting.stale_check_s = 1).await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    send(
        &mut meter,
        "s1",
        &[("meter.1.energy", json!(5), now_ms() - 60 * MINUTE)],
    )
    .await;
    eventually(
        "a no-data alert",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || !events(&host, &token, "").await.is_empty(),
    )
    .await;
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["rule_id"], "meter-silent");
    assert_eq!(listed[0]["trigger"], "no_data");
    assert_eq!(listed[0]["severity"], "major");
    assert_eq!(listed[0]["value"], Json::Null);

    send(&mut meter, "s2", &[("meter.1.energy", json!(6), now_ms())]).await;
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "cleared");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_alerts_are_still_evaluated_and_only_the_live_channel_misses_them() {
    let (mut host, _rules) = host_with_rules().await;
    let token = host.api_token("acme").await;
    let mut meter = host.device("m1", "acme").await;
    host.stop_redis();
    let t = now_ms() - 60 * MINUTE;
    send(&mut meter, "r1", &[("meter.1.temperature", json!(99), t)]).await;
    assert_eq!(host.count(meter.id()).await, 1);
    // States and locks are in PostgreSQL: the alert is raised and recorded.
    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["severity"], "critical");
    let (_, metrics) = host.api_get("/metrics").await;
    assert!(
        metrics.contains("weir_alert_failures_total{code=\"publish_failed\"} 1"),
        "{metrics}"
    );
    host.start_redis_again();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_rule_file_refuses_the_start_naming_the_rule() {
    let rules = tempfile::tempdir().unwrap();
    let bad = ACME_RULES.replace("value > 80", "value >>> 80");
    std::fs::write(rules.path().join("acme.toml"), bad).unwrap();
    let dir = rules.path().to_owned();
    let stack =
        weir_tests::stack::Stack::start(move |config| config.alerting.rules_dir = Some(dir));
    let error = match stack.await {
        Ok(_) => panic!("a host started with a bad rule file"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("acme.toml") && error.contains("meter-hot"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alerter_past_its_deadline_is_stopped() {
    let engine = engine(Duration::from_secs(5), 64);
    let alerter = AlerterFunction::load_file(&engine, &component_path(ALERTER)).unwrap();
    let summaries = alerter.check_rules(ACME_RULES).await.unwrap().unwrap();
    let rules: Vec<Rule> = summaries
        .into_iter()
        .map(|s| Rule {
            id: s.id,
            version: s.version,
            source: s.source,
        })
        .collect();
    // Enough work to outlast several epoch ticks (5 ms): a 1 ms deadline is one tick, which a
    // small evaluation on a fast machine can finish within.
    let points: Vec<_> = (0..10_000)
        .map(|i| weir_runtime::alerter::Point {
            key: format!("meter.{}.temperature", i % 10),
            value: weir_runtime::alerter::Value::Float(70.0 + (i % 30) as f64),
            ts: 1_767_225_600_000 + i * 1000,
        })
        .collect();
    let states: Vec<RuleState> = Vec::new();
    let started = std::time::Instant::now();
    let evaluation = alerter.evaluate("m1", &points, &rules, &states).await;
    assert!(!evaluation.unwrap().events.is_empty());
    assert!(
        started.elapsed() > Duration::from_millis(20),
        "the evaluation is long enough to outlast the deadline: {:?}",
        started.elapsed()
    );

    let hurried = alerter.with_deadline(Duration::from_millis(1));
    let error = hurried
        .evaluate("m1", &points, &rules, &states)
        .await
        .unwrap_err();
    assert!(
        matches!(error, CallError::DeadlineExceeded { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_batches_of_one_device_on_two_hosts_lose_no_state() {
    // The rule raises once the device's state has seen all eight keys: a batch whose evaluation
    // overwrote another's state would leave a key out, and nothing would be raised.
    const KEYS: usize = 8;
    let rules = format!(
        "[[rules]]\nid = \"all-seen\"\nversion = 1\nkeys = \"c.*\"\n\
         severity = {{ minor = \"size(keys) >= {KEYS}\" }}\n"
    );
    let (host, _rules) = host_with_rule_files(&[("acme.toml", &rules)], |_| {}).await;
    let second = host.stack().another_host().await.unwrap();
    let token = host.api_token("acme").await;
    let tls = host.enrol("m1", "acme", weir_pki::ClientAlpn::H2).await;
    let mut connections = Vec::new();
    for i in 0..KEYS {
        let at = if i % 2 == 0 { host.host() } else { &second };
        connections.push(
            host.device_at(at, tls.clone(), weir_storage::DeviceRef::new("acme", "m1"))
                .await,
        );
    }
    let t = now_ms() - 60 * MINUTE;
    let submits = connections
        .iter_mut()
        .enumerate()
        .map(|(i, device)| async move {
            let body = batch(
                &format!("k{i}"),
                vec![point(&format!("c.{i}"), json!(1), t)],
            );
            ok(&device.submit(&body).await)["accepted"].clone()
        });
    let accepted = futures_util::future::join_all(submits).await;
    assert!(accepted.iter().all(|a| *a == json!(1)), "{accepted:?}");

    let listed = events(&host, &token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["rule_id"], "all-seen");
    assert_eq!(state_fields(&host, "acme", "m1").await, ["all-seen"]);
}
