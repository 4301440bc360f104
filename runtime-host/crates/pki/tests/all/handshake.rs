//! Who gets through the device endpoint's mutual TLS, and who does not.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig, Error, RootCertStore};
use weir_pki::{Ca, ClientAlpn};

use crate::support::{Pki, connect, crl_signed_by, days, handshake, now};

fn assert_refused_for(
    outcome: &crate::support::Outcome,
    server: &Result<crate::support::Accepted, Error>,
    expected: impl Fn(&Error) -> bool,
) {
    assert!(!outcome.is_admitted(), "client was admitted: {outcome:?}");
    match server {
        Ok(accepted) => panic!("server accepted {accepted:?}"),
        Err(e) => assert!(expected(e), "unexpected server error: {e:?}"),
    }
}

fn cert_error(e: &Error, expected: impl Fn(&CertificateError) -> bool) -> bool {
    matches!(e, Error::InvalidCertificate(ce) if expected(ce))
}

#[tokio::test]
async fn valid_device_is_admitted_over_h2_with_its_identity() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let (files, client) = pki.enrolled("meter-0001", "acme");

    let (outcome, accepted) = handshake(&mut server, client).await;

    let crate::support::Outcome::Admitted { alpn } = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let accepted = accepted.expect("server accepted");
    assert_eq!(accepted.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(accepted.identity.device, "meter-0001");
    assert_eq!(accepted.identity.org, "acme");
    assert_eq!(accepted.identity.serial_hex, files.serial_hex);
    assert_eq!(
        accepted.identity.not_after,
        files.not_after.unix_timestamp()
    );
}

#[tokio::test]
async fn http11_only_client_negotiates_http11() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let files = weir_pki::issue_device(pki.path(), "legacy-1", "acme", 7).unwrap();
    let client = weir_pki::device_client_config(
        &pki.ca_pem_path(),
        &files.cert,
        &files.key,
        ClientAlpn::Http11,
    )
    .unwrap();

    let (outcome, accepted) = handshake(&mut server, client).await;

    assert!(outcome.is_admitted(), "{outcome:?}");
    assert_eq!(accepted.unwrap().alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn server_certificate_is_valid_for_its_ip_address() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let client = pki.enrolled_client("meter-ip", "acme");

    let outcome = connect(server.addr, "127.0.0.1", client).await;

    assert!(outcome.is_admitted(), "{outcome:?}");
    server.next_result().await.expect("server accepted");
}

#[tokio::test]
async fn tls12_device_is_admitted() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let files = weir_pki::issue_device(pki.path(), "old-stack", "acme", 7).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_pem_path()).unwrap())
        .unwrap();
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&files.cert)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(&files.key).unwrap(),
            )
            .unwrap();

    let (outcome, accepted) = handshake(&mut server, Arc::new(client)).await;

    assert!(outcome.is_admitted(), "{outcome:?}");
    assert_eq!(accepted.unwrap().identity.device, "old-stack");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_pem_path()).unwrap())
        .unwrap();
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

    let (outcome, accepted) = handshake(&mut server, Arc::new(client)).await;

    assert_refused_for(&outcome, &accepted, |e| {
        matches!(e, Error::NoCertificatesPresented)
    });
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    // Same name as the real CA: only the key tells them apart.
    let other = Ca::generate_in_memory("Weir Test CA").unwrap();
    let client = pki.client_with_cert_from(&other, "intruder", now() - days(1), now() + days(1));

    let (outcome, accepted) = handshake(&mut server, client).await;

    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| {
            matches!(
                ce,
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        })
    });
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let client = pki.client_with_cert_from(&pki.ca(), "late", now() - days(10), now() - days(1));

    let (outcome, accepted) = handshake(&mut server, client).await;

    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| {
            matches!(
                ce,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        })
    });
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let client = pki.client_with_cert_from(&pki.ca(), "early", now() + days(1), now() + days(8));

    let (outcome, accepted) = handshake(&mut server, client).await;

    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| {
            matches!(
                ce,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        })
    });
}

