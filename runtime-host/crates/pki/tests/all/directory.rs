//! The operator's commands on the PKI directory (what they write, what they refuse), the CA
//! loaded back from it, and the device endpoint's config kept current: file reloads and CRLs
//! installed from the ledger. Recording certificates, revocations and the CRL number is the
//! PKI ledger's job (PostgreSQL, tested with it); this crate only signs and parses.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use weir_pki::{DeviceTlsFiles, InstalledCrl, PkiError, ReloadingServerConfig};

use crate::support::{Pki, days, now};

/// The names in `dir`, apart from the lock file the commands take.
fn files_in(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "pki.lock")
        .collect()
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The config enforcing an empty CRL #1 of `pki`'s CA.
fn reloading(pki: &Pki) -> ReloadingServerConfig {
    ReloadingServerConfig::new(
        DeviceTlsFiles::in_pki_dir(pki.path()),
        Some(pki.publish_crl(1, &[])),
    )
    .unwrap()
}

#[test]
fn init_writes_only_the_ca_certificate_and_its_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let files = weir_pki::init_ca(dir.path(), "Operator CA").unwrap();

    assert_eq!(files.cert, dir.path().join("ca.pem"));
    assert_eq!(files.key, dir.path().join("ca-key.pem"));
    assert_eq!(
        files_in(dir.path()),
        BTreeSet::from(["ca-key.pem".to_owned(), "ca.pem".to_owned()]),
        "no index or CRL in the directory any more"
    );
    #[cfg(unix)]
    assert_eq!(mode_of(&files.key), 0o600, "CA key is private");
    let ca_pem = std::fs::read(&files.cert).unwrap();
    let ca_der = CertificateDer::from_pem_slice(&ca_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let usage = ca.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    let years = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp())
        / (365 * 86_400);
    assert_eq!(years, 10);
    // The key written is the certificate's.
    let loaded = weir_pki::Ca::load(dir.path()).unwrap();
    assert_eq!(loaded.cert_der(), &ca_der);
}

#[test]
fn init_refuses_to_overwrite_an_existing_ca() {
    let pki = Pki::new();
    let key_before = std::fs::read(pki.path().join("ca-key.pem")).unwrap();

    let err = weir_pki::init_ca(pki.path(), "Second CA").unwrap_err();

    assert_eq!(err.code(), "ca_exists", "{err}");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(pki.path().join("ca-key.pem")).unwrap(),
        key_before
    );

    // A key alone is a CA too: its certificate may be restored, the key never replaced.
    std::fs::remove_file(pki.path().join("ca.pem")).unwrap();
    let err = weir_pki::init_ca(pki.path(), "Second CA").unwrap_err();
    let PkiError::CaExists { existing, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(existing.ends_with("ca-key.pem"), "{err}");
    assert!(!pki.path().join("ca.pem").exists());
    assert_eq!(
        std::fs::read(pki.path().join("ca-key.pem")).unwrap(),
        key_before
    );
}

