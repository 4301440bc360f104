//! A whole Weir host for one test: throw-away PostgreSQL and Redis, a PKI directory of its own,
//! the real validator component, and the device and API listeners on free ports. Devices talk
//! to it as in the field: mutual TLS, HTTP/2, certificates issued from that PKI directory.
//!
//! The stack is `weir_tests::stack::Stack`, shared with the benchmarks; its servers belong to
//! the [`TestHost`], so a test can stop and restart them to stage an outage, and everything is
//! torn down when it drops.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};
use weir::Config;
use weir::device_client::{DeviceClient, DeviceResponse};
use weir::host::Host;
use weir_pki::ClientAlpn;
use weir_storage::{DeviceRef, LatestValue, Storage};
use weir_tests::stack::{SERVER_NAME, Stack};

/// Validity of the device certificates tests enrol, in days.
const DEVICE_DAYS: u32 = 7;
/// Longest a device request may take before the test fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a refused connection may take to show its refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running host with its own servers and PKI, and a storage handle of the test's own.
pub struct TestHost {
    stack: Stack,
    storage: Storage,
}

impl TestHost {
    /// A host with the default configuration.
    pub async fn start() -> TestHost {
        Self::start_with(|_| {}).await
    }

    /// A host whose devices may submit back to back: no rate limit gets in the way.
    pub async fn unthrottled() -> TestHost {
        TestHost::start_with(|config| {
            config.ingest.device_rate_per_second = 10_000.0;
            config.ingest.device_burst = 10_000.0;
        })
        .await
    }

