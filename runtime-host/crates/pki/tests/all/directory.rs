//! The operator's commands on the PKI directory: what they write, what they refuse.

use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use weir_pki::{CertIndex, DeviceTlsFiles, PkiError, ReloadingServerConfig};

use crate::support::Pki;

fn crl_of(pki: &Pki) -> (u64, Vec<String>) {
    let der = CertificateRevocationListDer::from_pem_file(pki.path().join("crl.pem")).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let number = crl
        .crl_number()
        .expect("CRL number")
        .to_string()
        .parse()
        .unwrap();
    let serials = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    (number, serials)
}

fn index_of(pki: &Pki) -> CertIndex {
    CertIndex::load(&pki.path().join("index.json")).unwrap()
}

#[test]
fn init_writes_the_ca_an_empty_crl_and_an_empty_index() {
    let dir = tempfile::tempdir().unwrap();
    let files = weir_pki::init_ca(dir.path(), "Operator CA").unwrap();

    assert!(files.cert.is_file() && files.crl.is_file() && files.index.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "CA key is private");
    }
    let ca_pem = std::fs::read(&files.cert).unwrap();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let usage = ca.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    let years = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp())
        / (365 * 86_400);
    assert_eq!(years, 10);
    let index = CertIndex::load(&files.index).unwrap();
    assert_eq!((index.crl_number, index.certificates.len()), (1, 0));
    let der = CertificateRevocationListDer::from_pem_file(&files.crl).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
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
}

