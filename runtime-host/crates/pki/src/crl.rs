//! Revocation: marking a device's certificates revoked in `index.json` and publishing
//! `crl.pem`, the CRL the device endpoint enforces. The CRL is always rebuilt from the index
//! (never edited), with a CRL number one higher than the last.
//!
//! Device certificates are short-lived, so the main way to cut a device off is to refuse its
//! renewal (see [`mod@crate::renew`], which checks the same index); the CRL closes the window until
//! its current certificate expires.

use std::path::{Path, PathBuf};

use crate::PkiError;
use crate::ca::{Ca, now};
use crate::files::{DirLock, PUBLIC_MODE, PkiPaths, write_atomic};
use crate::index::{CertIndex, invalid_index};

/// The outcome of `revoke_device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serials (hex) revoked by this call; empty if every certificate of the device already was.
    pub newly_revoked: Vec<String>,
    /// Number of the CRL just published.
    pub crl_number: u64,
    /// `crl.pem`.
    pub crl: PathBuf,
}

/// How long a superseded certificate keeps connecting after it was replaced, so that a device
/// that renewed can finish what it was doing on its open connection and reconnect with the
/// new certificate. After it the certificate is listed in the next CRL (published at the
/// latest [`crate::ca::CRL_VALIDITY`] later, or at the host's next refresh).
pub const SUPERSEDED_GRACE: time::Duration = time::Duration::hours(1);

/// Revokes every unrevoked certificate ever issued to device `id` of organisation `org` and
/// publishes a new CRL. The same id in another organisation is another device, left alone.
/// Fails if the index knows no certificate of that device.
pub fn revoke_device(dir: &Path, org: &str, id: &str) -> Result<Revocation, PkiError> {
    let paths = PkiPaths::new(dir);
    let ca = Ca::load(dir)?;
    let _lock = DirLock::acquire(&paths)?;
    let mut index = CertIndex::load(&paths.index())?;
    if !index.certificates.iter().any(|e| e.is_of(org, id)) {
        return Err(PkiError::UnknownDevice {
            org: org.to_owned(),
            id: id.to_owned(),
            index: paths.index(),
        });
    }
    let at = now();
    let mut newly_revoked = Vec::new();
    for entry in index.certificates.iter_mut().filter(|e| e.is_of(org, id)) {
        if entry.revoked_at.is_none() {
            entry.revoked_at = Some(at);
            newly_revoked.push(entry.serial.clone());
        }
    }
    // Published even when nothing changed, so that re-running the command repairs a CRL
    // that an earlier, interrupted run failed to write.
    publish(&ca, &paths, &mut index)?;
    Ok(Revocation {
        newly_revoked,
        crl_number: index.crl_number,
        crl: paths.crl(),
    })
}

/// Re-signs `crl.pem` from the index with a fresh validity period (the CRL announces its next
/// update [`crate::ca::CRL_VALIDITY`] ahead; run this at least that often).
pub fn refresh_crl(dir: &Path) -> Result<PathBuf, PkiError> {
    let paths = PkiPaths::new(dir);
    let ca = Ca::load(dir)?;
    let _lock = DirLock::acquire(&paths)?;
    let mut index = CertIndex::load(&paths.index())?;
    publish(&ca, &paths, &mut index)?;
    Ok(paths.crl())
}

/// Bumps the CRL number, saves the index, then signs and writes `crl.pem` listing every
/// certificate that has not yet expired and is revoked, or was superseded more than
/// [`SUPERSEDED_GRACE`] ago. The caller holds the directory lock.
pub(crate) fn publish(ca: &Ca, paths: &PkiPaths, index: &mut CertIndex) -> Result<(), PkiError> {
    let now = now();
    index.crl_number += 1;
    // An expired certificate is refused anyway, so RFC 5280 lets it leave the CRL; with
    // certificates of a few days this keeps the CRL small however many devices were revoked.
    let revoked = index
        .certificates
        .iter()
        .filter(|e| e.not_after > now)
        .filter_map(|e| {
            let retired = e.superseded_at.filter(|at| *at + SUPERSEDED_GRACE <= now);
            let at = e.revoked_at.or(retired)?;
            let serial = hex::decode(&e.serial).map_err(|_| e.serial.clone());
            Some(serial.map(|s| (s, at)))
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|bad| invalid_index(&paths.index(), format!("serial {bad:?} is not hex")))?;
    index.save(&paths.index())?;
    let pem = ca.sign_crl(index.crl_number, &revoked, now)?;
    write_atomic(&paths.crl(), pem.as_bytes(), PUBLIC_MODE)
}
