//! The device PKI of a fleet: one ledger in PostgreSQL shared by every host of every region, a
//! CA key held only by the issuing service. A renewal through one host is known to all, a
//! revocation reaches all (open connections included), the same device id in two
//! organisations is two devices, and a CRL put back or gone stale is handled as documented.
//! How fast a revocation travels is measured by `cargo bench --bench pki`.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use weir::device_client::DeviceResponse;
use weir::host::Host;
use weir_pki::{ClientAlpn, identity_from_cert};
use weir_tests::poll::eventually;

use crate::ingest::harness::{TestHost, assert_error, batch, metric_value, now_ms, ok, point};
use crate::regions::start_region_b;

const ORG: &str = "acme";
/// Generous: a loaded 2-core machine is slow, not broken (the bench measures the real time).
const PROPAGATION: Duration = Duration::from_secs(15);
const EVERY: Duration = Duration::from_millis(100);

/// A CSR for a fresh key, and the key.
pub(crate) fn fresh_csr() -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (csr, key)
}

/// Asks `host` to renew the certificate of `tls`.
async fn renew_at(
    test: &TestHost,
    host: &Host,
    tls: Arc<rustls::ClientConfig>,
) -> (DeviceResponse, KeyPair) {
    let mut client = test.connect_at(host, tls).await.unwrap();
    let (csr, key) = fresh_csr();
    let response = client
        .send_json(Method::POST, "/v1/renew", &json!({ "csr": csr }))
        .await
        .unwrap();
    (response, key)
}

/// Renews through `host` and returns the new certificate's TLS config and serial.
async fn renewed_at(
    test: &TestHost,
    host: &Host,
    tls: Arc<rustls::ClientConfig>,
) -> (Arc<rustls::ClientConfig>, String) {
    let (response, key) = renew_at(test, host, tls).await;
    let body = ok(&response);
    let pem = body["certificate"].as_str().expect("a certificate");
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let serial = identity_from_cert(&der).unwrap().serial_hex;
    assert_eq!(body["serial"], json!(serial));
    (test.tls_from_pem(pem, &key.serialize_pem()), serial)
}

