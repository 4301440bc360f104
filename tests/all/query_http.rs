//! What the host adds around the query component: strong ETags and 304s, `Vary:
//! Authorization`, its own answer cache (dropped by a late point before the point is
//! acknowledged), and HTTPS on the API listener when it has a certificate.

use std::sync::Arc;

use hyper::header::{CACHE_CONTROL, ETAG, VARY};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value as Json, json};
use weir::device_client::DeviceClient;

use crate::ingest::harness::{TestHost, batch, now_ms, ok, point};

/// Five minutes: the grid history ranges are aligned to.
const GRID_MS: i64 = 300_000;

/// `GET path` with the token and `extra` headers: status, headers and body.
async fn get(
    host: &TestHost,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend_from_slice(extra);
    host.api_exchange(Method::GET, path, &headers).await
}

fn header<'a>(headers: &'a HeaderMap, name: &hyper::header::HeaderName) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_carry_a_strong_etag_and_a_matching_if_none_match_gets_304() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-e1", "acme").await;
    let receipt = ok(&meter
        .submit(&batch("e1", vec![point("power", 2.5, now_ms() - 1000)]))
        .await);
    assert_eq!(receipt["accepted"], json!(1));
    let token = host.api_token("acme").await;
    let path = "/v1/devices/meter-e1/latest";

    let (status, headers, body) = get(&host, path, &token, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let etag = header(&headers, &ETAG).to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    assert_eq!(header(&headers, &VARY), "Authorization");

    let (again, again_headers, again_body) = get(&host, path, &token, &[]).await;
    assert_eq!(
        (again, again_body.as_str()),
        (StatusCode::OK, body.as_str())
    );
    assert_eq!(header(&again_headers, &ETAG), etag, "same answer, same tag");

    let (status, headers, body) = get(&host, path, &token, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(body, "", "a 304 has no body");
    assert_eq!(header(&headers, &ETAG), etag);

    // A new value makes a new answer: the old tag no longer matches.
    ok(&meter
        .submit(&batch("e2", vec![point("power", 3.5, now_ms())]))
        .await);
    let (status, headers, _) = get(&host, path, &token, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(header(&headers, &ETAG), etag);

    // Errors are never stored by caches.
    let (status, headers, _) = get(&host, "/v1/devices/nobody/latest", &token, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, &CACHE_CONTROL), "private, no-store");
}

/// The history answer of `path`, as `(ts, value)` pairs.
async fn history(host: &TestHost, path: &str, token: &str) -> (Vec<(i64, Json)>, HeaderMap) {
    let (status, headers, body) = get(host, path, token, &[]).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    let points = body["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points in {body}"))
        .iter()
        .map(|pair| (pair[0].as_i64().unwrap(), pair[1].clone()))
        .collect();
    (points, headers)
}