#[test]
fn commands_without_a_ca_say_so() {
    let dir = tempfile::tempdir().unwrap();

    let err = weir_pki::issue_device(dir.path(), "meter-1", "acme", 7).unwrap_err();

    assert_eq!(err.code(), "no_ca", "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn issued_device_files_hold_its_identity_and_a_private_key() {
    let pki = Pki::new();
    let before = files_in(pki.path());

    let files = weir_pki::issue_device(pki.path(), "meter-0042", "acme", 7).unwrap();

    assert!(files.cert.ends_with("devices/acme/meter-0042.pem"));
    assert!(files.key.ends_with("devices/acme/meter-0042-key.pem"));
    #[cfg(unix)]
    assert_eq!(mode_of(&files.key), 0o600, "device key is private");
    let der = CertificateDer::from_pem_file(&files.cert).unwrap();
    let identity = weir_pki::identity_from_cert(&der).unwrap();
    assert_eq!(
        (identity.device.as_str(), identity.org.as_str()),
        ("meter-0042", "acme")
    );
    assert_eq!(identity.serial_hex, files.serial_hex);
    assert_eq!(identity.not_after, files.not_after.unix_timestamp());
    let days = (files.not_after - files.not_before).whole_days();
    assert!((7..=8).contains(&days), "{days}");
    assert_eq!(
        files_in(pki.path()),
        &before | &BTreeSet::from(["devices".to_owned()]),
        "only the device's files are written"
    );

    // The same id in another organisation is another device, with its own files.
    let globex = weir_pki::issue_device(pki.path(), "meter-0042", "globex", 7).unwrap();
    assert_ne!(globex.cert, files.cert);
    assert_ne!(globex.serial_hex, files.serial_hex);
    assert!(files.cert.is_file() && globex.cert.is_file());
}

#[test]
fn invalid_device_ids_and_orgs_are_rejected() {
    let pki = Pki::new();
    for (id, org) in [
        ("", "acme"),
        ("meter 1", "acme"),
        ("../escape", "acme"),
        (&*"m".repeat(65), "acme"),
        ("meter-1", ""),
        ("meter-1", "ac/me"),
    ] {
        let err = weir_pki::issue_device(pki.path(), id, org, 7).unwrap_err();
        assert_eq!(err.code(), "invalid_name", "{id:?}/{org:?}: {err}");
    }
    assert!(!pki.path().join("devices").exists(), "nothing written");
}

#[test]
fn validity_out_of_range_is_rejected() {
    let pki = Pki::new();
    for days in [0, 3651, u32::MAX] {
        let err = weir_pki::issue_device(pki.path(), "meter-1", "acme", days).unwrap_err();
        assert_eq!(err.code(), "invalid_validity", "{days}: {err}");
    }
}

#[test]
fn invalid_server_names_are_rejected() {
    let pki = Pki::new();
    for names in [vec![], vec!["bad name".to_owned()]] {
        let err = weir_pki::issue_server(pki.path(), &names, 30).unwrap_err();
        assert_eq!(err.code(), "invalid_name", "{names:?}: {err}");
    }
}

#[test]
fn reload_does_nothing_while_the_files_are_unchanged() {
    let pki = Pki::new();
    let reloading = reloading(&pki);
    let before = reloading.current();

    assert!(!reloading.reload_if_changed().unwrap());
    assert!(Arc::ptr_eq(&before, &reloading.current()));

    weir_pki::issue_server(pki.path(), &["localhost".to_owned()], 30).unwrap();
    assert!(
        reloading.reload_if_changed().unwrap(),
        "new server key pair"
    );
    let after = reloading.current();
    assert!(!Arc::ptr_eq(&before, &after));
    assert!(!reloading.reload_if_changed().unwrap());
    assert!(Arc::ptr_eq(&after, &reloading.current()));
    assert_eq!(
        reloading.crl_info().unwrap().number,
        1,
        "the CRL in service stays"
    );
}

#[test]
fn failed_reload_keeps_the_previous_config() {
    let pki = Pki::new();
    let reloading = reloading(&pki);
    let before = reloading.current();
    std::fs::write(pki.path().join("server.pem"), "not a certificate").unwrap();

    let err = reloading.reload_if_changed().unwrap_err();

    assert!(err.to_string().contains("server.pem"), "{err}");
    assert!(Arc::ptr_eq(&before, &reloading.current()));
    assert!(
        reloading.reload_if_changed().is_err(),
        "still broken: tried again, not marked as loaded"
    );
    weir_pki::issue_server(pki.path(), &["localhost".to_owned()], 30).unwrap();
    assert!(
        reloading.reload_if_changed().unwrap(),
        "retried once repaired"
    );
    assert!(!Arc::ptr_eq(&before, &reloading.current()));
}

#[test]
fn tls_config_errors_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path().join("nope.pem");
    let err = weir_pki::device_server_config(
        &pki.path().join("server.pem"),
        &pki.path().join("server-key.pem"),
        &missing,
        Vec::new(),
        "",
        true,
    )
    .unwrap_err();
    assert_eq!(err.code(), "io");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    // A key file that holds a certificate.
    let err =
        weir_pki::api_server_config(&pki.path().join("server.pem"), &pki.path().join("ca.pem"))
            .unwrap_err();
    assert_eq!(err.code(), "pem");
    assert!(err.to_string().contains("ca.pem"), "{err}");

    // The server certificate with the CA's key.
    let err = weir_pki::api_server_config(
        &pki.path().join("server.pem"),
        &pki.path().join("ca-key.pem"),
    )
    .unwrap_err();
    assert_eq!(err.code(), "tls", "{err}");

    // A CRL that is not one names where it came from.
    for garbage in [&b"not a CRL"[..], pki.ca_pem().as_bytes()] {
        let err = InstalledCrl::from_pem(garbage, "the ledger's CRL #7").unwrap_err();
        assert_eq!(err.code(), "pem", "{err}");
        assert!(err.to_string().contains("the ledger's CRL #7"), "{err}");
    }
}

