//! Renewal from a CSR: the new certificate carries the authenticated identity, whatever the
//! CSR claims, and works for the next handshake. Whether a certificate may renew is
//! [`check_renewal`], a pure function of what the PKI ledger knows of it (the ledger applies it
//! and records the renewal in one PostgreSQL transaction, tested with the ledger).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use weir_pki::{
    CertStatus, ClientAlpn, DeviceIdentity, RenewError, check_csr, check_renewal,
    identity_from_cert, renew,
};

use crate::support::{Pki, handshake, now};

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
    let (csr, key) = greedy_csr("meter-9999", "other-org");

    check_csr(&csr).expect("a well-formed CSR");

    let renewed = renew(&pki.ca(), &presented, &csr, 3).unwrap();

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
    assert_eq!(identity.serial_hex, renewed.serial_hex);
    assert_eq!(
        cert.validity().not_before.timestamp(),
        renewed.not_before.unix_timestamp()
    );
    assert_eq!(identity.not_after, renewed.not_after.unix_timestamp());
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "for the CSR's key"
    );
}

#[tokio::test]
async fn renewed_certificate_completes_a_handshake() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let presented = enrolled_identity(&pki, "meter-renewing");
    let (csr, key) = greedy_csr("meter-renewing", "acme");
    let renewed = renew(&pki.ca(), &presented, &csr, 7).unwrap();
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
    let (valid, _key) = greedy_csr("meter-garbage", "acme");
    let oversized = format!("{valid}{}", " ".repeat(weir_pki::renew::MAX_CSR_LEN));
    for garbage in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &oversized,
    ] {
        let err = renew(&pki.ca(), &presented, garbage, 7).unwrap_err();
        assert_eq!(err.code(), "invalid_csr", "{garbage:?}: {err}");
        let err = check_csr(garbage).unwrap_err();
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

    check_csr(&csr).expect("the CSR before tampering");

    let err = renew(&pki.ca(), &presented, &tampered, 7).unwrap_err();

    assert_eq!(err.code(), "invalid_csr", "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
    let err = check_csr(&tampered).unwrap_err();
    assert_eq!(err.code(), "invalid_csr", "{err}");
}

#[test]
fn a_renewal_the_ca_cannot_sign_is_renewal_failed() {
    let pki = Pki::new();
    let presented = enrolled_identity(&pki, "meter-odd");
    let (csr, _key) = greedy_csr("meter-odd", "acme");

    let err = renew(&pki.ca(), &presented, &csr, 0).unwrap_err();
    assert_eq!(err.code(), "renewal_failed", "{err}");
    assert!(matches!(err, RenewError::Issue(_)), "{err:?}");

    let mut unnamed = presented;
    unnamed.device = "no spaces allowed".into();
    let err = renew(&pki.ca(), &unnamed, &csr, 7).unwrap_err();
    assert_eq!(err.code(), "renewal_failed", "{err}");
}

/// A presented identity (the policy looks only at its device, organisation and serial).
fn presented(device: &str, org: &str) -> DeviceIdentity {
    DeviceIdentity {
        device: device.into(),
        org: org.into(),
        serial_hex: "4a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
        not_after: (now() + Duration::days(7)).unix_timestamp(),
    }
}

/// What the ledger records of a certificate of `presented` in good standing, issued (with the
/// usual backdating) at `issued_at`.
fn good_standing(
    presented: &DeviceIdentity,
    issued_at: OffsetDateTime,
    renewed: bool,
) -> CertStatus {
    CertStatus {
        org: presented.org.clone(),
        device: presented.device.clone(),
        not_before: issued_at - weir_pki::ca::BACKDATE,
        revoked: false,
        superseded: false,
        renewed,
    }
}

const INTERVAL: Duration = Duration::hours(1);

fn code(result: Result<(), RenewError>) -> &'static str {
    result.map_or_else(|e| e.code(), |()| "ok")
}

#[test]
fn a_certificate_the_ledger_does_not_know_cannot_renew() {
    let device = presented("meter-ghost", "acme");

    let err = check_renewal(None, &device, now(), Duration::ZERO).unwrap_err();

    assert_eq!(err.code(), "unknown_certificate", "{err}");
    assert!(err.to_string().contains(&device.serial_hex), "{err}");
}