fn cache_count(host: &TestHost, outcome: &str) -> u64 {
    let metrics = host.host().metrics().encode();
    let prefix = format!("weir_query_answer_cache_total{{code=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_point_drops_the_cached_answer_of_its_range_before_it_is_acknowledged() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-e2", "acme").await;
    let to = (now_ms() / GRID_MS + 1) * GRID_MS;
    let from = to - 2 * 3_600_000;
    let (first, second) = (from + 60_000, from + 120_000);
    ok(&meter
        .submit(&batch("c1", vec![point("power", 1.5, first)]))
        .await);
    let acme = host.api_token("acme").await;
    let path = format!("/v1/devices/meter-e2/keys/power/history?from={from}&to={to}");
    let (points, headers) = history(&host, &path, &acme).await;
    assert_eq!(points, [(first, json!(1.5))]);
    assert!(
        header(&headers, &CACHE_CONTROL).contains("max-age"),
        "an open range may be cached briefly"
    );

    let hits = cache_count(&host, "hit");
    let (cached, _) = history(&host, &path, &acme).await;
    assert_eq!(cached, points);
    assert_eq!(
        cache_count(&host, "hit"),
        hits + 1,
        "served from the answer cache"
    );

    // A late point inside the range: once acknowledged, the next read includes it.
    ok(&meter
        .submit(&batch("c2", vec![point("power", 2.5, second)]))
        .await);
    let (points, _) = history(&host, &path, &acme).await;
    assert_eq!(points, [(first, json!(1.5)), (second, json!(2.5))]);
    // Another organisation never sees the cached answer.
    let globex = host.api_token("globex").await;
    let (status, _, _) = get(&host, &path, &globex, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A client that trusts only the test PKI's CA and presents no certificate.
fn api_client_tls(host: &TestHost) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(host.ca_pem().as_bytes())
        .expect("the CA certificate parses");
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_certificate_the_api_listener_speaks_https() {
    let host = TestHost::start_with(|config| {
        let pki = weir_pki::PkiPaths::new(config.tls.pki_dir.clone().unwrap());
        config.tls.api_cert = Some(pki.server_cert());
        config.tls.api_key = Some(pki.server_key());
    })
    .await;
    let mut meter = host.device("meter-e3", "acme").await;
    ok(&meter
        .submit(&batch("h1", vec![point("power", 4.0, now_ms() - 1000)]))
        .await);
    let token = host.api_token("acme").await;
    let addr = host.host().api_addr().to_string();

    let mut client = DeviceClient::connect(&addr, "127.0.0.1", api_client_tls(&host))
        .await
        .expect("a TLS handshake with the API listener");
    assert!(client.is_http2(), "h2 is negotiated");
    let health = client
        .request(Method::GET, "/healthz", Vec::new(), &[])
        .await
        .unwrap();
    assert_eq!(health.status, StatusCode::OK);
    let authorization = format!("Bearer {token}");
    let latest = client
        .request(
            Method::GET,
            "/v1/devices/meter-e3/latest",
            Vec::new(),
            &[("authorization", &authorization)],
        )
        .await
        .unwrap();
    assert_eq!(latest.status, StatusCode::OK);
    assert_eq!(latest.json()["keys"]["power"]["value"], json!(4.0));

    // Plain HTTP is not answered on a TLS listener.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let plain = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await;
    let answered = match plain {
        Ok((mut sender, connection)) => {
            tokio::spawn(connection);
            let request = hyper::Request::get("/healthz")
                .header("host", &addr)
                .body(http_body_util::Empty::new())
                .unwrap();
            matches!(sender.send_request(request).await, Ok(r) if r.status() == StatusCode::OK)
        }
        Err(_) => false,
    };
    assert!(!answered, "no plain HTTP answer from the HTTPS listener");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_role_logs_in_with_its_password_only() {
    const PASSWORD: &str = "a-long-password-for-weir-query";
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), format!("{PASSWORD}\n")).unwrap();
    let file = secret.path().to_owned();
    let host =
        TestHost::start_with(move |config| config.query.database_password_file = Some(file)).await;
    // From now on the role needs the password the host set at start.
    host.stack()
        .postgres
        .require_password("weir_query")
        .unwrap();
    let mut meter = host.device("m1", "acme").await;
    ok(&meter
        .submit(&batch("p1", vec![point("power", 2.5, now_ms() - 1000)]))
        .await);
    let token = host.api_token("acme").await;
    let (status, _, body) = get(&host, "/v1/devices", &token, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"m1\""), "{body}");

    let url = host
        .stack()
        .postgres
        .url()
        .replacen("postgres@", "weir_query@", 1);
    let connects = async |url: String| {
        tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_ok()
    };
    assert!(!connects(url.clone()).await, "no password, no login");
    assert!(
        !connects(url.replacen("weir_query@", "weir_query:wrong@", 1)).await,
        "a wrong password, no login"
    );
    assert!(
        connects(url.replacen("weir_query@", &format!("weir_query:{PASSWORD}@"), 1)).await,
        "the password the host set"
    );
}