/// Whether an open connection still takes a batch.
async fn still_open(connection: &mut weir::device_client::DeviceClient) -> bool {
    let probe = batch("open-probe", vec![point("probe.open", 1, now_ms())]);
    connection.submit(&probe).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_through_one_host_is_known_to_every_host_of_both_regions() {
    let a = TestHost::start_with(|config| {
        config.region = "a".into();
        // Renewals back to back, each through another host.
        config.tls.renew_min_interval_s = 0;
    })
    .await;
    let a2 = a.stack().another_host().await.unwrap();
    let (b, _redis_b) = start_region_b(&a).await;
    let original = a.enrol("meter-roam", ORG, ClientAlpn::H2).await;

    let (first, _) = renewed_at(&a, a.host(), original.clone()).await;
    let (second, _) = renewed_at(&a, &a2, first.clone()).await;
    let (third, third_serial) = renewed_at(&a, &b, second.clone()).await;

    // Every older certificate is refused renewal, on every host, as a suspected clone.
    for (tls, host) in [
        (&original, &a2),
        (&original, &b),
        (&first, a.host()),
        (&first, &b),
        (&second, a.host()),
        (&second, &a2),
    ] {
        let (refused, _) = renew_at(&a, host, tls.clone()).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "certificate_superseded");
    }
    // The newest one connects and submits everywhere.
    for host in [a.host(), &a2, &b] {
        let mut client = a.connect_at(host, third.clone()).await.unwrap();
        assert!(still_open(&mut client).await);
    }
    let certificates = a
        .storage()
        .device_certificates(ORG, "meter-roam")
        .await
        .unwrap();
    assert_eq!(certificates.len(), 4, "{certificates:?}");
    let current: Vec<_> = certificates
        .iter()
        .filter(|c| c.superseded_by.is_none())
        .map(|c| c.serial.as_str())
        .collect();
    assert_eq!(current, [third_serial.as_str()]);
    let (_, metrics) = a.api_get("/metrics").await;
    assert!(
        metrics.contains("weir_renewals_refused_total{code=\"certificate_superseded\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_every_host_of_both_regions_open_connections_included() {
    let a = TestHost::start_with(|config| config.region = "a".into()).await;
    let a2 = a.stack().another_host().await.unwrap();
    let (b, _redis_b) = start_region_b(&a).await;
    let hosts = [a.host(), &a2, &b];
    let revoked = a.enrol("meter-gone", ORG, ClientAlpn::H2).await;
    let kept = a.enrol("meter-kept", ORG, ClientAlpn::H2).await;
    let mut open = Vec::new();
    for host in hosts {
        let mut connection = a.connect_at(host, revoked.clone()).await.unwrap();
        assert!(still_open(&mut connection).await);
        open.push(connection);
    }

    let revocation = a.revoke(ORG, "meter-gone").await;
    assert_eq!(revocation.newly_revoked.len(), 1);

    eventually(
        "every host refuses the revoked device and has cut its connection",
        PROPAGATION,
        EVERY,
        async || {
            for (host, connection) in hosts.iter().zip(open.iter_mut()) {
                if !a.is_refused_at(host, revoked.clone()).await || still_open(connection).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for host in hosts {
        assert!(
            !a.is_refused_at(host, kept.clone()).await,
            "the other device still gets in"
        );
        let (status, metrics) = crate::ingest::harness::api_get_at(host, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let number = metric_value(&metrics, "weir_device_crl_number");
        assert_eq!(number, revocation.crl_number as f64, "{metrics}");
        // The open connection, and any refusal probe that got in just before the new CRL.
        let cut = metric_value(
            &metrics,
            "weir_device_connections_cut_total{code=\"revoked\"}",
        );
        assert!(cut >= 1.0, "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_device_leaves_the_same_id_in_another_organisation_alone() {
    let host = TestHost::start().await;
    let acme = host.enrol("meter-1", "acme", ClientAlpn::H2).await;
    let globex = host.enrol("meter-1", "globex", ClientAlpn::H2).await;

    let revocation = host.revoke("acme", "meter-1").await;

    eventually(
        "acme's meter-1 is refused",
        PROPAGATION,
        EVERY,
        async || host.is_refused(acme.clone()).await,
    )
    .await;
    assert!(
        !host.is_refused(globex.clone()).await,
        "globex's meter-1 gets in"
    );
    let globex_certs = host
        .storage()
        .device_certificates("globex", "meter-1")
        .await
        .unwrap();
    assert!(globex_certs.iter().all(|c| c.revoked_at.is_none()));
    assert_eq!(revocation.newly_revoked.len(), 1);
    let (renewed, _) = renew_at(&host, host.host(), globex).await;
    ok(&renewed);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_crl_put_back_is_ignored_and_an_expired_one_refuses_every_device() {
    let host = TestHost::start_with(|config| {
        // The issuing service must not re-sign the expired CRL during the test.
        config.tls.crl_refresh_minutes = 100_000;
    })
    .await;
    let control = host.enrol("meter-control", ORG, ClientAlpn::H2).await;
    let gone = host.enrol("meter-gone", ORG, ClientAlpn::H2).await;
    let before = host.storage().current_crl().await.unwrap().unwrap();
    let revocation = host.revoke(ORG, "meter-gone").await;
    eventually(
        "the host installs the new CRL",
        PROPAGATION,
        EVERY,
        async || {
            let number = metric_value(&host.api_get("/metrics").await.1, "weir_device_crl_number");
            number == revocation.crl_number as f64
        },
    )
    .await;

    // The CRL before the revocation, put back in the ledger: the host keeps the newer one.
    put_crl(&host, before.number, &before.pem).await;
    tokio::time::sleep(weir::pki_follower::CHECK_INTERVAL * 2).await;
    let (_, metrics) = host.api_get("/metrics").await;
    let number = metric_value(&metrics, "weir_device_crl_number");
    assert_eq!(number, revocation.crl_number as f64, "the newer CRL stays");
    assert!(host.is_refused(gone.clone()).await, "the revocation stands");
    assert!(!host.is_refused(control.clone()).await);

    // A CRL past its nextUpdate (signed eight days ago, valid seven): by default every device
    // is refused and the alarm is raised.
    let ca = weir_pki::Ca::load(host.pki_dir()).unwrap();
    let signed_at = weir_pki::ca::now() - time::Duration::days(8);
    let expired = weir_pki::sign_crl(&ca, revocation.crl_number + 1, [], signed_at).unwrap();
    put_crl(&host, revocation.crl_number + 1, &expired.pem).await;
    eventually(
        "the expired CRL raises the alarm",
        PROPAGATION,
        EVERY,
        // Read as a value: the metric's HELP text also reads "weir_device_crl_expired 1 ...".
        async || metric_value(&host.api_get("/metrics").await.1, "weir_device_crl_expired") == 1.0,
    )
    .await;
    assert!(
        host.is_refused(control.clone()).await,
        "policy refuse: nobody gets in"
    );

    // A fresh CRL from the issuing side ends it.
    weir::ca::publish_crl(host.storage(), &ca).await.unwrap();
    eventually("the alarm clears", PROPAGATION, EVERY, async || {
        metric_value(&host.api_get("/metrics").await.1, "weir_device_crl_expired") == 0.0
    })
    .await;
    assert!(!host.is_refused(control).await);
}

/// Writes a CRL into the ledger behind the issuing service's back and announces it.
async fn put_crl(host: &TestHost, number: u64, pem: &str) {
    let (client, connection) =
        tokio_postgres::connect(&host.stack().config.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let number = i64::try_from(number).unwrap();
    client
        .execute("UPDATE pki_crl SET number = $1, pem = $2", &[&number, &pem])
        .await
        .unwrap();
    client
        .execute(
            "SELECT pg_notify('weir_pki', $1)",
            &[&format!("crl:{number}")],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renewals_with_one_certificate_issue_exactly_one_even_with_two_issuers() {
    let a = TestHost::start().await;
    let a2 = a.stack().another_host().await.unwrap();
    // A second issuing service on the same ledger: they share the queue.
    let config = &a.stack().config;
    let _second_issuer = weir::ca::Signer::new(
        a.stack().ledger().await.unwrap(),
        weir_pki::Ca::load(a.pki_dir()).unwrap(),
        config.tls.renew_days,
        Duration::from_secs(config.tls.renew_min_interval_s),
        Duration::from_secs(config.tls.crl_refresh_minutes * 60),
    )
    .unwrap()
    .spawn(config.database_url.clone())
    .await
    .unwrap();
    let tls = a.enrol("meter-twin", ORG, ClientAlpn::H2).await;

    let attempts = (0..8).map(|n| {
        let host = if n % 2 == 0 { a.host() } else { &a2 };
        renew_at(&a, host, tls.clone())
    });
    let answers = futures_util::future::join_all(attempts).await;

    let issued = answers
        .iter()
        .filter(|(answer, _)| answer.status == StatusCode::OK)
        .count();
    assert_eq!(issued, 1, "exactly one renewal with one certificate");
    for (answer, _) in answers.iter().filter(|(a, _)| a.status != StatusCode::OK) {
        assert_error(answer, StatusCode::FORBIDDEN, "certificate_superseded");
    }
    let certificates = a
        .storage()
        .device_certificates(ORG, "meter-twin")
        .await
        .unwrap();
    assert_eq!(certificates.len(), 2, "{certificates:?}");
}
