//! The listeners under hostile traffic: a connection that sends half a request or nothing at all
//! is closed within the header timeout, a body that trickles in gets `408`, an oversized body
//! `413` at once over HTTP/2 and HTTP/1.1, a listener full of connections closes the next one
//! at once, a device connection does not outlive its maximum age, a device over its connection
//! or request share gets `429` while others go on (and a connection over its share is closed),
//! silent sockets cannot take the handshake places new devices need, and a flood of made-up API tokens leaves
//! device submits unharmed. Each limit is a `server.*` setting counted in
//! `weir_listener_limits_hit_total` when it bites.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use weir_pki::ClientAlpn;
use weir_tests::poll::eventually;
use weir_tests::stack::SERVER_NAME;

use crate::ingest::harness::{TestHost, assert_error, batch, metric_value, now_ms, ok, point};

/// Generous bounds for "promptly" on a loaded 2-core machine.
const PROMPTLY: Duration = Duration::from_secs(10);

/// Reads until the peer closes (or errors); returns what came and how long it took.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
        received.extend_from_slice(&buffer[..read]);
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn half_a_request_or_none_is_closed_within_the_header_timeout() {
    let test = TestHost::start_with(|config| config.server.header_read_timeout_s = 2).await;
    let api = test.host().api_addr();

    let mut silent = TcpStream::connect(api).await.unwrap();
    let mut one_byte = TcpStream::connect(api).await.unwrap();
    one_byte.write_all(b"G").await.unwrap();
    // A keep-alive connection that got its answer and then says nothing more.
    let mut idle = TcpStream::connect(api).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: weir\r\n\r\n")
        .await
        .unwrap();

    let started = Instant::now();
    for (what, stream) in [
        ("a silent connection", &mut silent),
        ("one byte of a request", &mut one_byte),
        ("an idle keep-alive connection", &mut idle),
    ] {
        let (received, _) = tokio::time::timeout(PROMPTLY, read_until_closed(stream))
            .await
            .unwrap_or_else(|_| panic!("{what} is still open after {PROMPTLY:?}"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "{what} closed too soon: {took:?}"
        );
        if what.starts_with("an idle") {
            assert!(received.starts_with("HTTP/1.1 200"), "{received}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_in_gets_408() {
    let test = TestHost::start_with(|config| config.server.body_read_timeout_s = 2).await;
    let tls = test.enrol("m-slow", "acme", ClientAlpn::Http11).await;
    let mut upload = unfinished_submit(&test, tls).await;

    let (response, _) = tokio::time::timeout(PROMPTLY, read_until_closed(&mut upload))
        .await
        .expect("answered within the body timeout");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains(r#""code":"body_timeout""#), "{response}");
    let (_, metrics) = test.api_get("/metrics").await;
    let hits = metric_value(
        &metrics,
        r#"weir_listener_limits_hit_total{listener="devices",reason="body_timeout"}"#,
    );
    assert_eq!(hits, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_gets_413_at_once_over_http2_and_http11() {
    let test = TestHost::start().await;
    let huge = vec![b' '; 20 * 1024 * 1024];
    for alpn in [ClientAlpn::H2, ClientAlpn::Http11] {
        let id = format!("m-huge-{alpn:?}");
        let mut device = test.device_with_alpn(&id, "acme", alpn).await;
        let started = Instant::now();
        let answer = device
            .request(
                Method::POST,
                "/v1/submit",
                huge.clone(),
                &[("content-type", "application/json")],
            )
            .await;
        let message = assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
        assert!(message.contains("1048576"), "{message}");
        assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
        if alpn == ClientAlpn::H2 {
            // The connection stays usable for the next request.
            let stored = device
                .submit(&batch("after-413", vec![point("meter.power", 1, now_ms())]))
                .await;
            assert_eq!(ok(&stored)["accepted"], json!(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_listener_closes_the_next_connection_at_once() {
    let test = TestHost::start_with(|config| {
        config.server.max_connections = 3;
        config.server.header_read_timeout_s = 60;
    })
    .await;
    let api = test.host().api_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(api).await.unwrap());
    }
    // The listener accepts the fourth and closes it without reading.
    let mut extra = TcpStream::connect(api).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: weir\r\n\r\n")
        .await;
    let (received, _) = tokio::time::timeout(PROMPTLY, read_until_closed(&mut extra))
        .await
        .expect("closed at once");
    assert_eq!(received, "", "no answer on a connection over the cap");

    // One held connection closes: the next one is served.
    drop(held.pop());
    eventually(
        "a connection is served again",
        PROMPTLY,
        Duration::from_millis(100),
        async || {
            let Ok(mut stream) = TcpStream::connect(api).await else {
                return false;
            };
            if stream
                .write_all(b"GET /metrics HTTP/1.1\r\nhost: weir\r\nconnection: close\r\n\r\n")
                .await
                .is_err()
            {
                return false;
            }
            let (received, _) = read_until_closed(&mut stream).await;
            received.starts_with("HTTP/1.1 200")
                && received.contains(
                    r#"weir_listener_limits_hit_total{listener="api",reason="max_connections"}"#,
                )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_connection_is_closed_at_its_maximum_age() {
    let test = TestHost::start_with(|config| config.server.device_connection_max_age_s = 2).await;
    let tls = test.enrol("m-old", "acme", ClientAlpn::H2).await;
    let mut device = test.connect(tls).await.unwrap();
    let first = device
        .submit(&batch("young", vec![point("meter.power", 1, now_ms())]))
        .await
        .unwrap();
    assert_eq!(ok(&first)["accepted"], json!(1));

    eventually(
        "the old connection is closed",
        PROMPTLY,
        Duration::from_millis(200),
        async || {
            device
                .submit(&batch("old", vec![point("meter.power", 2, now_ms())]))
                .await
                .is_err()
        },
    )
    .await;
    let (_, metrics) = test.api_get("/metrics").await;
    let cut = metric_value(
        &metrics,
        r#"weir_device_connections_cut_total{code="max_age"}"#,
    );
    assert!(cut >= 1.0, "{metrics}");
    // The device reconnects and carries on.
    let mut again = test.device("m-old", "acme").await;
    let answer = again
        .submit(&batch(
            "reconnected",
            vec![point("meter.power", 3, now_ms())],
        ))
        .await;
    assert_eq!(ok(&answer)["accepted"], json!(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_character_anywhere_is_refused_with_a_code_never_a_5xx() {
    let test = TestHost::start().await;
    let mut device = test.device("m-nul", "acme").await;

    // A text value: the batch is refused, the same way on every resend (no poison batch).
    let poison = batch("nul-1", vec![point("meter.label", "a\u{0}b", now_ms())]);
    for _ in 0..2 {
        let refused = device.submit(&poison).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_text");
    }
    // Metadata strings: the entry is rejected, the others stored.
    let answer = device
        .send_json(
            Method::PUT,
            "/v1/metadata",
            &json!([
                {"key": "meter.power", "type": "f64", "name": "Po\u{0}wer"},
                {"key": "meter.energy", "type": "f64", "name": "Energy"}
            ]),
        )
        .await;
    let body = ok(&answer);
    assert_eq!(body["stored"], json!(1));
    assert_eq!(body["rejected"][0]["code"], json!("invalid_text"));

    // A path or query parameter: 400 before any database work, no internal text.
    let token = test.api_token("acme").await;
    let authorization = format!("Bearer {token}");
    for path in [
        "/v1/devices/%00/latest",
        "/v1/devices/m-nul/history?key=meter.power%00&from=0&to=1",
    ] {
        let (status, body) = test
            .api_request(Method::GET, path, &[("authorization", &authorization)])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains(r#""code":"invalid_path""#), "{body}");
        assert!(!body.to_lowercase().contains("postgres"), "{body}");
    }
}

/// Opens a raw HTTP/1.1 device connection with `tls` and starts a submit whose body never
/// finishes: a request in progress until the connection is dropped.
async fn unfinished_submit(
    test: &TestHost,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(test.host().device_addr()).await.unwrap();
    let mut upload = TlsConnector::from(tls)
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/submit HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{\"batch\":"
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.flush().await.unwrap();
    upload
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_over_its_connection_or_request_cap_gets_429_while_others_proceed() {
    let test = TestHost::start_with(|config| {
        config.server.device_max_connections = 3;
        config.server.device_max_requests = 2;
        config.ingest.device_rate_per_second = 10_000.0;
        config.ingest.device_burst = 10_000.0;
    })
    .await;
    let greedy = test.enrol("m-greedy", "acme", ClientAlpn::Http11).await;

    // Two requests in progress (bodies that never finish) use up the device's request share.
    let held = [
        unfinished_submit(&test, greedy.clone()).await,
        unfinished_submit(&test, greedy.clone()).await,
    ];
    let mut third = test.connect(greedy.clone()).await.unwrap();
    let busy = batch("busy", vec![point("meter.power", 1, now_ms())]);
    let refused = eventually_answer(&mut third, &busy, "too_many_requests").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let mut other = test.device("m-polite", "acme").await;
    let answer = other
        .submit(&batch("polite-1", vec![point("meter.power", 1, now_ms())]))
        .await;
    assert_eq!(ok(&answer)["accepted"], json!(1), "other devices proceed");

    // A fourth connection is over the connection cap: each of its requests is refused.
    let mut fourth = test.connect(greedy.clone()).await.unwrap();
    let answer = fourth.submit(&busy).await.unwrap();
    assert_error(
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
    );

    // ... and the connection is closed after that answer.
    eventually(
        "the connection over the cap is closed",
        PROMPTLY,
        Duration::from_millis(100),
        async || fourth.submit(&busy).await.is_err(),
    )
    .await;

    // The unfinished requests end with their connections: the device's share is back.
    drop(held);
    drop(fourth);
    eventually(
        "the greedy device is served again",
        PROMPTLY,
        Duration::from_millis(100),
        async || {
            third
                .submit(&busy)
                .await
                .is_ok_and(|answer| answer.status == StatusCode::OK)
        },
    )
    .await;
    let (_, metrics) = test.api_get("/metrics").await;
    for reason in ["device_requests", "device_connections"] {
        let series =
            format!(r#"weir_listener_limits_hit_total{{listener="devices",reason="{reason}"}}"#);
        assert!(
            metric_value(&metrics, &series) >= 1.0,
            "{reason}: {metrics}"
        );
    }
}

/// Submits `body` until the answer's error code is `code` (the host may not have counted the
/// unfinished requests yet); the answer.
async fn eventually_answer(
    device: &mut weir::device_client::DeviceClient,
    body: &serde_json::Value,
    code: &str,
) -> weir::device_client::DeviceResponse {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let answer = device.submit(body).await.unwrap();
        if answer.status != StatusCode::OK || Instant::now() > deadline {
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            assert!(text.contains(&format!(r#""code":"{code}""#)), "{text}");
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_made_up_tokens_leaves_device_submits_unharmed() {
    let test = TestHost::start_with(|config| {
        config.ingest.database_pool = 4;
        config.server.max_token_lookups = 1;
        config.ingest.device_rate_per_second = 10_000.0;
        config.ingest.device_burst = 10_000.0;
    })
    .await;
    let api = test.host().api_addr();
    // Token lookups are slow (the table is locked): without a bound, the flood's lookups would
    // hold every pool connection and the device's submits would wait out the pool.
    let (locker, connection) =
        tokio_postgres::connect(&test.stack().postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooders = tokio::task::JoinSet::new();
    for flooder in 0..32u64 {
        let stop = stop.clone();
        flooders.spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let token = format!("weir_{:064x}", flooder << 32 | n);
                let (status, body) = raw_get(api, "/v1/events", &format!("Bearer {token}")).await;
                assert!(
                    body.contains(r#""code":"invalid_token""#)
                        || body.contains(r#""code":"overloaded""#),
                    "{status}: {body}"
                );
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        });
    }
    let mut device = test.device("m-honest", "acme").await;
    let start = now_ms();
    for i in 0..30 {
        let answer = device
            .submit(&batch(
                &format!("honest-{i}"),
                vec![point("meter.power", i, start + i)],
            ))
            .await;
        assert_eq!(
            ok(&answer)["accepted"],
            json!(1),
            "batch {i} during the flood"
        );
    }
    // The flood went on past the lookup wait: callers beyond the bound were turned away.
    let series = r#"weir_listener_limits_hit_total{listener="api",reason="token_lookups"}"#;
    eventually(
        "the lookup bound bites",
        PROMPTLY,
        Duration::from_millis(100),
        async || {
            let (_, metrics) = test.api_get("/metrics").await;
            metrics.contains(series) && metric_value(&metrics, series) >= 1.0
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    locker.batch_execute("ROLLBACK").await.unwrap();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    while let Some(counts) = flooders.join_next().await {
        for (status, count) in counts.unwrap() {
            *statuses.entry(status).or_default() += count;
        }
    }
    assert!(statuses.get(&503).is_some_and(|&n| n > 0), "{statuses:?}");
    assert!(
        statuses.keys().all(|&s| s == 401 || s == 503),
        "{statuses:?}"
    );
}

/// `GET path` with `authorization` on a new plain HTTP/1.1 connection: status and body.
async fn raw_get(api: std::net::SocketAddr, path: &str, authorization: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(api).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: weir\r\nauthorization: {authorization}\r\n\
         connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (received, _) = read_until_closed(&mut stream).await;
    let status = received
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {received:?}"));
    (status, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_on_the_device_port_do_not_lock_new_devices_out() {
    let test = TestHost::start_with(|config| {
        config.server.max_handshakes = 4;
        config.server.header_read_timeout_s = 30;
    })
    .await;
    let devices = test.host().device_addr();
    let mut silent = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(devices).await.unwrap();
        // The first bytes of a TLS record header, and then nothing.
        stream.write_all(&[22, 3]).await.unwrap();
        silent.push(stream);
    }
    // They hold connection places only: a new device still gets a handshake.
    let mut device = test.device("m-fresh", "acme").await;
    let answer = device
        .submit(&batch("fresh", vec![point("meter.power", 1, now_ms())]))
        .await;
    assert_eq!(ok(&answer)["accepted"], json!(1));
    let (_, metrics) = test.api_get("/metrics").await;
    assert!(
        !metrics.contains(r#"reason="max_handshakes""#),
        "no handshake place was taken by a silent socket: {metrics}"
    );
    drop(silent);
}