    /// A host whose configuration `tweak` adjusts before it starts.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestHost {
        let stack = Stack::start(tweak).await.expect("starting the Weir stack");
        let storage = Storage::connect(&stack.postgres.url(), 2, Duration::from_secs(5))
            .await
            .expect("connecting the test's own storage handle");
        TestHost { stack, storage }
    }

    /// The whole stack (servers, PKI, configuration).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The running host.
    pub fn host(&self) -> &Host {
        &self.stack.host
    }

    /// The CA directory, key included (the host has only `ca.pem` and its server key pair).
    pub fn pki_dir(&self) -> &Path {
        &self.stack.pki_dir
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.pki_dir().join("ca.pem")).unwrap()
    }

    /// Direct access to the host's database, for checks behind its back.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Enrols device `id` of `org` (`weir pki device`) and connects it over HTTP/2.
    pub async fn device(&self, id: &str, org: &str) -> Device {
        self.device_with_alpn(id, org, ClientAlpn::H2).await
    }

    /// Enrols device `id` of `org` and connects it offering only `alpn`.
    pub async fn device_with_alpn(&self, id: &str, org: &str, alpn: ClientAlpn) -> Device {
        let tls = self.enrol(id, org, alpn).await;
        self.device_at(self.host(), tls, DeviceRef::new(org, id))
            .await
    }

    /// Connects an enrolled device (`tls`) to `host`, which may be another host of the region.
    pub async fn device_at(
        &self,
        host: &Host,
        tls: Arc<rustls::ClientConfig>,
        device: DeviceRef,
    ) -> Device {
        let addr = host.device_addr().to_string();
        let client = tokio::time::timeout(
            REQUEST_TIMEOUT,
            DeviceClient::connect(&addr, SERVER_NAME, tls),
        )
        .await
        .expect("connecting in time")
        .expect("an enrolled device connects");
        Device { client, device }
    }

    /// Enrols device `id` of `org` (files in the CA directory, its certificate in the PKI
    /// ledger) and returns its TLS config, without connecting.
    pub async fn enrol(&self, id: &str, org: &str, alpn: ClientAlpn) -> Arc<rustls::ClientConfig> {
        let files = weir::ca::enrol_device(self.storage(), self.pki_dir(), org, id, DEVICE_DAYS)
            .await
            .expect("enrolling a device");
        weir_pki::device_client_config(
            &self.pki_dir().join("ca.pem"),
            &files.cert,
            &files.key,
            alpn,
        )
        .unwrap()
    }

    /// Revokes every certificate of device `id` of `org` (`weir pki revoke`): the ledger
    /// records it and a new CRL is published, which every host follows.
    pub async fn revoke(&self, org: &str, id: &str) -> weir::ca::Revocation {
        let ca = weir_pki::Ca::load(self.pki_dir()).unwrap();
        weir::ca::revoke_device(self.storage(), &ca, org, id)
            .await
            .expect("revoking a device")
    }

    /// A device TLS config from PEM (a certificate this test made itself), trusting our CA.
    pub fn tls_from_pem(&self, cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
        weir_pki::device_client_config_from_pem(&self.ca_pem(), cert_pem, key_pem, ClientAlpn::H2)
            .unwrap()
    }

    /// A device TLS config whose certificate (for `id` of `org`, valid now) comes from a CA
    /// the host does not trust.
    pub fn foreign_certificate(&self, id: &str, org: &str) -> Arc<rustls::ClientConfig> {
        let now = time::OffsetDateTime::now_utc();
        let stranger = weir_pki::Ca::generate_in_memory("Someone Else's CA")
            .unwrap()
            .issue_device_cert(id, org, now, now + time::Duration::days(1))
            .unwrap();
        self.tls_from_pem(&stranger.cert_pem, &stranger.key_pem)
    }

    /// Opens a device connection with `tls`.
    pub async fn connect(&self, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<DeviceClient> {
        self.connect_at(self.host(), tls).await
    }

    /// Opens a device connection with `tls` to `host` (any host, e.g. of another region).
    pub async fn connect_at(
        &self,
        host: &Host,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<DeviceClient> {
        let addr = host.device_addr().to_string();
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            DeviceClient::connect(&addr, SERVER_NAME, tls),
        )
        .await?
    }

    /// Whether a connection with `tls` is refused: the handshake fails, or (TLS 1.3 judges the
    /// client certificate after the client thinks it is done) its first request does. Any
    /// answer, even an error status, means the device got in.
    pub async fn is_refused(&self, tls: Arc<rustls::ClientConfig>) -> bool {
        self.is_refused_at(self.host(), tls).await
    }

    /// [`is_refused`](Self::is_refused) by `host`.
    pub async fn is_refused_at(&self, host: &Host, tls: Arc<rustls::ClientConfig>) -> bool {
        let attempt = async {
            let mut client = self.connect_at(host, tls).await?;
            let probe = batch("refusal-probe", vec![point("probe.k", 1, now_ms())]);
            client.submit(&probe).await
        };
        tokio::time::timeout(REFUSAL_TIMEOUT, attempt)
            .await
            .expect("a connection is either admitted or refused, promptly")
            .is_err()
    }

    /// How many points `device` has in PostgreSQL.
    pub async fn count(&self, device: &DeviceRef) -> i64 {
        self.storage().count_points(device).await.unwrap()
    }

    /// `device`'s latest values as cached in Redis.
    pub async fn latest_in_redis(&self, device: &DeviceRef) -> HashMap<String, LatestValue> {
        self.host().latest().get(device).await.unwrap()
    }

    /// `device`'s latest values as PostgreSQL has them.
    pub async fn latest_in_postgres(&self, device: &DeviceRef) -> HashMap<String, LatestValue> {
        self.storage().latest_from_postgres(device).await.unwrap()
    }

    /// `GET path` on the API listener over plain HTTP/1.1: status and body.
    pub async fn api_get(&self, path: &str) -> (StatusCode, String) {
        self.api_request(Method::GET, path, &[]).await
    }

    /// A new API token of `org` (its secret).
    pub async fn api_token(&self, org: &str) -> String {
        self.storage()
            .create_token(org, Some("tests"))
            .await
            .expect("creating an API token")
            .secret
    }

    /// `method path` with extra `headers` on the API listener over plain HTTP/1.1: status and
    /// body.
    pub async fn api_request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let (status, _, body) = self.api_exchange(method, path, headers).await;
        (status, body)
    }

    /// Like [`api_request`](Self::api_request), with the answer's headers too.
    pub async fn api_exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, hyper::HeaderMap, String) {
        api_exchange_at(self.host(), method, path, headers).await
    }
}

