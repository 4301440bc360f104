//! Renewal from a CSR: the new certificate carries the authenticated identity, whatever the
//! CSR claims, and works for the next handshake.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::Duration;
use weir_pki::{ClientAlpn, DeviceIdentity, identity_from_cert, renew, renew_recorded};

use crate::support::{Pki, handshake};

/// Enrols `id` and returns the identity its certificate carries, as the endpoint would see it.
fn enrolled_identity(pki: &Pki, id: &str) -> DeviceIdentity {
    let files = weir_pki::issue_device(pki.path(), id, "acme", 7).unwrap();
    let der = CertificateDer::from_pem_file(&files.cert).unwrap();
    identity_from_cert(&der).unwrap()
}

/// A CSR for a new key that claims to be `cn` of `org`, and asks to be a CA server too.
fn greedy_csr(cn: &str, org: &str) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key)
}

#[test]
fn renewed_certificate_carries_the_presented_identity_not_the_csr_subject() {
    let pki = Pki::new();
    let presented = enrolled_identity(&pki, "meter-0007");
    let (csr, _key) = greedy_csr("meter-9999", "other-org");

    let renewed =
        renew_recorded(pki.path(), &pki.ca(), &presented, &csr, 3, Duration::ZERO).unwrap();

    let der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let identity = identity_from_cert(&der).unwrap();
    assert_eq!(identity.device, "meter-0007");
    assert_eq!(identity.org, "acme");
    assert_ne!(identity.serial_hex, presented.serial_hex);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!cert.is_ca(), "CSR's CA request ignored");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth, "clientAuth only");
    assert!(
        cert.subject_alternative_name().unwrap().is_none(),
        "no SANs copied"
    );
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(lifetime <= 3 * 86_400 + 600, "short-lived: {lifetime}s");

    let index = weir_pki::CertIndex::load(&pki.path().join("index.json")).unwrap();
    let recorded = index.find_serial(&identity.serial_hex).expect("recorded");
    assert_eq!(
        (recorded.id.as_str(), recorded.org.as_str()),
        ("meter-0007", "acme")
    );
}

#[tokio::test]
async fn renewed_certificate_completes_a_handshake() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let presented = enrolled_identity(&pki, "meter-renewing");
    let (csr, key) = greedy_csr("meter-renewing", "acme");
    let renewed =
        renew_recorded(pki.path(), &pki.ca(), &presented, &csr, 7, Duration::ZERO).unwrap();
    let client = weir_pki::device_client_config_from_pem(
        &pki.ca_pem(),
        &renewed.cert_pem,
        &key.serialize_pem(),
        ClientAlpn::H2,
    )
    .unwrap();

    let (outcome, accepted) = handshake(&mut server, client).await;

    assert!(outcome.is_admitted(), "{outcome:?}");
    let identity = accepted.unwrap().identity;
    assert_eq!(identity.device, "meter-renewing");
    assert_eq!(identity.serial_hex, renewed.serial_hex);
}

#[test]
fn garbage_csr_is_invalid_csr() {
    let pki = Pki::new();
    let presented = enrolled_identity(&pki, "meter-garbage");
    for garbage in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = renew_recorded(
            pki.path(),
            &pki.ca(),
            &presented,
            garbage,
            7,
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_csr", "{garbage:?}: {err}");
    }
}

