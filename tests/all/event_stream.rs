//! The live alert event stream, `GET /v1/events/stream`, end to end: a real HTTP client (HTTP/1.1
//! chunked and h2c) on the API listener, alerts raised by the real alerter from submitted
//! batches, relayed from the real Redis pub/sub to the stream of the token's organisation only.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value as Json, json};
use tokio::time::Instant;
use weir_tests::poll::eventually;

use crate::ingest::harness::{Device, TestHost, batch, now_ms, ok, point};

const MINUTE: i64 = 60_000;
/// Longest wait for something the stream should send (the machine is loaded).
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// A threshold rule with hysteresis, the same for both organisations.
const RULES: &str = r#"
[[rules]]
id = "boiler-hot"
version = 4
keys = "boiler.temperature"
clear = "value < 75"
[rules.severity]
critical = "value > 90"
warning = "value > 80"
"#;

/// A host whose rules directory gives acme and globex [`RULES`].
async fn host_with_rules() -> (TestHost, tempfile::TempDir) {
    let rules = tempfile::tempdir().unwrap();
    for org in ["acme", "globex"] {
        std::fs::write(rules.path().join(format!("{org}.toml")), RULES).unwrap();
    }
    let dir = rules.path().to_owned();
    let host = TestHost::start_with(move |config| config.alerting.rules_dir = Some(dir)).await;
    (host, rules)
}

/// Submits one `boiler.temperature` point, accepted.
async fn send(device: &mut Device, id: &str, value: f64, ts: i64) {
    let body = batch(id, vec![point("boiler.temperature", json!(value), ts)]);
    let receipt = ok(&device.submit(&body).await);
    assert_eq!(receipt["accepted"], json!(1), "{receipt}");
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), as the API listener also speaks.
    Http2,
}

/// One server-sent event block.
#[derive(Debug, Default)]
struct Sse {
    event: Option<String>,
    id: Option<String>,
    data: String,
    retry: Option<String>,
    comments: Vec<String>,
}

impl Sse {
    fn parse(block: &str) -> Sse {
        let mut sse = Sse::default();
        for line in block.lines().filter(|l| !l.is_empty()) {
            if let Some(comment) = line.strip_prefix(':') {
                sse.comments.push(comment.trim().to_string());
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "event" => sse.event = Some(value.to_string()),
                "id" => sse.id = Some(value.to_string()),
                "retry" => sse.retry = Some(value.to_string()),
                "data" => {
                    if !sse.data.is_empty() {
                        sse.data.push('\n');
                    }
                    sse.data.push_str(value);
                }
                other => panic!("unexpected SSE field `{other}` in {block:?}"),
            }
        }
        sse
    }

    fn json(&self) -> Json {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// An open event stream.
struct EventStream {
    headers: HeaderMap,
    body: Incoming,
    buffer: String,
    // Held so that the connection stays open as long as the stream.
    _sender: Box<dyn std::any::Any + Send>,
}

impl EventStream {
    /// Opens `GET path` on the API listener at `addr` with `token`; panics unless it is a 200.
    async fn open(addr: SocketAddr, path: &str, token: &str, protocol: Protocol) -> EventStream {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = hyper::Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{path}"))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (response, sender): (_, Box<dyn std::any::Any + Send>) = match protocol {
            Protocol::Http1 => {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let (mut parts, body) = request.into_parts();
                parts
                    .headers
                    .insert(hyper::header::HOST, addr.to_string().parse().unwrap());
                let request = hyper::Request::from_parts(parts, body);
                let response = tokio::time::timeout(STREAM_TIMEOUT, sender.send_request(request))
                    .await
                    .expect("the stream answers in time")
                    .unwrap();
                (response, Box::new(sender))
            }
            Protocol::Http2 => {
                let (mut sender, connection) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(connection);
                let response = tokio::time::timeout(STREAM_TIMEOUT, sender.send_request(request))
                    .await
                    .expect("the stream answers in time")
                    .unwrap();
                (response, Box::new(sender))
            }
        };
        let (parts, body) = response.into_parts();
        assert_eq!(parts.status, StatusCode::OK, "{:?}", parts.headers);
        EventStream {
            headers: parts.headers,
            body,
            buffer: String::new(),
            _sender: sender,
        }
    }

    /// The next block, or `None` once the stream has ended; panics after [`STREAM_TIMEOUT`].
    async fn next(&mut self) -> Option<Sse> {
        let deadline = Instant::now() + STREAM_TIMEOUT;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(Sse::parse(&block));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "nothing on the stream within {STREAM_TIMEOUT:?}: {:?}",
                        self.buffer
                    )
                })?
                .expect("the stream's body reads");
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The opening block: a reconnection delay and the `connected` comment.
    async fn connected(&mut self) {
        let first = self.next().await.expect("the stream opens");
        assert_eq!(first.retry.as_deref(), Some("2000"), "{first:?}");
        assert_eq!(first.comments, ["connected"], "{first:?}");
    }

    /// The next `event: alert` (skipping comments, and `lagged` notices, which a stream opened
    /// before the relay subscribed may get first): the block and its JSON.
    async fn next_alert(&mut self) -> (Sse, Json) {
        // Keep-alives arrive all along: the deadline is for the alert itself.
        let deadline = Instant::now() + STREAM_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no alert on the stream within {STREAM_TIMEOUT:?}"
            );
            let sse = self.next().await.expect("the stream stays open");
            match sse.event.as_deref() {
                Some("alert") => {
                    let json = sse.json();
                    return (sse, json);
                }
                Some("lagged") | None => continue,
                Some(other) => panic!("unexpected event `{other}`: {sse:?}"),
            }
        }
    }
}

