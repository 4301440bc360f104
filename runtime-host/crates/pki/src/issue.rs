//! The operator's issuing commands on a PKI directory: create the CA, issue the device
//! endpoint's server certificate, and enrol a device. Recording a device certificate in the
//! PKI ledger (PostgreSQL, shared by every host) is the caller's job: [`issue_device`] returns
//! what to record, and the caller records it before handing the files to the device.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::PkiError;
use crate::ca::{Ca, validity_for_days};
use crate::files::{DirLock, KEY_MODE, PUBLIC_MODE, PkiPaths, create_dir, write_atomic};
use crate::identity::check_name;

/// The files `init_ca` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `ca.pem`.
    pub cert: PathBuf,
    /// `ca-key.pem` (mode 0600).
    pub key: PathBuf,
}

/// The files `issue_server` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// `server.pem`.
    pub cert: PathBuf,
    /// `server-key.pem` (mode 0600).
    pub key: PathBuf,
}

/// What `issue_device` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFiles {
    /// `devices/<org>/<id>.pem`.
    pub cert: PathBuf,
    /// `devices/<org>/<id>-key.pem` (mode 0600).
    pub key: PathBuf,
    /// Serial number of the new certificate, lowercase hex.
    pub serial_hex: String,
    /// Start of its validity.
    pub not_before: OffsetDateTime,
    /// End of its validity.
    pub not_after: OffsetDateTime,
}

/// Creates a new CA named `name` in `dir` (created if needed): `ca.pem` and `ca-key.pem`.
/// Refuses if `dir` already holds a CA. Its first CRL is published in the ledger by the issuing
/// service.
pub fn init_ca(dir: &Path, name: &str) -> Result<CaFiles, PkiError> {
    let paths = PkiPaths::new(dir);
    create_dir(dir)?;
    let _lock = DirLock::acquire(&paths)?;
    for existing in [paths.ca_cert(), paths.ca_key()] {
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
    Ok(CaFiles {
        cert: paths.ca_cert(),
        key: paths.ca_key(),
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
/// ones). The caller records it in the ledger as the device's current certificate, which
/// supersedes earlier ones (they stop renewing, and leave service after
/// [`SUPERSEDED_GRACE`](crate::crl::SUPERSEDED_GRACE)). `id` and `org` must be 1–64 characters
/// of `[A-Za-z0-9._-]`.
pub fn issue_device(dir: &Path, id: &str, org: &str, days: u32) -> Result<DeviceFiles, PkiError> {
    check_name("device id", id)?;
    check_name("org", org)?;
    let paths = PkiPaths::new(dir);
    let ca = Ca::load(dir)?;
    let (not_before, not_after) = validity_for_days(days)?;
    let issued = ca.issue_device_cert(id, org, not_before, not_after)?;
    let _lock = DirLock::acquire(&paths)?;
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
        not_before: issued.not_before,
        not_after: issued.not_after,
    })
}