#[test]
fn csr_with_a_broken_signature_is_invalid_csr() {
    let pki = Pki::new();
    let presented = enrolled_identity(&pki, "meter-forger");
    let (csr, _key) = greedy_csr("meter-forger", "acme");
    // Change one base64 character near the end, inside the signature value.
    let mut lines: Vec<String> = csr.lines().map(str::to_owned).collect();
    let last_body = lines.len() - 2;
    let (line, at) = if lines[last_body].len() >= 24 {
        (last_body, 10)
    } else {
        (last_body - 1, 50)
    };
    let flipped = if lines[line].as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[line].replace_range(at..at + 1, flipped);
    let tampered = lines.join("\n") + "\n";

    let err = renew(&pki.ca(), &presented, &tampered, 7).unwrap_err();

    assert_eq!(err.code(), "invalid_csr", "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn revoked_certificate_cannot_renew() {
    let pki = Pki::new();
    let presented = enrolled_identity(&pki, "meter-cut-off");
    weir_pki::revoke_device(pki.path(), "acme", "meter-cut-off").unwrap();
    let (csr, _key) = greedy_csr("meter-cut-off", "acme");

    let err =
        renew_recorded(pki.path(), &pki.ca(), &presented, &csr, 7, Duration::ZERO).unwrap_err();

    assert_eq!(err.code(), "device_revoked", "{err}");
}

#[test]
fn certificate_missing_from_the_index_cannot_renew() {
    let pki = Pki::new();
    let now = time::OffsetDateTime::now_utc();
    let issued = pki
        .ca()
        .issue_device_cert("meter-ghost", "acme", now, now + time::Duration::days(1))
        .unwrap();
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let presented = identity_from_cert(&der).unwrap();
    let (csr, _key) = greedy_csr("meter-ghost", "acme");

    let err =
        renew_recorded(pki.path(), &pki.ca(), &presented, &csr, 7, Duration::ZERO).unwrap_err();

    assert_eq!(err.code(), "unknown_certificate", "{err}");
}

#[test]
fn concurrent_renewals_with_one_certificate_issue_exactly_one() {
    let pki = Pki::new();
    let presented = enrolled_identity(&pki, "meter-busy");
    let ca = pki.ca();
    let outcomes: Vec<Result<String, &'static str>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let (csr, _key) = greedy_csr("meter-busy", "acme");
                    renew_recorded(pki.path(), &ca, &presented, &csr, 7, Duration::ZERO)
                        .map(|signed| signed.serial_hex)
                        .map_err(|err| err.code())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let issued: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(issued.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|code| *code == "certificate_superseded"),
        "{outcomes:?}"
    );
    let index = weir_pki::CertIndex::load(&pki.path().join("index.json")).unwrap();
    assert_eq!(index.certificates.len(), 2);
    let old = index.find_serial(&presented.serial_hex).unwrap();
    assert_eq!(old.superseded_by.as_ref(), Some(issued[0]));
    let new = index.find_serial(issued[0]).unwrap();
    assert!(new.superseded_by.is_none() && new.revoked_at.is_none());
}

#[test]
fn a_superseded_certificate_cannot_renew_but_its_successor_can() {
    let pki = Pki::new();
    let original = enrolled_identity(&pki, "meter-cloned");
    let (csr, _key) = greedy_csr("meter-cloned", "acme");
    let renewed =
        renew_recorded(pki.path(), &pki.ca(), &original, &csr, 7, Duration::ZERO).unwrap();

    // Whoever still holds the original key (a clone) is refused from now on.
    let (csr, _key) = greedy_csr("meter-cloned", "acme");
    let err =
        renew_recorded(pki.path(), &pki.ca(), &original, &csr, 7, Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), "certificate_superseded", "{err}");

    let der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let successor = identity_from_cert(&der).unwrap();
    let (csr, _key) = greedy_csr("meter-cloned", "acme");
    renew_recorded(pki.path(), &pki.ca(), &successor, &csr, 7, Duration::ZERO).unwrap();
}

#[test]
fn a_renewal_sooner_than_the_interval_after_the_last_renewal_is_refused_with_the_wait() {
    let pki = Pki::new();
    let enrolled = enrolled_identity(&pki, "meter-eager");
    let interval = Duration::hours(1);
    // The operator's certificate renews at once (a device replacing its factory key).
    let (csr, _key) = greedy_csr("meter-eager", "acme");
    let renewed = renew_recorded(pki.path(), &pki.ca(), &enrolled, &csr, 7, interval).unwrap();
    let der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let current = identity_from_cert(&der).unwrap();

    let (csr, _key) = greedy_csr("meter-eager", "acme");
    let err = renew_recorded(pki.path(), &pki.ca(), &current, &csr, 7, interval).unwrap_err();

    assert_eq!(err.code(), "renewal_too_soon", "{err}");
    match err {
        weir_pki::RenewError::TooSoon {
            retry_after_secs, ..
        } => assert!(
            (3_000..=3_600).contains(&retry_after_secs),
            "{retry_after_secs}"
        ),
        other => panic!("{other:?}"),
    }
    let index = weir_pki::CertIndex::load(&pki.path().join("index.json")).unwrap();
    assert_eq!(index.certificates.len(), 2, "nothing more issued");
}

#[test]
fn the_same_device_id_in_another_organisation_cannot_renew_with_this_certificate() {
    let pki = Pki::new();
    let acme = enrolled_identity(&pki, "meter-shared");
    let mut impostor = acme.clone();
    impostor.org = "globex".into();
    let (csr, _key) = greedy_csr("meter-shared", "globex");

    let err =
        renew_recorded(pki.path(), &pki.ca(), &impostor, &csr, 7, Duration::ZERO).unwrap_err();

    assert_eq!(err.code(), "unknown_certificate", "{err}");
}
