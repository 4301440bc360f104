//! `POST /v1/renew`: a device phones home with a CSR and gets a certificate for the identity it
//! authenticated with, never the one its CSR claims; a revoked device gets none.

use std::time::Duration;

use hyper::{Method, StatusCode};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use weir::device_client::DeviceResponse;
use weir_pki::identity_from_cert;
use weir_tests::poll::eventually;

use super::harness::{Device, TestHost, assert_error, batch, now_ms, ok, point};

const ORG: &str = "acme";

/// A CSR for a new key, claiming another identity than the device's.
fn csr_claiming(cn: &str, org: &str) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key)
}

async fn renew(device: &mut Device, csr: &str) -> DeviceResponse {
    device
        .send_json(Method::POST, "/v1/renew", &json!({"csr": csr}))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_renews_a_certificate_for_the_presented_identity_until_revoked() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-renew", ORG).await;
    let (csr, key) = csr_claiming("meter-impostor", "other-org");

    let renewed = ok(&renew(&mut meter, &csr).await);

    let cert_pem = renewed["certificate"].as_str().expect("a PEM certificate");
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let identity = identity_from_cert(&der).unwrap();
    assert_eq!(
        (identity.device.as_str(), identity.org.as_str()),
        ("meter-renew", ORG),
        "the certificate names the presenting device, not the CSR's subject"
    );
    let tls = host.tls_from_pem(cert_pem, &key.serialize_pem());
    let mut renewed_meter = host.connect(tls.clone()).await.unwrap();
    let answer = renewed_meter
        .submit(&batch(
            "after-renewal",
            vec![point("meter.power", 1.0, now_ms())],
        ))
        .await
        .unwrap();
    assert_eq!(ok(&answer)["accepted"], json!(1));
    assert_eq!(host.count(meter.id()).await, 1, "stored as meter-renew");

    host.revoke(ORG, "meter-renew").await;

    // Renewal is refused at once (the ledger says revoked). Until the host installs the new CRL the
    // connection opened before the revocation still stands; after, it is cut.
    let (csr, _key) = csr_claiming("meter-renew", ORG);
    match renewed_meter
        .send_json(Method::POST, "/v1/renew", &json!({"csr": csr}))
        .await
    {
        Ok(refused) => {
            assert_error(&refused, StatusCode::FORBIDDEN, "device_revoked");
        }
        Err(cut) => eprintln!("the connection was already cut: {cut:#}"),
    }
    // New connections with the renewed certificate are refused once the CRL is re-read.
    eventually(
        "the renewed certificate is refused",
        Duration::from_secs(6),
        Duration::from_millis(100),
        async || host.is_refused(tls.clone()).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_certificate_cannot_renew_and_renewals_wait_for_their_interval() {
    let host = TestHost::start().await;
    let mut original = host.device("meter-cloned", ORG).await;
    let (csr, key) = csr_claiming("meter-cloned", ORG);
    let renewed = ok(&renew(&mut original, &csr).await);

    // Whoever still holds the original key (a clone, or the device's old copy) is refused, and
    // the host counts a suspected clone.
    let (csr, _key) = csr_claiming("meter-cloned", ORG);
    let refused = renew(&mut original, &csr).await;
    let message = assert_error(&refused, StatusCode::FORBIDDEN, "certificate_superseded");
    assert!(message.contains("superseded"), "{message}");
    let (_, metrics) = host.api_get("/metrics").await;
    assert!(
        metrics.contains("weir_renewals_refused_total{code=\"certificate_superseded\"} 1"),
        "{metrics}"
    );

    // The renewed certificate renews too, but not again within the interval (default 600 s).
    let cert_pem = renewed["certificate"].as_str().unwrap();
    let mut current = host
        .connect(host.tls_from_pem(cert_pem, &key.serialize_pem()))
        .await
        .unwrap();
    let (csr, _key) = csr_claiming("meter-cloned", ORG);
    let too_soon = current
        .send_json(Method::POST, "/v1/renew", &json!({"csr": csr}))
        .await
        .unwrap();
    assert_error(&too_soon, StatusCode::TOO_MANY_REQUESTS, "renewal_too_soon");
    let wait = too_soon.retry_after().expect("Retry-After");
    assert!((500..=600).contains(&wait), "{wait}");
}