#[test]
fn a_certificate_of_another_device_or_organisation_cannot_renew() {
    let acme = presented("meter-shared", "acme");
    let status = good_standing(&acme, now() - Duration::days(1), false);
    assert_eq!(
        code(check_renewal(Some(&status), &acme, now(), INTERVAL)),
        "ok"
    );

    // The same id in another organisation, or another id, presenting that serial.
    let mut globex = acme.clone();
    globex.org = "globex".into();
    let mut other_id = acme.clone();
    other_id.device = "meter-other".into();
    for impostor in [globex, other_id] {
        let err = check_renewal(Some(&status), &impostor, now(), INTERVAL).unwrap_err();
        assert_eq!(err.code(), "unknown_certificate", "{impostor:?}: {err}");
    }
}

#[test]
fn a_revoked_certificate_cannot_renew() {
    let device = presented("meter-cut-off", "acme");
    let status = CertStatus {
        revoked: true,
        ..good_standing(&device, now() - Duration::days(2), false)
    };

    let err = check_renewal(Some(&status), &device, now(), Duration::ZERO).unwrap_err();

    assert_eq!(err.code(), "device_revoked", "{err}");
    // Revocation wins over everything else the ledger says.
    let also_superseded = CertStatus {
        superseded: true,
        renewed: true,
        not_before: now(),
        ..status
    };
    assert_eq!(
        code(check_renewal(
            Some(&also_superseded),
            &device,
            now(),
            INTERVAL
        )),
        "device_revoked"
    );
}

#[test]
fn a_superseded_certificate_cannot_renew() {
    // Whoever still holds the key of a certificate that was renewed (a clone) is refused.
    let device = presented("meter-cloned", "acme");
    let status = CertStatus {
        superseded: true,
        ..good_standing(&device, now() - Duration::days(3), true)
    };

    let err = check_renewal(Some(&status), &device, now(), INTERVAL).unwrap_err();

    assert_eq!(err.code(), "certificate_superseded", "{err}");
}

#[test]
fn a_renewed_certificate_renews_again_only_after_the_interval() {
    let pki = Pki::new();
    let enrolled = enrolled_identity(&pki, "meter-eager");
    let (csr, _key) = greedy_csr("meter-eager", "acme");
    let renewed = renew(&pki.ca(), &enrolled, &csr, 7).unwrap();
    let der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let current = identity_from_cert(&der).unwrap();
    let status = CertStatus {
        org: current.org.clone(),
        device: current.device.clone(),
        not_before: renewed.not_before,
        revoked: false,
        superseded: false,
        renewed: true,
    };
    // When the renewal signed it: not_before is backdated.
    let issued_at = renewed.not_before + weir_pki::ca::BACKDATE;

    let err = check_renewal(Some(&status), &current, issued_at, INTERVAL).unwrap_err();
    assert_eq!(err.code(), "renewal_too_soon", "{err}");
    let RenewError::TooSoon {
        age_secs,
        retry_after_secs,
        ..
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!((age_secs, retry_after_secs), (0, 3_600));

    let ten_minutes_later = issued_at + Duration::minutes(10);
    match check_renewal(Some(&status), &current, ten_minutes_later, INTERVAL) {
        Err(RenewError::TooSoon {
            age_secs,
            retry_after_secs,
            ..
        }) => assert_eq!((age_secs, retry_after_secs), (600, 3_000)),
        other => panic!("{other:?}"),
    }
    let just_before = issued_at + INTERVAL - Duration::seconds(1);
    match check_renewal(Some(&status), &current, just_before, INTERVAL) {
        Err(RenewError::TooSoon {
            retry_after_secs, ..
        }) => assert_eq!(retry_after_secs, 1),
        other => panic!("{other:?}"),
    }

    check_renewal(Some(&status), &current, issued_at + INTERVAL, INTERVAL)
        .expect("renews once the interval has passed");
    check_renewal(
        Some(&status),
        &current,
        issued_at + Duration::days(2),
        INTERVAL,
    )
    .expect("and later");
}

#[test]
fn an_operator_issued_certificate_may_renew_at_once() {
    // A device replacing its factory key right after enrolment.
    let device = presented("meter-new", "acme");
    let status = good_standing(&device, now(), false);

    check_renewal(Some(&status), &device, now(), INTERVAL).expect("renews at once");

    // The same certificate had a renewal issued it: too soon.
    let renewed = CertStatus {
        renewed: true,
        ..status
    };
    assert_eq!(
        code(check_renewal(Some(&renewed), &device, now(), INTERVAL)),
        "renewal_too_soon"
    );
}
