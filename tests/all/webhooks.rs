//! Alert webhooks end to end: devices submit, the real alerter raises and clears, the events and
//! their deliveries are recorded in the real PostgreSQL, and the host's delivery worker POSTs
//! them to a small HTTP server of the test's own, which records every request and checks its
//! `Weir-Signature` with an HMAC-SHA256 computed here, independently of the host's code. Also
//! the outbox's limits: a webhook that never answers holds only its own slots, old deliveries
//! are given up and re-driven (`weir webhooks list` and `redrive`, the real binary), delivered
//! ones purged, and private destinations refused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use weir_storage::{
    AlertChange, AlertChangeKind, AlertEvent, AlertEventFilter, DueDelivery, Storage,
};
use weir_tests::poll::eventually;

use crate::alerting::{ACME_RULES, call, host_with_rule_files, next_messages, send};
use crate::ingest::harness::{TestHost, now_ms};

const MINUTE: i64 = 60_000;
const SECRET: &str = "test-secret-0123456789abcdef";

/// globex's rule: a low tank.
const GLOBEX_RULES: &str = r#"
[[rules]]
id = "tank-low"
version = 1
keys = "tank.level"
severity = { minor = "value < 10" }
"#;

/// A host with acme's and globex's rules, more configuration from `tweak`. Its webhooks may
/// POST to private addresses: the receivers are on 127.0.0.1.
async fn host_with_rules(tweak: impl FnOnce(&mut weir::Config)) -> (TestHost, tempfile::TempDir) {
    host_with_rule_files(
        &[("acme.toml", ACME_RULES), ("globex.toml", GLOBEX_RULES)],
        |config| {
            config.alerting.webhook_allow_private = true;
            tweak(config);
        },
    )
    .await
}

/// One request the receiver got, and the status it answered.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    fn delivery_id(&self) -> i64 {
        self.header("weir-delivery-id").parse().unwrap()
    }

    fn payload(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// A webhook receiver on 127.0.0.1: records every request, answers `status`.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start_on(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let task = tokio::spawn(serve(listener, requests.clone(), status.clone()));
        Receiver {
            addr,
            requests,
            status,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::delivered)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, requests: Arc<Mutex<Vec<Received>>>, status: Arc<AtomicU16>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let requests = requests.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let requests = requests.clone();
                let status = status.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let answered = status.load(Ordering::SeqCst);
                    requests.lock().unwrap().push(Received {
                        method: parts.method.to_string(),
                        path: parts.uri.path().to_owned(),
                        headers: parts.headers,
                        body,
                        answered,
                    });
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .status(answered)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Whether `header` (`t=<unix s>,v1=<hex>`) is `secret`'s HMAC-SHA256 of `"<t>.<body>"`, made
/// within the last five minutes: what a receiver checks.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(t) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// Checks what every webhook request must be: a signed JSON POST whose headers name its event.
fn assert_well_formed(request: &Received, secret: &str) {
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/hook")
    );
    assert_eq!(request.header("content-type"), "application/json");
    let signature = request.header("weir-signature");
    assert!(
        verify(secret, signature, &request.body),
        "the signature verifies: {signature}"
    );
    let payload = request.payload();
    assert_eq!(
        request.header("weir-event-id"),
        payload["event_id"].to_string(),
        "{payload}"
    );
    request.delivery_id();
}

/// `org`'s events by id.
async fn recorded(host: &TestHost, org: &str) -> BTreeMap<i64, AlertEvent> {
    let filter = AlertEventFilter {
        limit: 1000,
        ..AlertEventFilter::default()
    };
    let events = host
        .storage()
        .list_alert_events(org, &filter)
        .await
        .unwrap();
    events.into_iter().map(|e| (e.id, e)).collect()
}

/// Checks that `payload` says what the event row it names records.
fn assert_matches_record(payload: &Json, events: &BTreeMap<i64, AlertEvent>) {
    let id = payload["event_id"].as_i64().expect("an event id");
    let event = events
        .get(&id)
        .unwrap_or_else(|| panic!("no event {id} recorded for {payload}"));
    assert_eq!(payload["org"], json!(event.org), "{payload}");
    assert_eq!(payload["device"], json!(event.device), "{payload}");
    assert_eq!(payload["key"], json!(event.key), "{payload}");
    assert_eq!(payload["rule_id"], json!(event.rule_id), "{payload}");
    assert_eq!(payload["trigger"], json!(event.trigger), "{payload}");
    match payload["kind"].as_str().unwrap() {
        "raise" => {
            if event.escalated_at_ms.is_none() {
                assert_eq!(payload["severity"], json!(event.severity), "{payload}");
            }
            assert_eq!(payload["ts"], json!(event.raised_at_ms), "{payload}");
            assert_eq!(payload["message"], json!(event.message), "{payload}");
            let value: Json = event
                .value_json
                .as_deref()
                .map_or(Json::Null, |v| serde_json::from_str(v).unwrap());
            assert_eq!(payload["value"], value, "{payload}");
        }
        "escalate" => {
            assert_eq!(payload["severity"], json!(event.severity), "{payload}");
            assert_eq!(payload["ts"], json!(event.escalated_at_ms), "{payload}");
        }
        "clear" => {
            assert_eq!(payload["severity"], json!(event.severity), "{payload}");
            assert_eq!(event.state, "cleared", "{payload}");
            assert_eq!(payload["ts"], json!(event.cleared_at_ms), "{payload}");
        }
        "acknowledge" => {
            assert_eq!(payload["by"], "api", "{payload}");
            assert!(event.acknowledged_at_ms.is_some(), "{payload}");
            assert_eq!(payload["ts"], json!(event.acknowledged_at_ms), "{payload}");
        }
        other => panic!("unexpected kind {other}: {payload}"),
    }
}