#[test]
fn commands_without_a_ca_say_so() {
    let dir = tempfile::tempdir().unwrap();

    let err = weir_pki::issue_device(dir.path(), "meter-1", "acme", 7).unwrap_err();

    assert_eq!(err.code(), "no_ca", "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn issued_device_is_recorded_in_the_index() {
    let pki = Pki::new();

    let files = weir_pki::issue_device(pki.path(), "meter-0042", "acme", 7).unwrap();

    assert!(files.cert.ends_with("devices/acme/meter-0042.pem"));
    assert!(files.key.ends_with("devices/acme/meter-0042-key.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "device key is private");
    }
    let index = index_of(&pki);
    let [entry] = index.certificates.as_slice() else {
        panic!("one entry expected: {index:?}");
    };
    assert_eq!(
        (entry.id.as_str(), entry.org.as_str()),
        ("meter-0042", "acme")
    );
    assert_eq!(entry.serial, files.serial_hex);
    assert_eq!(entry.not_after, files.not_after);
    assert!(entry.revoked_at.is_none());
    let days = (entry.not_after - entry.not_before).whole_days();
    assert!((7..=8).contains(&days), "{days}");
    let json = std::fs::read_to_string(pki.path().join("index.json")).unwrap();
    assert!(json.contains("\"revoked_at\": null"), "{json}");
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
    assert!(index_of(&pki).certificates.is_empty());
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
fn revoking_an_unknown_device_is_an_error() {
    let pki = Pki::new();
    weir_pki::issue_device(pki.path(), "meter-known", "acme", 7).unwrap();

    let err = weir_pki::revoke_device(pki.path(), "acme", "meter-unknown").unwrap_err();

    assert!(matches!(err, PkiError::UnknownDevice { .. }), "{err:?}");
    assert_eq!(err.code(), "unknown_device");
    assert_eq!(crl_of(&pki).0, 1, "no new CRL");
}

#[test]
fn revoking_lists_every_certificate_of_the_device_in_a_new_crl() {
    let pki = Pki::new();
    let first = weir_pki::issue_device(pki.path(), "meter-twice", "acme", 7).unwrap();
    let second = weir_pki::issue_device(pki.path(), "meter-twice", "acme", 7).unwrap();
    let other = weir_pki::issue_device(pki.path(), "meter-other", "acme", 7).unwrap();

    let revocation = weir_pki::revoke_device(pki.path(), "acme", "meter-twice").unwrap();

    let mut expected = vec![first.serial_hex.clone(), second.serial_hex.clone()];
    let index = index_of(&pki);
    assert_eq!(
        index.find_serial(&first.serial_hex).unwrap().superseded_by,
        Some(second.serial_hex.clone()),
        "issuing again supersedes the earlier certificate"
    );
    assert_eq!(revocation.newly_revoked, expected);
    assert_eq!(revocation.crl_number, 2);
    let (number, mut listed) = crl_of(&pki);
    assert_eq!(number, 2);
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    let index = index_of(&pki);
    let other_entry = index.find_serial(&other.serial_hex).unwrap();
    assert!(other_entry.revoked_at.is_none());

    // Again: nothing new to revoke, but a fresh CRL with the same list.
    let again = weir_pki::revoke_device(pki.path(), "acme", "meter-twice").unwrap();
    assert!(again.newly_revoked.is_empty());
    assert_eq!(crl_of(&pki).0, 3);
    assert_eq!(crl_of(&pki).1.len(), 2);
}

#[test]
fn reload_does_nothing_while_the_files_are_unchanged() {
    let pki = Pki::new();
    let reloading = ReloadingServerConfig::new(DeviceTlsFiles::in_pki_dir(pki.path())).unwrap();
    let before = reloading.current();

    assert!(!reloading.reload_if_changed().unwrap());
    assert!(std::sync::Arc::ptr_eq(&before, &reloading.current()));

    weir_pki::refresh_crl(pki.path()).unwrap();
    assert!(reloading.reload_if_changed().unwrap());
    assert!(!std::sync::Arc::ptr_eq(&before, &reloading.current()));
}

#[test]
fn failed_reload_keeps_the_previous_config() {
    let pki = Pki::new();
    let reloading = ReloadingServerConfig::new(DeviceTlsFiles::in_pki_dir(pki.path())).unwrap();
    let before = reloading.current();
    std::fs::write(pki.path().join("crl.pem"), "not a CRL").unwrap();

    let err = reloading.reload_if_changed().unwrap_err();

    assert!(err.to_string().contains("crl.pem"), "{err}");
    assert!(std::sync::Arc::ptr_eq(&before, &reloading.current()));
    weir_pki::refresh_crl(pki.path()).unwrap();
    assert!(
        reloading.reload_if_changed().unwrap(),
        "retried once repaired"
    );
}

#[test]
fn tls_config_errors_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path().join("nope.pem");
    let err = weir_pki::device_server_config(
        &pki.path().join("server.pem"),
        &pki.path().join("server-key.pem"),
        &missing,
        None,
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
}

#[test]
fn ca_reloads_from_the_directory_and_signs_verifiable_certificates() {
    let pki = Pki::new();
    let ca = pki.ca();
    assert_eq!(
        ca.cert_pem(),
        std::fs::read_to_string(pki.path().join("ca.pem")).unwrap()
    );
    let again = weir_pki::Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.cert_der(), ca.cert_der());
    let other = weir_pki::Ca::generate_in_memory("Other").unwrap();
    let err = weir_pki::Ca::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
    assert_eq!(err.code(), "pem", "mismatched key: {err}");
}

#[test]
fn revoking_a_device_leaves_the_same_id_in_another_organisation_alone() {
    let pki = Pki::new();
    let acme = weir_pki::issue_device(pki.path(), "meter-1", "acme", 7).unwrap();
    let globex = weir_pki::issue_device(pki.path(), "meter-1", "globex", 7).unwrap();
    assert_ne!(
        acme.cert, globex.cert,
        "each organisation has its own files"
    );
    assert!(acme.cert.is_file() && globex.cert.is_file());

    let revocation = weir_pki::revoke_device(pki.path(), "acme", "meter-1").unwrap();

    assert_eq!(revocation.newly_revoked, vec![acme.serial_hex.clone()]);
    assert_eq!(crl_of(&pki).1, vec![acme.serial_hex]);
    let index = index_of(&pki);
    let other = index.find_serial(&globex.serial_hex).unwrap();
    assert!(other.revoked_at.is_none() && other.superseded_by.is_none());
}

#[test]
fn a_superseded_certificate_enters_the_crl_once_its_grace_has_passed() {
    let pki = Pki::new();
    let first = weir_pki::issue_device(pki.path(), "meter-replaced", "acme", 7).unwrap();
    let second = weir_pki::issue_device(pki.path(), "meter-replaced", "acme", 7).unwrap();

    weir_pki::refresh_crl(pki.path()).unwrap();
    assert!(crl_of(&pki).1.is_empty(), "still within its grace");

    // Move the supersession back past the grace, as if the hour had gone by.
    let mut index = index_of(&pki);
    let entry = index
        .certificates
        .iter_mut()
        .find(|e| e.serial == first.serial_hex)
        .unwrap();
    entry.superseded_at = Some(
        time::OffsetDateTime::now_utc() - weir_pki::SUPERSEDED_GRACE - time::Duration::minutes(1),
    );
    index.save(&pki.path().join("index.json")).unwrap();
    weir_pki::refresh_crl(pki.path()).unwrap();

    assert_eq!(crl_of(&pki).1, vec![first.serial_hex]);
    assert!(
        index_of(&pki)
            .find_serial(&second.serial_hex)
            .unwrap()
            .superseded_by
            .is_none()
    );
}

#[test]
fn an_older_crl_put_back_in_place_is_refused_and_the_newer_one_stays() {
    let pki = Pki::new();
    let crl = pki.path().join("crl.pem");
    let old = std::fs::read(&crl).unwrap();
    weir_pki::issue_device(pki.path(), "meter-gone", "acme", 7).unwrap();
    weir_pki::revoke_device(pki.path(), "acme", "meter-gone").unwrap();
    let reloading = ReloadingServerConfig::new(DeviceTlsFiles::in_pki_dir(pki.path())).unwrap();
    let in_service = reloading.crl_info().unwrap().number;
    let before = reloading.current();

    // Written aside and renamed, as a restore from an old backup would.
    std::fs::write(pki.path().join("crl.old"), &old).unwrap();
    std::fs::rename(pki.path().join("crl.old"), &crl).unwrap();
    let err = reloading.reload_if_changed().unwrap_err();

    assert_eq!(err.code(), "stale_crl", "{err}");
    assert_eq!(reloading.crl_info().unwrap().number, in_service);
    assert!(std::sync::Arc::ptr_eq(&before, &reloading.current()));
    // A newer CRL is taken again.
    weir_pki::refresh_crl(pki.path()).unwrap();
    assert!(reloading.reload_if_changed().unwrap());
    assert!(reloading.crl_info().unwrap().number > in_service);
}
