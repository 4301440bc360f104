//! A device is its certificate: only a valid, unrevoked certificate from the operator's CA gets
//! in, and what it writes lands under the identity that certificate names, whatever the body says.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use weir_pki::{Ca, ClientAlpn};
use weir_storage::DeviceRef;
use weir_tests::poll::eventually;

use super::harness::{TestHost, batch, metric_value, now_ms, ok, point};

const ORG: &str = "acme";

/// How long a revocation may take to reach new connections (the host re-reads the CRL every 2 s).
const REVOCATION_DEADLINE: Duration = Duration::from_secs(6);

/// A certificate for `id` from the test CA, valid between the given offsets from now.
fn certificate_valid(
    host: &TestHost,
    id: &str,
    from: time::Duration,
    until: time::Duration,
) -> Arc<rustls::ClientConfig> {
    let now = OffsetDateTime::now_utc();
    let issued = Ca::load(host.pki_dir())
        .unwrap()
        .issue_device_cert(id, ORG, now + from, now + until)
        .unwrap();
    host.tls_from_pem(&issued.cert_pem, &issued.key_pem)
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_refuses_a_device_without_a_client_certificate() {
    let host = TestHost::start().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(Ca::load(host.pki_dir()).unwrap().cert_der().clone())
        .unwrap();
    let mut anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];

    assert!(host.is_refused(Arc::new(anonymous)).await);
    assert!(
        !host
            .is_refused(host.enrol("meter-control", ORG, ClientAlpn::H2).await)
            .await,
        "an enrolled device gets in, so the refusal was about the certificate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_refuses_a_certificate_from_another_ca() {
    let host = TestHost::start().await;

    assert!(
        host.is_refused(host.foreign_certificate("meter-stranger", ORG))
            .await
    );
    assert_eq!(host.count(&DeviceRef::new(ORG, "meter-stranger")).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_refuses_expired_and_not_yet_valid_certificates() {
    let host = TestHost::start().await;
    let day = time::Duration::days(1);
    let expired = certificate_valid(&host, "meter-expired", -day * 10, -day);
    let early = certificate_valid(&host, "meter-early", day, day * 10);
    let current = certificate_valid(&host, "meter-current", -day, day);

    assert!(host.is_refused(expired).await, "expired");
    assert!(host.is_refused(early).await, "not yet valid");
    assert!(!host.is_refused(current).await, "the same CA, valid now");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_expiring_while_connected_cuts_its_connection() {
    let host = TestHost::start().await;
    // Valid for a few seconds more (X.509 times are whole seconds).
    let expiring = certificate_valid(
        &host,
        "meter-expiring",
        -time::Duration::days(1),
        time::Duration::seconds(4),
    );
    let mut open = host.connect(expiring.clone()).await.unwrap();
    let first = open
        .submit(&batch(
            "while-valid",
            vec![point("meter.power", 1.0, now_ms())],
        ))
        .await
        .unwrap();
    assert!(first.status.is_success(), "{first:?}");

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut attempt = 0;
    while open
        .submit(&batch(
            &format!("after-{attempt}"),
            vec![point("meter.power", 2.0, now_ms() + attempt)],
        ))
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection outlived its certificate"
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(host.is_refused(expiring).await, "and it cannot come back");
    let (_, metrics) = host.api_get("/metrics").await;
    let cut = metric_value(
        &metrics,
        "weir_device_connections_cut_total{code=\"expired\"}",
    );
    // The open connection, and a refusal probe that may have got in within the last second.
    assert!(cut >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_refuses_new_connections_of_a_revoked_device_and_cuts_its_open_ones() {
    let host = TestHost::start().await;
    let revoked = host.enrol("meter-revoked", ORG, ClientAlpn::H2).await;
    let other = host.enrol("meter-other", ORG, ClientAlpn::H2).await;
    assert!(
        !host.is_refused(revoked.clone()).await,
        "in before revocation"
    );
    let mut open = host.connect(revoked.clone()).await.unwrap();
    let mut other_open = host.connect(other.clone()).await.unwrap();
    let submit = async |client: &mut weir::device_client::DeviceClient, id: &str| {
        client
            .submit(&batch(id, vec![point("meter.power", 1.0, now_ms())]))
            .await
    };
    assert!(
        submit(&mut open, "before")
            .await
            .unwrap()
            .status
            .is_success()
    );

    host.revoke(ORG, "meter-revoked").await;

    eventually(
        "the revoked device is refused",
        REVOCATION_DEADLINE,
        Duration::from_millis(100),
        async || host.is_refused(revoked.clone()).await,
    )
    .await;
    // Its connection opened before the revocation is cut as well (the same reload).
    let deadline = std::time::Instant::now() + REVOCATION_DEADLINE;
    let mut attempt = 0;
    while submit(&mut open, &format!("after-{attempt}")).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked device's open connection still takes batches"
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = host.api_get("/metrics").await;
    // The open connection, and any refusal probe that got in just before the new CRL.
    let cut = metric_value(
        &metrics,
        "weir_device_connections_cut_total{code=\"revoked\"}",
    );
    assert!(cut >= 1.0, "{metrics}");
    assert!(!host.is_refused(other).await, "other devices still get in");
    let answer = submit(&mut other_open, "other-after").await.unwrap();
    assert!(
        answer.status.is_success(),
        "and keep their open connections"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_stores_points_under_the_certificate_identity_only() {
    let host = TestHost::start().await;
    let mut a = host.device("meter-a", ORG).await;
    let mut b = host.device("meter-b", ORG).await;
    let mut body = batch("shared-id", vec![point("meter.power", 5.0, now_ms())]);
    // A body naming another device in every way a naive parser might honour.
    body["device"] = json!("meter-b");
    body["org"] = json!(ORG);
    body["points"][0]["device"] = json!("meter-b");

    let answer = a.submit(&body).await;

    assert_eq!(host.count(b.id()).await, 0, "nothing reaches meter-b");
    assert!(host.latest_in_redis(b.id()).await.is_empty());
    if answer.status.is_success() {
        assert_eq!(host.count(a.id()).await, 1, "stored under meter-a");
    }
    // Batch ids belong to their device: meter-b's "shared-id" is a batch of its own.
    let own = ok(&b
        .submit(&batch(
            "shared-id",
            vec![point("meter.power", 7.0, now_ms())],
        ))
        .await);
    assert_eq!(own["duplicate"], json!(false));
    assert_eq!(host.count(b.id()).await, 1);
}