#[tokio::test]
async fn revoked_device_is_refused_once_the_crl_is_installed_while_others_get_in() {
    let pki = Pki::new();
    let mut server = pki.serve().await;
    let (doomed_files, doomed) = pki.enrolled("meter-doomed", "acme");
    let neighbour = pki.enrolled_client("meter-neighbour", "acme");
    let (before, _) = handshake(&mut server, doomed.clone()).await;
    assert!(
        before.is_admitted(),
        "admitted before revocation: {before:?}"
    );

    let crl = pki.publish_crl(2, &[&doomed_files.serial_hex]);
    assert!(server.config.install_crl(crl).unwrap(), "CRL #2 installed");
    assert!(server.config.is_revoked(&doomed_files.serial_hex));

    let (outcome, accepted) = handshake(&mut server, doomed.clone()).await;
    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| matches!(ce, CertificateError::Revoked))
    });
    let (outcome, accepted) = handshake(&mut server, neighbour.clone()).await;
    assert!(outcome.is_admitted(), "{outcome:?}");
    assert_eq!(accepted.unwrap().identity.device, "meter-neighbour");

    // A new server key pair reloaded from the files keeps the CRL in force.
    weir_pki::issue_server(pki.path(), &["localhost".to_owned()], 30).unwrap();
    assert!(server.config.reload_if_changed().unwrap());
    let (outcome, accepted) = handshake(&mut server, doomed).await;
    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| matches!(ce, CertificateError::Revoked))
    });
    let (outcome, _) = handshake(&mut server, neighbour).await;
    assert!(outcome.is_admitted(), "{outcome:?}");
}

#[tokio::test]
async fn a_crl_from_another_ca_refuses_every_device() {
    // The endpoint cannot tell whether a certificate is revoked from a CRL its CA did not sign:
    // an unknown revocation status, refused rather than let through.
    let pki = Pki::new();
    let client = pki.enrolled_client("meter-unsure", "acme");
    let other = Ca::generate_in_memory("Other CA").unwrap();
    let config = weir_pki::ReloadingServerConfig::new(
        weir_pki::DeviceTlsFiles::in_pki_dir(pki.path()),
        Some(crl_signed_by(&other, 1, &[], now())),
    )
    .unwrap();
    let mut server = crate::support::Server::start(Arc::new(config)).await;

    let (outcome, accepted) = handshake(&mut server, client).await;

    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| {
            matches!(ce, CertificateError::UnknownRevocationStatus)
        })
    });
}

#[tokio::test]
async fn device_trusts_only_the_operator_ca() {
    // A server whose certificate comes from another CA: the device must not talk to it.
    let pki = Pki::new();
    let impostor = Pki::new();
    let mut server = impostor.serve().await;
    let client = pki.enrolled_client("meter-careful", "acme");

    let outcome = connect(server.addr, "localhost", client).await;

    let crate::support::Outcome::Refused(reason) = &outcome else {
        panic!("device talked to an impostor: {outcome:?}");
    };
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    assert!(server.next_result().await.is_err());
}

#[tokio::test]
async fn an_expired_crl_refuses_every_device_by_default_and_is_kept_when_configured() {
    let pki = Pki::new();
    let client = pki.enrolled_client("meter-stale", "acme");
    let (revoked_files, revoked) = pki.enrolled("meter-revoked", "acme");
    // Signed eight days ago: its nextUpdate (seven days later) passed a day ago.
    let expired = pki.crl_signed_at(99, &[&revoked_files.serial_hex], now() - days(8));
    assert!(expired.info.is_expired(now()));

    let refusing = weir_pki::DeviceTlsFiles::in_pki_dir(pki.path());
    assert_eq!(refusing.expired_crl, weir_pki::ExpiredCrlPolicy::Refuse);
    let config = Arc::new(
        weir_pki::ReloadingServerConfig::new(refusing.clone(), Some(expired.clone())).unwrap(),
    );
    assert!(config.crl_info().unwrap().is_expired(now()));
    let mut server = crate::support::Server::start(config).await;
    let (outcome, accepted) = handshake(&mut server, client.clone()).await;
    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |c| {
            matches!(
                c,
                CertificateError::ExpiredRevocationList
                    | CertificateError::ExpiredRevocationListContext { .. }
            )
        })
    });

    let keeping = weir_pki::DeviceTlsFiles {
        expired_crl: weir_pki::ExpiredCrlPolicy::Keep,
        ..refusing
    };
    let config = Arc::new(weir_pki::ReloadingServerConfig::new(keeping, Some(expired)).unwrap());
    let mut server = crate::support::Server::start(config).await;
    let (outcome, accepted) = handshake(&mut server, client).await;
    assert!(outcome.is_admitted(), "{outcome:?}");
    assert_eq!(accepted.unwrap().identity.device, "meter-stale");
    // Its revocations stay in force.
    let (outcome, accepted) = handshake(&mut server, revoked).await;
    assert_refused_for(&outcome, &accepted, |e| {
        cert_error(e, |ce| matches!(ce, CertificateError::Revoked))
    });
}