/// `GET /v1/events` of `token`'s organisation.
async fn listed_events(host: &TestHost, token: &str) -> Vec<Json> {
    let authorization = format!("Bearer {token}");
    let (status, body) = host
        .api_request(
            Method::GET,
            "/v1/events",
            &[("authorization", &authorization)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str::<Json>(&body).unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// The value of the unlabelled metric `name` on `/metrics`.
async fn metric(host: &TestHost, name: &str) -> f64 {
    let (_, metrics) = host.api_get("/metrics").await;
    crate::ingest::harness::metric_value(&metrics, name)
}

/// The `event_id` of an alert's message, checked against the block's SSE `id`.
fn event_id(sse: &Sse, message: &Json) -> i64 {
    let id = message["event_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("an event message names its event: {message}"));
    assert_eq!(sse.id, Some(id.to_string()), "{sse:?}");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raised_then_cleared_alert_arrives_live_over_chunked_http1() {
    let (host, _rules) = host_with_rules().await;
    let token = host.api_token("acme").await;
    let mut stream = EventStream::open(
        host.host().api_addr(),
        "/v1/events/stream",
        &token,
        Protocol::Http1,
    )
    .await;
    let header = |name: &str| {
        stream
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(
        header("cache-control").as_deref(),
        Some("private, no-store")
    );
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(header("content-length"), None);
    stream.connected().await;
    eventually(
        "the stream is counted",
        STREAM_TIMEOUT,
        Duration::from_millis(100),
        async || metric(&host, "weir_event_streams").await == 1.0,
    )
    .await;

    let mut boiler = host.device("b1", "acme").await;
    let t = now_ms() - 30 * MINUTE;
    send(&mut boiler, "s1", 95.5, t).await;
    let (raise, message) = stream.next_alert().await;
    assert_eq!(message["kind"], "raise", "{message}");
    assert_eq!(message["device"], "b1");
    assert_eq!(message["key"], "boiler.temperature");
    assert_eq!(message["rule_id"], "boiler-hot");
    assert_eq!(message["rule_version"], 4);
    assert_eq!(message["severity"], "critical");
    assert_eq!(message["value"], json!(95.5));
    let raised_id = event_id(&raise, &message);
    let listed = listed_events(&host, &token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["id"],
        json!(raised_id),
        "the stream's id is the record's"
    );

    send(&mut boiler, "s2", 60.0, t + MINUTE).await;
    let (clear, message) = stream.next_alert().await;
    assert_eq!(message["kind"], "clear", "{message}");
    assert_eq!(
        (&message["device"], &message["rule_id"]),
        (&json!("b1"), &json!("boiler-hot"))
    );
    assert_eq!(
        event_id(&clear, &message),
        raised_id,
        "one event from raise to clear"
    );

    // The last stream to leave is no longer counted.
    drop(stream);
    eventually(
        "the closed stream is uncounted",
        STREAM_TIMEOUT,
        Duration::from_millis(100),
        async || metric(&host, "weir_event_streams").await == 0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_gets_its_own_organisations_events_only_and_its_filter() {
    let (host, _rules) = host_with_rules().await;
    let acme = host.api_token("acme").await;
    let globex = host.api_token("globex").await;
    let addr = host.host().api_addr();
    let mut acme_all = EventStream::open(addr, "/v1/events/stream", &acme, Protocol::Http1).await;
    let mut acme_b2 = EventStream::open(
        addr,
        "/v1/events/stream?device=b2&severity=warning",
        &acme,
        Protocol::Http2,
    )
    .await;
    let mut globex_all =
        EventStream::open(addr, "/v1/events/stream", &globex, Protocol::Http2).await;
    for stream in [&mut acme_all, &mut acme_b2, &mut globex_all] {
        stream.connected().await;
    }
    let t = now_ms() - 30 * MINUTE;

    // acme's b1 first: acme's unfiltered stream gets it.
    let mut b1 = host.device("b1", "acme").await;
    send(&mut b1, "o1", 99.0, t).await;
    let (_, message) = acme_all.next_alert().await;
    assert_eq!(
        (&message["device"], &message["kind"]),
        (&json!("b1"), &json!("raise"))
    );

    // Then globex's own device of the same name: the first alert globex's stream gets is its
    // own, so acme's earlier one was never sent to it (one relay, in publication order).
    let mut globex_b1 = host.device("b1", "globex").await;
    send(&mut globex_b1, "o2", 91.0, t).await;
    let (_, message) = globex_all.next_alert().await;
    assert_eq!(
        (&message["device"], &message["kind"], &message["value"]),
        (&json!("b1"), &json!("raise"), &json!(91.0)),
        "globex's stream got another organisation's event first"
    );

    // acme's b2, a warning: the filtered stream's first alert is that one.
    let mut b2 = host.device("b2", "acme").await;
    send(&mut b2, "o3", 85.0, t).await;
    let (_, message) = acme_b2.next_alert().await;
    assert_eq!(
        (&message["device"], &message["severity"]),
        (&json!("b2"), &json!("warning"))
    );
    let (_, message) = acme_all.next_alert().await;
    assert_eq!(message["device"], "b2", "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_needs_a_valid_token_and_valid_filters() {
    let host = TestHost::start().await;
    let token = host.api_token("acme").await;
    let error =
        |body: &str| -> Json { serde_json::from_str::<Json>(body).unwrap()["error"].clone() };

    let (status, headers, body) = host
        .api_exchange(Method::GET, "/v1/events/stream", &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error(&body)["code"], "unauthenticated", "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(headers["content-type"], "application/json");

    let bad = [("authorization", "Bearer not-a-token")];
    let (status, body) = host
        .api_request(Method::GET, "/v1/events/stream", &bad)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error(&body)["code"], "invalid_token", "{body}");

    let authorization = format!("Bearer {token}");
    let good = [("authorization", authorization.as_str())];
    let (status, body) = host
        .api_request(Method::GET, "/v1/events/stream?severity=loud", &good)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error(&body)["code"], "invalid_parameter", "{body}");
    let (status, body) = host
        .api_request(Method::POST, "/v1/events/stream", &good)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_reconnects_after_redis_restarts_and_says_events_may_be_missing() {
    let (mut host, _rules) = host_with_rules().await;
    let token = host.api_token("acme").await;
    let mut stream = EventStream::open(
        host.host().api_addr(),
        "/v1/events/stream",
        &token,
        Protocol::Http1,
    )
    .await;
    stream.connected().await;
    let mut before = host.device("b1", "acme").await;
    let t = now_ms() - 30 * MINUTE;
    send(&mut before, "r1", 95.0, t).await;
    assert_eq!(stream.next_alert().await.1["device"], "b1");

    host.stop_redis();
    host.start_redis_again();
    // Once subscribed again the relay tells every stream that it may have missed events.
    let deadline = Instant::now() + STREAM_TIMEOUT;
    let notice = loop {
        assert!(Instant::now() < deadline, "no `lagged` notice in time");
        let sse = stream.next().await.expect("the stream survives the outage");
        if sse.event.as_deref() == Some("lagged") {
            break sse.json();
        }
        assert_eq!(sse.event, None, "no alert during the outage: {sse:?}");
    };
    assert_eq!(
        notice,
        json!({"reason": "relay_reconnected", "reread": "/v1/events"})
    );
    assert!(metric(&host, "weir_event_relay_reconnects_total").await >= 1.0);

    // Alerting's own Redis connection may need an attempt to come back: send until an alert
    // is raised (a held condition raises once, so at most one event arrives).
    let mut after = host.device("b2", "acme").await;
    let mut attempt = 0;
    eventually(
        "an alert for b2 after Redis came back",
        STREAM_TIMEOUT,
        Duration::from_millis(500),
        async || {
            send(
                &mut after,
                &format!("r2-{attempt}"),
                95.0,
                t + attempt * MINUTE,
            )
            .await;
            attempt += 1;
            let listed = listed_events(&host, &token).await;
            listed.iter().any(|event| event["device"] == "b2")
        },
    )
    .await;
    let (_, message) = stream.next_alert().await;
    assert_eq!(
        (&message["device"], &message["kind"]),
        (&json!("b2"), &json!("raise")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_stream_keeps_alive_and_ends_when_its_host_shuts_down() {
    let host = TestHost::start().await;
    let token = host.api_token("acme").await;
    let other = host.stack().another_host().await.unwrap();
    let mut stream = EventStream::open(
        other.api_addr(),
        "/v1/events/stream",
        &token,
        Protocol::Http1,
    )
    .await;
    stream.connected().await;
    // An idle stream says it is alive (every 15 s); a stream opened before the new host's
    // relay subscribed is told first that it may have missed events.
    let idle = loop {
        let sse = stream.next().await.expect("the stream stays open");
        if sse.event.as_deref() != Some("lagged") {
            break sse;
        }
    };
    assert_eq!(
        (idle.event, idle.comments),
        (None, vec!["keep-alive".to_string()])
    );
    // Meanwhile the relays pinged Redis (every 10 s) and stayed subscribed.
    assert_eq!(
        metric(&host, "weir_event_relay_reconnects_total").await,
        0.0
    );
    tokio::time::timeout(STREAM_TIMEOUT, other.shutdown())
        .await
        .expect("an open stream does not hold up the shutdown");
    assert!(stream.next().await.is_none(), "the stream ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_tokens_streams_end_and_a_token_has_few_streams() {
    let host = TestHost::start_with(|config| {
        config.server.token_cache_s = 1;
        config.server.event_streams_per_token = 2;
    })
    .await;
    let token = host.api_token("acme").await;
    let addr = host.host().api_addr();
    let mut streams = Vec::new();
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let mut stream = EventStream::open(addr, "/v1/events/stream", &token, protocol).await;
        stream.connected().await;
        streams.push(stream);
    }
    let authorization = format!("Bearer {token}");
    let (status, body) = host
        .api_request(
            Method::GET,
            "/v1/events/stream",
            &[("authorization", &authorization)],
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains(r#""code":"too_many_streams""#), "{body}");
    let other_token = host.api_token("acme").await;
    let mut other =
        EventStream::open(addr, "/v1/events/stream", &other_token, Protocol::Http1).await;
    other.connected().await;

    let id = host.storage().find_token(&token).await.unwrap().unwrap().id;
    assert!(host.storage().revoke_token(id).await.unwrap());
    let revoked_at = Instant::now();
    for stream in &mut streams {
        let end = loop {
            let sse = stream
                .next()
                .await
                .expect("an end event before the stream closes");
            if sse.event.is_some() {
                break sse;
            }
        };
        assert_eq!(end.event.as_deref(), Some("end"), "{end:?}");
        assert_eq!(end.json(), json!({"reason": "token_revoked"}));
        assert!(
            stream.next().await.is_none(),
            "the stream closes after `end`"
        );
    }
    assert!(
        revoked_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        revoked_at.elapsed()
    );
    assert_eq!(metric(&host, "weir_event_streams_revoked_total").await, 2.0);
    assert_eq!(
        metric(&host, "weir_event_streams").await,
        1.0,
        "another token's stream goes on"
    );
    let (status, _) = host
        .api_request(
            Method::GET,
            "/v1/events/stream",
            &[("authorization", &authorization)],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    drop(other);
}