/// `GET path` on the API listener of `host` (any host, e.g. of another region): status and
/// body.
pub async fn api_get_at(host: &Host, path: &str) -> (StatusCode, String) {
    let (status, _, body) = api_exchange_at(host, Method::GET, path, &[]).await;
    (status, body)
}

/// The value of `series` (a metric's name with its labels, as `/metrics` writes them) in the
/// text `metrics`; panics if it is not there.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
        .parse()
        .unwrap()
}

/// A request to the API listener of `host` (any host, e.g. of another region) over plain
/// HTTP/1.1: status, headers and body.
pub async fn api_exchange_at(
    host: &Host,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    let addr = host.api_addr();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
        .await
        .expect("the API answers in time")
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

impl TestHost {
    /// Stops PostgreSQL (an outage).
    pub fn stop_postgres(&mut self) {
        tokio::task::block_in_place(|| self.stack.postgres.stop());
    }

    /// Starts PostgreSQL again, same port and data.
    pub fn start_postgres_again(&mut self) {
        tokio::task::block_in_place(|| self.stack.postgres.start_again())
            .expect("restarting PostgreSQL");
    }

    /// Stops Redis (an outage; a temporary Redis loses its data).
    pub fn stop_redis(&mut self) {
        tokio::task::block_in_place(|| self.stack.redis.stop());
    }

    /// Starts Redis again on the same port, empty.
    pub fn start_redis_again(&mut self) {
        tokio::task::block_in_place(|| self.stack.redis.start_again()).expect("restarting Redis");
    }
}

/// A connected device: its connection and the identity its certificate gives it.
pub struct Device {
    client: DeviceClient,
    device: DeviceRef,
}

impl Device {
    /// Who the host knows this device as.
    pub fn id(&self) -> &DeviceRef {
        &self.device
    }

    /// The underlying connection.
    pub fn client(&self) -> &DeviceClient {
        &self.client
    }

    /// `POST /v1/submit` with a JSON body.
    pub async fn submit(&mut self, body: &Json) -> DeviceResponse {
        self.send_json(Method::POST, "/v1/submit", body).await
    }

    /// A JSON request.
    pub async fn send_json(&mut self, method: Method, path: &str, body: &Json) -> DeviceResponse {
        answer(self.client.send_json(method, path, body)).await
    }

    /// A request with a raw body and extra headers.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> DeviceResponse {
        answer(self.client.request(method, path, body, headers)).await
    }
}

async fn answer(request: impl Future<Output = anyhow::Result<DeviceResponse>>) -> DeviceResponse {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .expect("the host answers in time")
        .expect("the request gets an answer")
}

/// The current time in unix milliseconds (the validator refuses points far from it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One point of a submit body.
pub fn point(key: &str, value: impl Into<Json>, ts: i64) -> Json {
    json!({"key": key, "value": value.into(), "ts": ts})
}

/// A submit body.
pub fn batch(id: &str, points: Vec<Json>) -> Json {
    json!({"batch": id, "points": points})
}

/// The `(index, key, code)` of every rejection in a receipt, in order.
pub fn rejections(receipt: &Json) -> Vec<(u64, String, String)> {
    receipt["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("a receipt lists its rejections: {receipt}"))
        .iter()
        .map(|r| {
            assert!(
                r["message"].as_str().is_some_and(|m| !m.is_empty()),
                "every rejection says why: {r}"
            );
            (
                r["index"].as_u64().unwrap(),
                r["key"].as_str().unwrap().to_string(),
                r["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts a 200 answer and returns its JSON body.
pub fn ok(response: &DeviceResponse) -> Json {
    assert_eq!(
        response.status,
        StatusCode::OK,
        "expected 200, got {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// Asserts an error answer of `status` whose body is exactly `{"error": {"code", "message"}}`
/// with `code`; returns the message.
pub fn assert_error(response: &DeviceResponse, status: StatusCode, code: &str) -> String {
    let body = response.json();
    assert_eq!(
        (response.status, body["error"]["code"].as_str()),
        (status, Some(code)),
        "unexpected answer: {body}"
    );
    let fields = |v: &Json| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(fields(&body), ["error"], "{body}");
    assert_eq!(fields(&body["error"]), ["code", "message"], "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_string();
    assert!(!message.is_empty(), "an error says what was wrong");
    message
}