#[test]
fn ca_reloads_from_the_directory_and_signs_verifiable_certificates() {
    let pki = Pki::new();
    let ca = pki.ca();
    assert_eq!(ca.cert_pem(), pki.ca_pem());
    let again = weir_pki::Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.cert_der(), ca.cert_der());
    let other = weir_pki::Ca::generate_in_memory("Other").unwrap();
    let err = weir_pki::Ca::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
    assert_eq!(err.code(), "pem", "mismatched key: {err}");

    // What the reloaded CA signs verifies against ca.pem; what another CA signs does not.
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_pem_path()).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let verify = |ca: &weir_pki::Ca| {
        let issued = ca
            .issue_device_cert("meter-1", "acme", now() - days(1), now() + days(1))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        verifier.verify_client_cert(&der, &[], UnixTime::now())
    };
    verify(&again).expect("signed by the reloaded CA");
    let err = verify(&other).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn a_crl_listing_a_serial_revokes_that_certificate_only() {
    let pki = Pki::new();
    let reloading = reloading(&pki);
    let revoked = weir_pki::issue_device(pki.path(), "meter-gone", "acme", 7).unwrap();
    let kept = weir_pki::issue_device(pki.path(), "meter-kept", "acme", 7).unwrap();
    assert!(
        !reloading.is_revoked(&revoked.serial_hex),
        "CRL #1 is empty"
    );
    let before = reloading.current();

    let crl = pki.publish_crl(2, &[&revoked.serial_hex]);
    assert_eq!(crl.info.number, 2);
    assert_eq!(
        crl.info.revoked.iter().collect::<Vec<_>>(),
        vec![&revoked.serial_hex]
    );
    let (this_update, next_update) = (crl.info.this_update, crl.info.next_update);
    assert!(reloading.install_crl(crl).unwrap());

    assert!(reloading.is_revoked(&revoked.serial_hex));
    assert!(
        reloading.is_revoked(&revoked.serial_hex.to_ascii_uppercase()),
        "serials compare case-insensitively"
    );
    assert!(!reloading.is_revoked(&kept.serial_hex));
    let info = reloading.crl_info().unwrap();
    assert_eq!(info.number, 2);
    assert_eq!(
        (info.this_update, info.next_update),
        (this_update, next_update)
    );
    assert_eq!(next_update, Some(this_update + days(7)));
    assert!(!info.is_expired(now()));
    assert!(
        !Arc::ptr_eq(&before, &reloading.current()),
        "new connections get a config enforcing it"
    );

    // Without a CRL nothing is revoked, and the first CRL installed is taken whatever its number.
    let unchecked =
        ReloadingServerConfig::new(DeviceTlsFiles::in_pki_dir(pki.path()), None).unwrap();
    assert!(unchecked.crl_info().is_none());
    assert!(!unchecked.is_revoked(&revoked.serial_hex));
    assert!(
        unchecked
            .install_crl(pki.publish_crl(5, &[&kept.serial_hex]))
            .unwrap()
    );
    assert_eq!(unchecked.crl_info().unwrap().number, 5);
    assert!(unchecked.is_revoked(&kept.serial_hex));
    assert!(!unchecked.is_revoked(&revoked.serial_hex));
}

#[test]
fn an_older_crl_is_refused_and_the_newer_one_stays() {
    let pki = Pki::new();
    let gone = weir_pki::issue_device(pki.path(), "meter-gone", "acme", 7).unwrap();
    let old = pki.publish_crl(1, &[]);
    let reloading = ReloadingServerConfig::new(
        DeviceTlsFiles::in_pki_dir(pki.path()),
        Some(pki.publish_crl(2, &[&gone.serial_hex])),
    )
    .unwrap();
    let before = reloading.current();

    // An old signed CRL (a restored backup, a replayed message) cannot undo the revocation.
    let err = reloading.install_crl(old).unwrap_err();

    assert_eq!(err.code(), "stale_crl", "{err}");
    let PkiError::StaleCrl {
        found, in_service, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*found, *in_service), (1, 2));
    assert!(err.to_string().contains("test CRL #1"), "{err}");
    assert_eq!(reloading.crl_info().unwrap().number, 2);
    assert!(reloading.is_revoked(&gone.serial_hex));
    assert!(Arc::ptr_eq(&before, &reloading.current()));

    // The same number again (another host publishing it, say) changes nothing, whatever it lists.
    assert!(!reloading.install_crl(pki.publish_crl(2, &[])).unwrap());
    assert!(reloading.is_revoked(&gone.serial_hex));
    assert!(Arc::ptr_eq(&before, &reloading.current()));

    // A newer CRL is taken.
    assert!(reloading.install_crl(pki.publish_crl(3, &[])).unwrap());
    assert_eq!(reloading.crl_info().unwrap().number, 3);
    assert!(!reloading.is_revoked(&gone.serial_hex));
    assert!(!Arc::ptr_eq(&before, &reloading.current()));
}