/// A receiver added as a webhook for every acme rule (signed with [`SECRET`]), and a
/// subscription to acme's pub/sub channel.
async fn acme_webhook_and_channel(host: &TestHost) -> (Receiver, redis::aio::PubSub) {
    let receiver = Receiver::start().await;
    host.storage()
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap();
    let client = redis::Client::open(host.stack().config.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("weir:events:acme").await.unwrap();
    (receiver, pubsub)
}

/// `(rule, kind)` of each payload, sorted.
fn summary(requests: &[Received]) -> Vec<(String, String)> {
    let mut summary: Vec<_> = requests
        .iter()
        .map(|r| {
            let payload = r.payload();
            (
                payload["rule_id"].as_str().unwrap().to_owned(),
                payload["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    summary.sort();
    summary
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_kind_reaches_the_webhook_signed_and_as_recorded() {
    let (host, _rules) = host_with_rules(|config| config.alerting.stale_check_s = 1).await;
    let (receiver, mut pubsub) = acme_webhook_and_channel(&host).await;

    let mut meter = host.device("m1", "acme").await;
    let mut pump = host.device("p1", "acme").await;
    let t = now_ms() - 60 * MINUTE;
    // Threshold: raise, escalate, then clear below the hysteresis.
    send(&mut meter, "t1", &[("meter.1.temperature", json!(83.5), t)]).await;
    send(
        &mut meter,
        "t1b",
        &[("meter.1.temperature", json!(95), t + MINUTE / 2)],
    )
    .await;
    send(
        &mut meter,
        "t2",
        &[("meter.1.temperature", json!(70), t + MINUTE)],
    )
    .await;
    // Duration: over 10 for five minutes.
    send(&mut pump, "d1", &[("pump.current", json!(12), t)]).await;
    send(
        &mut pump,
        "d2",
        &[("pump.current", json!(13), t + 3 * MINUTE)],
    )
    .await;
    send(
        &mut pump,
        "d3",
        &[("pump.current", json!(12.5), t + 5 * MINUTE)],
    )
    .await;
    // Count in a window: three openings within ten minutes.
    let door = |open: bool, minute: i64| ("door.open", json!(open), t + minute * MINUTE);
    send(
        &mut pump,
        "c1",
        &[door(false, 0), door(true, 1), door(false, 2)],
    )
    .await;
    send(&mut pump, "c2", &[door(true, 3), door(false, 4)]).await;
    send(&mut pump, "c3", &[door(true, 5)]).await;
    // No data: a key silent for an hour, found by the staleness check.
    send(&mut meter, "s1", &[("meter.1.energy", json!(5), t)]).await;

    eventually(
        "six deliveries",
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || receiver.delivered().len() >= 6,
    )
    .await;
    let delivered = receiver.delivered();
    assert_eq!(
        summary(&delivered),
        pairs(&[
            ("door-bounce", "raise"),
            ("meter-hot", "clear"),
            ("meter-hot", "escalate"),
            ("meter-hot", "raise"),
            ("meter-silent", "raise"),
            ("pump-overload", "raise"),
        ])
    );
    let events = recorded(&host, "acme").await;
    assert_eq!(events.len(), 4, "{events:?}");
    for request in &delivered {
        assert_well_formed(request, SECRET);
        assert_matches_record(&request.payload(), &events);
    }
    let delivery_ids: BTreeSet<i64> = delivered.iter().map(Received::delivery_id).collect();
    assert_eq!(delivery_ids.len(), 6, "one delivery per event change");

    // The signature depends on the secret, and on every byte of the body.
    let request = &delivered[0];
    let signature = request.header("weir-signature");
    assert!(!verify(
        "another-secret-0123456789",
        signature,
        &request.body
    ));
    let mut tampered = request.body.to_vec();
    tampered.push(b' ');
    assert!(!verify(SECRET, signature, &tampered));

    // Pub/sub sends the same document (the webhook's comes back from jsonb: compare values).
    let published = next_messages(&mut pubsub.on_message(), 6).await;
    for request in &delivered {
        let payload = request.payload();
        assert!(
            published.contains(&payload),
            "{payload} among {published:?}"
        );
    }

    let webhooks = host.storage().list_webhooks(Some("acme")).await.unwrap();
    eventually(
        "nothing pending",
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || host.storage().list_webhooks(Some("acme")).await.unwrap()[0].pending == 0,
    )
    .await;
    assert_eq!(webhooks.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledging_and_clearing_through_the_api_reach_the_webhook_and_pubsub() {
    let (host, _rules) = host_with_rules(|_| {}).await;
    let (receiver, mut pubsub) = acme_webhook_and_channel(&host).await;
    let token = host.api_token("acme").await;

    let mut meter = host.device("m1", "acme").await;
    send(
        &mut meter,
        "hot",
        &[("meter.1.temperature", json!(83.5), now_ms())],
    )
    .await;
    eventually(
        "the raise is delivered",
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || receiver.delivered().len() == 1,
    )
    .await;
    let id = receiver.delivered()[0].payload()["event_id"]
        .as_i64()
        .unwrap();

    for (action, deliveries) in [("ack", 2), ("clear", 3)] {
        let path = format!("/v1/events/{id}/{action}");
        let (status, body) = call(&host, Method::POST, &path, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        eventually(
            &format!("the {action} is delivered"),
            Duration::from_secs(20),
            Duration::from_millis(100),
            async || receiver.delivered().len() == deliveries,
        )
        .await;
        // Doing it again changes nothing, and tells nobody.
        let (status, body) = call(&host, Method::POST, &path, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Longer than the workers' poll: no delivery for the repeated calls.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered = receiver.delivered();
    assert_eq!(
        summary(&delivered),
        pairs(&[
            ("meter-hot", "acknowledge"),
            ("meter-hot", "clear"),
            ("meter-hot", "raise"),
        ])
    );
    let events = recorded(&host, "acme").await;
    assert_eq!(events[&id].state, "cleared");
    let mut by = Vec::new();
    for request in &delivered {
        assert_well_formed(request, SECRET);
        let payload = request.payload();
        assert_eq!(payload["event_id"], id, "{payload}");
        assert_matches_record(&payload, &events);
        by.push((payload["kind"].clone(), payload["by"].clone()));
    }
    by.sort_by_key(|(kind, _)| kind.to_string());
    assert_eq!(
        by,
        [
            (json!("acknowledge"), json!("api")),
            (json!("clear"), json!("api")),
            (json!("raise"), json!("alerter")),
        ]
    );
    // The live channel carries the same three documents.
    let published = next_messages(&mut pubsub.on_message(), 3).await;
    for request in &delivered {
        let payload = request.payload();
        assert!(
            published.contains(&payload),
            "{payload} among {published:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_get_only_their_rules_and_their_organisations_events() {
    let (host, _rules) = host_with_rules(|_| {}).await;
    let every_acme_rule = Receiver::start().await;
    let meter_hot_only = Receiver::start().await;
    let globex = Receiver::start().await;
    let storage = host.storage();
    storage
        .add_webhook("acme", None, &every_acme_rule.url(), Some(SECRET))
        .await
        .unwrap();
    storage
        .add_webhook(
            "acme",
            Some("meter-hot"),
            &meter_hot_only.url(),
            Some("meter-hot-secret"),
        )
        .await
        .unwrap();
    storage
        .add_webhook("globex", None, &globex.url(), Some("globex-secret"))
        .await
        .unwrap();

    let t = now_ms() - 60 * MINUTE;
    let mut meter = host.device("m1", "acme").await;
    send(&mut meter, "o1", &[("meter.1.temperature", json!(95), t)]).await;
    let mut pump = host.device("p1", "acme").await;
    send(&mut pump, "o2", &[("pump.current", json!(12), t)]).await;
    send(
        &mut pump,
        "o3",
        &[("pump.current", json!(12), t + 6 * MINUTE)],
    )
    .await;
    let mut tank = host.device("t1", "globex").await;
    send(&mut tank, "o4", &[("tank.level", json!(3), t)]).await;

    eventually(
        "every webhook's deliveries",
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || {
            every_acme_rule.delivered().len() >= 2
                && !meter_hot_only.delivered().is_empty()
                && !globex.delivered().is_empty()
        },
    )
    .await;
    // Time for a stray delivery to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(
        summary(&every_acme_rule.received()),
        pairs(&[("meter-hot", "raise"), ("pump-overload", "raise")])
    );
    assert_eq!(
        summary(&meter_hot_only.received()),
        pairs(&[("meter-hot", "raise")])
    );
    assert_eq!(summary(&globex.received()), pairs(&[("tank-low", "raise")]));
    let acme_events = recorded(&host, "acme").await;
    for request in every_acme_rule.received() {
        assert_well_formed(&request, SECRET);
        assert_matches_record(&request.payload(), &acme_events);
        assert_eq!(request.payload()["org"], "acme");
    }
    let request = &meter_hot_only.received()[0];
    assert_well_formed(request, "meter-hot-secret");
    assert!(
        !verify(SECRET, request.header("weir-signature"), &request.body),
        "each webhook signs with its own secret"
    );
    let request = &globex.received()[0];
    assert_well_formed(request, "globex-secret");
    assert_matches_record(&request.payload(), &recorded(&host, "globex").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_down_then_up_gets_every_event_none_lost() {
    let (host, _rules) = host_with_rules(|config| {
        config.alerting.webhook_retry_min_ms = 50;
        config.alerting.webhook_retry_max_s = 1;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let webhook = host
        .storage()
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap()
        .webhook;

    let t = now_ms() - 60 * MINUTE;
    for device in ["m1", "m2", "m3"] {
        let mut meter = host.device(device, "acme").await;
        send(&mut meter, "h1", &[("meter.1.temperature", json!(85), t)]).await;
        if device == "m2" {
            send(
                &mut meter,
                "h2",
                &[("meter.1.temperature", json!(60), t + MINUTE)],
            )
            .await;
        }
    }

    // Every delivery refused at least twice: retried, not dropped.
    eventually(
        "two refused attempts of each",
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || {
            let mut attempts: BTreeMap<i64, usize> = BTreeMap::new();
            for request in receiver.received() {
                *attempts.entry(request.delivery_id()).or_default() += 1;
            }
            attempts.len() == 4 && attempts.values().all(|&n| n >= 2)
        },
    )
    .await;
    assert!(receiver.delivered().is_empty());
    let pending = host.storage().list_webhooks(Some("acme")).await.unwrap();
    assert_eq!((pending[0].id, pending[0].pending), (webhook.id, 4));

    receiver.answer(200);
    eventually(
        "every delivery made",
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || receiver.delivered().len() >= 4,
    )
    .await;
    eventually(
        "nothing pending",
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || host.storage().list_webhooks(Some("acme")).await.unwrap()[0].pending == 0,
    )
    .await;

    let delivered = receiver.delivered();
    let events = recorded(&host, "acme").await;
    assert_eq!(events.len(), 3, "{events:?}");
    for request in receiver.received() {
        assert_well_formed(&request, SECRET);
    }
    for request in &delivered {
        assert_matches_record(&request.payload(), &events);
    }
    let delivery_ids: BTreeSet<i64> = delivered.iter().map(Received::delivery_id).collect();
    assert_eq!(delivery_ids.len(), 4, "each delivery succeeded once");
    assert_eq!(delivered.len(), 4);
    assert_eq!(
        summary(&delivered),
        pairs(&[
            ("meter-hot", "clear"),
            ("meter-hot", "raise"),
            ("meter-hot", "raise"),
            ("meter-hot", "raise"),
        ])
    );
    let raised: BTreeSet<i64> = delivered
        .iter()
        .filter(|r| r.payload()["kind"] == "raise")
        .map(|r| r.payload()["event_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        raised,
        events.keys().copied().collect(),
        "every recorded event was delivered"
    );
    // Every attempt is counted.
    let (_, metrics) = host.api_get("/metrics").await;
    let count = |outcome: &str| -> u64 {
        let prefix = format!("weir_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(count("delivered"), 4);
    let refused = receiver.received().len() - 4;
    assert_eq!(count("failed"), refused as u64);
    assert!(
        metrics.contains("weir_webhook_pending_deliveries "),
        "{metrics}"
    );

    // A retried delivery is the same document, the same delivery id.
    for request in receiver.received() {
        let first = receiver
            .received()
            .into_iter()
            .find(|r| r.delivery_id() == request.delivery_id())
            .unwrap();
        assert_eq!(first.payload(), request.payload());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_not_listening_gets_its_events_once_it_starts() {
    let (host, _rules) = host_with_rules(|config| {
        config.alerting.webhook_retry_min_ms = 50;
        config.alerting.webhook_retry_max_s = 1;
    })
    .await;
    // A port nobody listens on (yet).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    host.storage()
        .add_webhook("acme", None, &format!("http://{addr}/hook"), Some(SECRET))
        .await
        .unwrap();
    let t = now_ms() - 60 * MINUTE;
    let mut meter = host.device("m1", "acme").await;
    send(&mut meter, "n1", &[("meter.1.temperature", json!(99), t)]).await;
    send(&mut meter, "n2", &[("meter.2.temperature", json!(81), t)]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        host.storage().list_webhooks(Some("acme")).await.unwrap()[0].pending,
        2
    );

    let receiver = Receiver::start_on(TcpListener::bind(addr).await.unwrap());
    eventually(
        "both deliveries",
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || receiver.delivered().len() >= 2,
    )
    .await;
    let events = recorded(&host, "acme").await;
    for request in receiver.received() {
        assert_well_formed(&request, SECRET);
        assert_matches_record(&request.payload(), &events);
    }
    assert_eq!(
        summary(&receiver.received()),
        pairs(&[("meter-hot", "raise"), ("meter-hot", "raise")])
    );
}

/// A raise (or clear) of `org`'s `rule` on device `d1`.
fn change(org: &str, rule: &str, kind: AlertChangeKind) -> AlertChange {
    AlertChange {
        org: org.to_owned(),
        device: "d1".to_owned(),
        key: "k".to_owned(),
        rule_id: rule.to_owned(),
        rule_version: 1,
        trigger: "condition".to_owned(),
        kind,
        severity: "minor".to_owned(),
        ts_ms: now_ms(),
        value_json: Some("1".to_owned()),
        message: format!("{rule} fired"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_hands_each_delivery_to_one_worker_until_its_lease_ends() {
    // No alerter, so no delivery worker of the host's own takes the deliveries.
    let host = TestHost::start_with(|config| config.alerting.component = "none.wasm".into()).await;
    let storage = host.storage();
    let every_rule = storage
        .add_webhook("acme", None, "http://127.0.0.1:9/a", None)
        .await
        .unwrap();
    assert_eq!(every_rule.secret.len(), 64, "32 random bytes in hex");
    let second = storage
        .add_webhook("acme", None, "http://127.0.0.1:9/b", None)
        .await
        .unwrap();
    assert_ne!(every_rule.secret, second.secret);
    storage
        .add_webhook("acme", Some("r2"), "http://127.0.0.1:9/c", Some(SECRET))
        .await
        .unwrap();
    storage
        .add_webhook("globex", None, "http://127.0.0.1:9/d", Some(SECRET))
        .await
        .unwrap();

    let ids = storage
        .record_alert_changes(&[
            change("acme", "r1", AlertChangeKind::Raise),
            change("acme", "r2", AlertChangeKind::Raise),
            change("globex", "r1", AlertChangeKind::Raise),
            // Nothing open to clear: no event, no delivery.
            change("acme", "r3", AlertChangeKind::Clear),
        ])
        .await
        .unwrap();
    assert!(ids[..3].iter().all(Option::is_some), "{ids:?}");
    assert_eq!(ids[3], None);
    let pending = |webhooks: Vec<weir_storage::Webhook>| -> Vec<i64> {
        webhooks.iter().map(|w| w.pending).collect()
    };
    assert_eq!(
        pending(storage.list_webhooks(None).await.unwrap()),
        [2, 2, 1, 1],
        "acme's webhooks get r1 and r2, the r2 webhook r2, globex's its own"
    );
    assert_eq!(storage.pending_webhook_deliveries().await.unwrap(), 6);

    // Two workers claiming together never get the same delivery.
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(claim(storage, 4, lease), claim(storage, 4, lease));
    let rest = claim(storage, 10, lease).await;
    let all: Vec<&DueDelivery> = a.iter().chain(&b).chain(&rest).collect();
    let claimed: BTreeSet<i64> = all.iter().map(|d| d.id).collect();
    assert_eq!((claimed.len(), all.len()), (6, 6), "{a:?} {b:?} {rest:?}");
    assert!(a.len() <= 4 && b.len() <= 4, "{a:?} {b:?}");
    assert!(all.iter().all(|d| d.attempts == 1));
    assert!(claim(storage, 10, lease).await.is_empty());
    let globex = *all.iter().find(|d| d.url.ends_with("/d")).unwrap();
    assert_eq!(globex.secret, SECRET);
    let payload: Json = serde_json::from_str(&globex.payload).unwrap();
    assert_eq!(
        (&payload["org"], &payload["rule_id"], &payload["event_id"]),
        (&json!("globex"), &json!("r1"), &json!(ids[2].unwrap()))
    );
    assert_eq!(globex.event_id, ids[2].unwrap());

    // Failed: due again after its backoff. Delivered: done.
    assert!(
        storage
            .mark_webhook_failed(globex.id, 1, Duration::ZERO, "answered 503", false)
            .await
            .unwrap()
    );
    let again = claim(storage, 10, lease).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (globex.id, 2));
    // A report under the first claim comes too late: the second claim holds the delivery.
    assert!(!storage.mark_webhook_delivered(globex.id, 1).await.unwrap());
    assert!(storage.mark_webhook_delivered(globex.id, 2).await.unwrap());
    assert_eq!(storage.pending_webhook_deliveries().await.unwrap(), 5);

    // A worker that never reports: its deliveries are due again when the lease ends.
    let second_id = second.webhook.id;
    storage.remove_webhook(second_id).await.unwrap();
    assert!(!storage.remove_webhook(second_id).await.unwrap());
    assert_eq!(storage.pending_webhook_deliveries().await.unwrap(), 3);
    expire_leases(&host).await;
    let lapsed = claim(storage, 10, Duration::from_millis(100)).await;
    assert_eq!(lapsed.len(), 3);
    assert!(lapsed.iter().all(|d| d.attempts == 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reclaimed = claim(storage, 10, lease).await;
    assert_eq!(
        reclaimed
            .iter()
            .map(|d| (d.id, d.attempts))
            .collect::<Vec<_>>(),
        lapsed.iter().map(|d| (d.id, 3)).collect::<Vec<_>>()
    );
}

/// Claims at most `limit` due deliveries for `lease`, up to 100 per webhook, none expired.
async fn claim(storage: &Storage, limit: i64, lease: Duration) -> Vec<DueDelivery> {
    storage
        .claim_webhook_deliveries(limit, 100, lease, Duration::from_secs(3600))
        .await
        .unwrap()
}

/// Ends every lease now, as if an hour had passed.
async fn expire_leases(host: &TestHost) {
    let (client, connection) =
        tokio_postgres::connect(&host.stack().postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now(), leased_until = now() \
             WHERE delivered_at IS NULL",
            &[],
        )
        .await
        .unwrap();
}

#[test]
fn the_hosts_signature_is_what_receivers_verify() {
    let body = br#"{"event_id":1,"kind":"raise"}"#;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = weir_webhooks::signature_header(SECRET, now, body);
    assert!(verify(SECRET, &header, body));
    assert!(!verify("wrong-secret", &header, body));
    let old = weir_webhooks::signature_header(SECRET, now - 3600, body);
    assert!(
        !verify(SECRET, &old, body),
        "an hour-old signature is refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raise_reported_again_is_recorded_and_delivered_once() {
    // What the next evaluation reports when an evaluation's events were recorded but its
    // states were not stored: the same raise, at the same timestamp.
    let host = TestHost::start_with(|config| config.alerting.component = "none.wasm".into()).await;
    let storage = host.storage();
    storage
        .add_webhook("acme", None, "http://127.0.0.1:9/a", Some(SECRET))
        .await
        .unwrap();
    let raise = change("acme", "r1", AlertChangeKind::Raise);
    let first = storage
        .record_alert_changes(std::slice::from_ref(&raise))
        .await
        .unwrap();
    let again = storage
        .record_alert_changes(std::slice::from_ref(&raise))
        .await
        .unwrap();
    assert_eq!(first, again, "the same event");
    assert_eq!(storage.pending_webhook_deliveries().await.unwrap(), 1);
    let events = storage
        .list_alert_events(
            "acme",
            &AlertEventFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].state, "raised");

    // A later raise of the same alert (its clear was lost) still replaces the open row.
    let later = AlertChange {
        ts_ms: raise.ts_ms + 1000,
        ..raise
    };
    let replaced = storage.record_alert_changes(&[later]).await.unwrap();
    assert_ne!(replaced, first);
    assert_eq!(storage.pending_webhook_deliveries().await.unwrap(), 2);
}

/// A client of the host's database, for checks behind the storage layer's back.
async fn database(host: &TestHost) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&host.stack().postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
}

/// `org`'s raises of `count` distinct rules, recorded as the alerter records them.
async fn raise(host: &TestHost, org: &str, prefix: &str, count: usize) -> Vec<i64> {
    let changes: Vec<AlertChange> = (0..count)
        .map(|i| change(org, &format!("{prefix}-{i}"), AlertChangeKind::Raise))
        .collect();
    host.storage()
        .record_alert_changes(&changes)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.expect("a new event"))
        .collect()
}

/// Runs the `weir` binary on the host's database; its success, stdout and stderr.
async fn weir_cli(host: &TestHost, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(weir_services::weir_binary().unwrap());
    command
        .args(args)
        .env_remove("WEIR_CONFIG")
        .env_remove("WEIR_WEBHOOK_ALLOW_PRIVATE")
        .env("WEIR_DATABASE_URL", host.stack().postgres.url())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `(pending, dead)` of webhook `id` as `weir webhooks list` prints them.
async fn listed(host: &TestHost, id: i64) -> (i64, i64) {
    let (ok, stdout, stderr) = weir_cli(host, &["webhooks", "list"], &[]).await;
    assert!(ok, "{stdout}{stderr}");
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "ORG", "RULE", "CREATED", "PENDING", "DEAD", "URL"]
    );
    let row: Vec<&str> = lines
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|row| row[0] == id.to_string())
        .unwrap_or_else(|| panic!("no webhook {id} in {stdout}"));
    (row[4].parse().unwrap(), row[5].parse().unwrap())
}

/// The value of the unlabelled metric `name` in the host's `/metrics`.
async fn metric(host: &TestHost, name: &str) -> Option<f64> {
    let (_, metrics) = host.api_get("/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// A webhook that accepts connections and reads requests but never answers. It records the
/// delivery id of each request on an open connection, and any id requested on two open
/// connections at once.
struct Blackhole {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<i64>>>,
    most_open: Arc<Mutex<usize>>,
    requests: Arc<AtomicU16>,
    concurrent_duplicates: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let most_open = Arc::new(Mutex::new(0));
        let requests = Arc::new(AtomicU16::new(0));
        let concurrent_duplicates = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (open, most_open, requests, duplicates) = (
                open.clone(),
                most_open.clone(),
                requests.clone(),
                concurrent_duplicates.clone(),
            );
            async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (open, most_open, requests, duplicates) = (
                        open.clone(),
                        most_open.clone(),
                        requests.clone(),
                        duplicates.clone(),
                    );
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt as _;
                        let mut head = Vec::new();
                        let mut buffer = [0u8; 4096];
                        let mut id = None;
                        loop {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buffer[..n]),
                            }
                            if id.is_none() {
                                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                                if let Some(value) = text
                                    .lines()
                                    .find_map(|line| line.strip_prefix("weir-delivery-id:"))
                                    .and_then(|value| value.trim().parse::<i64>().ok())
                                {
                                    requests.fetch_add(1, Ordering::SeqCst);
                                    let mut open = open.lock().unwrap();
                                    if open.contains(&value) {
                                        duplicates.lock().unwrap().push(value);
                                    }
                                    open.push(value);
                                    let mut most = most_open.lock().unwrap();
                                    *most = (*most).max(open.len());
                                    id = Some(value);
                                }
                            }
                        }
                        if let Some(id) = id {
                            let mut open = open.lock().unwrap();
                            let at = open.iter().position(|&open| open == id).unwrap();
                            open.remove(at);
                        }
                    });
                }
            }
        });
        Blackhole {
            addr,
            open,
            most_open,
            requests,
            concurrent_duplicates,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_webhook_does_not_delay_another_organisations_webhook() {
    let (host, _rules) = host_with_rules(|config| {
        config.alerting.webhook_timeout_ms = 3000;
        config.alerting.webhook_concurrency_per_webhook = 4;
    })
    .await;
    let blackhole = Blackhole::start().await;
    let healthy = Receiver::start().await;
    let storage = host.storage();
    storage
        .add_webhook("acme", None, &blackhole.url(), Some(SECRET))
        .await
        .unwrap();
    storage
        .add_webhook("globex", None, &healthy.url(), Some(SECRET))
        .await
        .unwrap();

    raise(&host, "acme", "stuck", 500).await;
    eventually(
        "the blackhole holds its four requests",
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || blackhole.open.lock().unwrap().len() == 4,
    )
    .await;

    // While acme's webhook swallows requests, globex's events arrive at once, one by one.
    let mut delays = Vec::new();
    for round in 0..12 {
        let event = raise(&host, "globex", &format!("healthy-{round}"), 1).await[0];
        let started = std::time::Instant::now();
        eventually(
            &format!("globex's event {event}"),
            Duration::from_secs(10),
            Duration::from_millis(10),
            async || {
                healthy
                    .delivered()
                    .iter()
                    .any(|r| r.payload()["event_id"] == event)
            },
        )
        .await;
        delays.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Across at least one timeout of the blackholed requests.
    let worst = delays.iter().max().unwrap();
    assert!(*worst < Duration::from_secs(2), "{delays:?}");

    let delivered = healthy.delivered();
    let ids: Vec<i64> = delivered.iter().map(Received::delivery_id).collect();
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        (ids.len(), distinct.len()),
        (12, 12),
        "each delivery sent once"
    );
    for request in &delivered {
        assert_well_formed(request, SECRET);
    }
    assert!(
        blackhole.requests.load(Ordering::SeqCst) > 4,
        "the timed-out requests were followed by others"
    );
    assert!(
        *blackhole.most_open.lock().unwrap() <= 4,
        "at most the webhook's concurrency in flight"
    );
    assert!(
        blackhole.concurrent_duplicates.lock().unwrap().is_empty(),
        "a delivery sent twice at once: {:?}",
        blackhole.concurrent_duplicates.lock().unwrap()
    );
    let pending = storage.list_webhooks(Some("acme")).await.unwrap()[0].pending;
    assert!(pending > 400, "{pending}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_webhook_has_at_most_its_concurrency_in_flight_across_workers() {
    // No alerter, so no delivery worker of the host's own takes the deliveries.
    let host = TestHost::start_with(|config| config.alerting.component = "none.wasm".into()).await;
    let storage = host.storage();
    let busy = storage
        .add_webhook("acme", None, "http://127.0.0.1:9/busy", Some(SECRET))
        .await
        .unwrap()
        .webhook;
    let quiet = storage
        .add_webhook("globex", None, "http://127.0.0.1:9/quiet", Some(SECRET))
        .await
        .unwrap()
        .webhook;
    raise(&host, "acme", "r", 5).await;
    raise(&host, "globex", "r", 1).await;

    let lease = Duration::from_secs(60);
    let age = Duration::from_secs(3600);
    let (a, b) = tokio::join!(
        storage.claim_webhook_deliveries(10, 2, lease, age),
        storage.claim_webhook_deliveries(10, 2, lease, age)
    );
    let mut claimed: Vec<DueDelivery> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    claimed.extend(
        storage
            .claim_webhook_deliveries(10, 2, lease, age)
            .await
            .unwrap(),
    );
    let of = |claimed: &[DueDelivery], webhook: i64| {
        claimed.iter().filter(|d| d.webhook_id == webhook).count()
    };
    assert_eq!(
        (of(&claimed, busy.id), of(&claimed, quiet.id)),
        (2, 1),
        "{claimed:?}"
    );

    // A slot freed: one more of the busy webhook's.
    let first = claimed.iter().find(|d| d.webhook_id == busy.id).unwrap();
    assert!(
        storage
            .mark_webhook_delivered(first.id, first.attempts)
            .await
            .unwrap()
    );
    let next = storage
        .claim_webhook_deliveries(10, 2, lease, age)
        .await
        .unwrap();
    assert_eq!(of(&next, busy.id), 1, "{next:?}");
    assert!(
        storage
            .claim_webhook_deliveries(10, 2, lease, age)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_delivery_is_given_up_listed_counted_and_redriven() {
    let (host, _rules) = host_with_rules(|config| {
        config.alerting.webhook_retry_min_ms = 50;
        config.alerting.webhook_retry_max_s = 1;
        config.alerting.webhook_max_age_s = 2;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let webhook = host
        .storage()
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap()
        .webhook;
    raise(&host, "acme", "old", 1).await;

    eventually(
        "the delivery given up",
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || host.storage().list_webhooks(Some("acme")).await.unwrap()[0].dead == 1,
    )
    .await;
    assert!(!receiver.received().is_empty(), "it was attempted first");
    assert_eq!(listed(&host, webhook.id).await, (0, 1));
    let rows = database(&host)
        .await
        .query("SELECT last_error FROM webhook_deliveries", &[])
        .await
        .unwrap();
    let last_error: String = rows[0].get(0);
    assert!(
        last_error.starts_with("max_age: answered 503"),
        "{last_error}"
    );
    eventually(
        "the metrics count it",
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || {
            metric(&host, "weir_webhook_deliveries_dead_total").await == Some(1.0)
                && metric(&host, "weir_webhook_dead_deliveries").await == Some(1.0)
        },
    )
    .await;
    // Given up: no more attempts.
    let attempts = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), attempts);

    receiver.answer(200);
    let (ok, stdout, stderr) = weir_cli(
        &host,
        &["webhooks", "redrive", &webhook.id.to_string()],
        &[],
    )
    .await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("queued 1 dead deliveries"), "{stdout}");
    eventually(
        "the re-driven delivery made",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || receiver.delivered().len() == 1,
    )
    .await;
    assert_well_formed(&receiver.delivered()[0], SECRET);
    eventually(
        "nothing pending nor dead",
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || listed(&host, webhook.id).await == (0, 0),
    )
    .await;
    let (ok, _, stderr) = weir_cli(&host, &["webhooks", "redrive", "999999"], &[]).await;
    assert!(!ok && stderr.contains("no webhook 999999"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_failing_its_last_attempt_is_given_up() {
    let (host, _rules) = host_with_rules(|config| {
        config.alerting.webhook_retry_min_ms = 50;
        config.alerting.webhook_retry_max_s = 1;
        config.alerting.webhook_max_attempts = 3;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(500);
    host.storage()
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap();
    raise(&host, "acme", "flaky", 1).await;
    eventually(
        "the delivery given up",
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || host.storage().list_webhooks(Some("acme")).await.unwrap()[0].dead == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 3, "three attempts, no more");
    let rows = database(&host)
        .await
        .query("SELECT last_error, attempts FROM webhook_deliveries", &[])
        .await
        .unwrap();
    let (last_error, attempts): (String, i32) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(
        (last_error.as_str(), attempts),
        ("max_attempts: answered 500 Internal Server Error", 3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_at_a_private_address_is_refused_unless_allowed() {
    let (host, _rules) =
        host_with_rules(|config| config.alerting.webhook_allow_private = false).await;
    let receiver = Receiver::start().await;
    let storage = host.storage();
    // Behind the command line's back: the worker checks every delivery, by address.
    let literal = storage
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap()
        .webhook;
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    let named = storage
        .add_webhook("globex", None, &by_name, Some(SECRET))
        .await
        .unwrap()
        .webhook;
    raise(&host, "acme", "r", 1).await;
    raise(&host, "globex", "r", 1).await;
    eventually(
        "both deliveries refused and given up",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || {
            storage
                .list_webhooks(None)
                .await
                .unwrap()
                .iter()
                .map(|w| (w.pending, w.dead))
                .collect::<Vec<_>>()
                == [(0, 1), (0, 1)]
        },
    )
    .await;
    assert!(receiver.received().is_empty(), "nothing reached 127.0.0.1");
    let rows = database(&host)
        .await
        .query(
            "SELECT webhook_id, last_error FROM webhook_deliveries ORDER BY webhook_id",
            &[],
        )
        .await
        .unwrap();
    let errors: Vec<(i64, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(
        errors[0],
        (
            literal.id,
            "destination_refused: 127.0.0.1 is a loopback address".to_owned()
        )
    );
    assert_eq!(errors[1].0, named.id);
    assert!(
        errors[1]
            .1
            .starts_with("destination_refused: localhost resolves to "),
        "{errors:?}"
    );
    let (_, metrics) = host.api_get("/metrics").await;
    assert!(
        metrics.contains("weir_webhook_deliveries_total{outcome=\"refused\"} 2"),
        "{metrics}"
    );

    // The command line refuses such a URL, unless the configuration allows it.
    let url = receiver.url();
    let add = ["webhooks", "add", "--org", "initech", "--url", url.as_str()];
    let (ok, _, stderr) = weir_cli(&host, &add, &[]).await;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("destination_refused: 127.0.0.1 is a loopback address"),
        "{stderr}"
    );
    let (ok, stdout, stderr) =
        weir_cli(&host, &add, &[("WEIR_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim().len(), 64, "the secret made: {stdout}");

    // A host that allows private destinations delivers to both.
    let (allowing, _rules) = host_with_rules(|_| {}).await;
    allowing
        .storage()
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap();
    allowing
        .storage()
        .add_webhook("globex", None, &by_name, Some(SECRET))
        .await
        .unwrap();
    raise(&allowing, "acme", "r", 1).await;
    raise(&allowing, "globex", "r", 1).await;
    eventually(
        "both delivered",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || receiver.delivered().len() == 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_is_read_from_a_file_or_standard_input_never_the_command_line() {
    let host = TestHost::start_with(|config| config.alerting.component = "none.wasm".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let url = "https://hooks.example.com/weir";
    let (ok, stdout, stderr) = weir_cli(
        &host,
        &[
            "webhooks",
            "add",
            "--org",
            "acme",
            "--url",
            url,
            "--secret-file",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains(SECRET), "the secret given is not echoed");

    let mut child = tokio::process::Command::new(weir_services::weir_binary().unwrap())
        .args([
            "webhooks",
            "add",
            "--org",
            "globex",
            "--url",
            url,
            "--secret-stdin",
        ])
        .env_remove("WEIR_CONFIG")
        .env("WEIR_DATABASE_URL", host.stack().postgres.url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"globex-secret-0123456789\n")
            .await
            .unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let rows = database(&host)
        .await
        .query("SELECT org, secret FROM webhooks ORDER BY id", &[])
        .await
        .unwrap();
    let secrets: Vec<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(
        secrets,
        [
            ("acme".to_owned(), SECRET.to_owned()),
            ("globex".to_owned(), "globex-secret-0123456789".to_owned())
        ]
    );
    let (ok, _, stderr) = weir_cli(
        &host,
        &[
            "webhooks", "add", "--org", "acme", "--url", url, "--secret", SECRET,
        ],
        &[],
    )
    .await;
    assert!(!ok && stderr.contains("--secret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delivered_rows_are_purged_after_the_retention() {
    let (host, _rules) = host_with_rules(|config| {
        config.alerting.webhook_delivered_retention_s = 1;
    })
    .await;
    let receiver = Receiver::start().await;
    let refusing = Receiver::start().await;
    refusing.answer(503);
    host.storage()
        .add_webhook("acme", None, &receiver.url(), Some(SECRET))
        .await
        .unwrap();
    host.storage()
        .add_webhook("acme", None, &refusing.url(), Some(SECRET))
        .await
        .unwrap();
    raise(&host, "acme", "r", 3).await;
    eventually(
        "three delivered",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || receiver.delivered().len() == 3,
    )
    .await;
    let client = database(&host).await;
    let rows = async || -> (i64, i64) {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL), \
                 count(*) FILTER (WHERE delivered_at IS NULL) FROM webhook_deliveries",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    eventually(
        "the delivered rows purged, the pending ones kept",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || rows().await == (0, 3),
    )
    .await;
    assert_eq!(receiver.received().len(), 3, "purged, not sent again");
}
