//! The operator's issuing commands on a PKI directory: create the CA, issue the device
//! endpoint's server certificate, and enrol a device. Device certificates are recorded in
//! `index.json` before their files are written, so the index never misses a certificate that
//! exists (at worst it lists one whose files were never written).

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::ca::{Ca, now, validity_for_days};
use crate::files::{DirLock, KEY_MODE, PUBLIC_MODE, PkiPaths, create_dir, write_atomic};
use crate::identity::check_name;
use crate::index::{CertIndex, IndexEntry};
use crate::{PkiError, crl};

/// The files `init_ca` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `ca.pem`.
    pub cert: PathBuf,
    /// `ca-key.pem` (mode 0600).
    pub key: PathBuf,
    /// `crl.pem` (empty CRL number 1).
    pub crl: PathBuf,
    /// `index.json` (no certificates).
    pub index: PathBuf,
}

/// The files `issue_server` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// `server.pem`.
    pub cert: PathBuf,
    /// `server-key.pem` (mode 0600).
    pub key: PathBuf,
}

/// What `issue_device` wrote and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFiles {
    /// `devices/<id>.pem`.
    pub cert: PathBuf,
    /// `devices/<id>-key.pem` (mode 0600).
    pub key: PathBuf,
    /// Serial number of the new certificate, lowercase hex.
    pub serial_hex: String,
    /// End of its validity.
    pub not_after: OffsetDateTime,
}

/// Creates a new CA named `name` in `dir` (created if needed): `ca.pem`, `ca-key.pem`, an
/// empty `crl.pem` and `index.json`. Refuses if `dir` already holds a CA or an index.
pub fn init_ca(dir: &Path, name: &str) -> Result<CaFiles, PkiError> {
    let paths = PkiPaths::new(dir);
    create_dir(dir)?;
    let _lock = DirLock::acquire(&paths)?;
    for existing in [paths.ca_cert(), paths.ca_key(), paths.index()] {
        if existing.exists() {
            return Err(PkiError::CaExists {
                dir: dir.to_owned(),
                existing,
            });
        }
    }
    let ca = Ca::generate_in_memory(name)?;
    write_atomic(&paths.ca_key(), ca.key_pem().as_bytes(), KEY_MODE)?;
    write_atomic(&paths.ca_cert(), ca.cert_pem().as_bytes(), PUBLIC_MODE)?;
    let mut index = CertIndex::default();
    crl::publish(&ca, &paths, &mut index)?;
    Ok(CaFiles {
        cert: paths.ca_cert(),
        key: paths.ca_key(),
        crl: paths.crl(),
        index: paths.index(),
    })
}

/// Issues (or replaces) `server.pem` and `server-key.pem`, valid `days` days for each of
/// `names`: DNS names, or IP addresses such as "127.0.0.1" and "::1".
pub fn issue_server(dir: &Path, names: &[String], days: u32) -> Result<ServerFiles, PkiError> {
    let paths = PkiPaths::new(dir);
    let ca = Ca::load(dir)?;
    let (not_before, not_after) = validity_for_days(days)?;
    let issued = ca.issue_server_cert(names, not_before, not_after)?;
    // Locked so that two concurrent commands cannot leave one's key with the other's cert.
    let _lock = DirLock::acquire(&paths)?;
    write_atomic(&paths.server_key(), issued.key_pem.as_bytes(), KEY_MODE)?;
    write_atomic(
        &paths.server_cert(),
        issued.cert_pem.as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(ServerFiles {
        cert: paths.server_cert(),
        key: paths.server_key(),
    })
}

/// Enrols device `id` of organisation `org`: a new key and a client certificate valid `days`
/// days, written to `devices/<org>/<id>.pem` and `devices/<org>/<id>-key.pem` (replacing earlier
/// ones) and recorded in `index.json` as the device's current certificate: earlier ones of the
/// same device are superseded (they stop renewing, and leave service after
/// [`SUPERSEDED_GRACE`](crate::crl::SUPERSEDED_GRACE)). `id` and `org` must be 1–64 characters of `[A-Za-z0-9._-]`.
pub fn issue_device(dir: &Path, id: &str, org: &str, days: u32) -> Result<DeviceFiles, PkiError> {
    check_name("device id", id)?;
    check_name("org", org)?;
    let paths = PkiPaths::new(dir);
    let ca = Ca::load(dir)?;
    let (not_before, not_after) = validity_for_days(days)?;
    let issued = ca.issue_device_cert(id, org, not_before, not_after)?;
    let _lock = DirLock::acquire(&paths)?;
    let mut index = CertIndex::load(&paths.index())?;
    index.supersede_with(
        IndexEntry {
            id: id.to_owned(),
            org: org.to_owned(),
            serial: issued.serial_hex.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            revoked_at: None,
            superseded_by: None,
            superseded_at: None,
            renewed: false,
        },
        now(),
    );
    index.save(&paths.index())?;
    create_dir(&paths.org_devices_dir(org))?;
    write_atomic(
        &paths.device_key(org, id),
        issued.key_pem.as_bytes(),
        KEY_MODE,
    )?;
    write_atomic(
        &paths.device_cert(org, id),
        issued.cert_pem.as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(DeviceFiles {
        cert: paths.device_cert(org, id),
        key: paths.device_key(org, id),
        serial_hex: issued.serial_hex,
        not_after: issued.not_after,
    })
}
