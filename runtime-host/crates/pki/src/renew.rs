//! Renewal ("phone home"): a device that is still authenticated by its current certificate
//! sends a CSR for a new key and gets a fresh short-lived certificate back. The CSR proves
//! possession of the new key and nothing else: its subject, SANs and extensions are ignored,
//! and the new certificate carries the identity the device authenticated with.
//!
//! [`renew`] only signs. [`renew_recorded`] is what the device endpoint calls: under the
//! directory lock it refuses certificates the index does not know, has revoked or has seen
//! replaced, and renewals sooner than the policy allows; it signs, and records the new
//! certificate as the device's current one, superseding the presented one. So a revocation can
//! never race with a renewal and lose, and a stolen key renews at most once: after the real
//! device or the thief renews, the other's renewal is refused as a suspected clone.

use std::path::Path;

use rcgen::CertificateSigningRequestParams;
use time::{Duration, OffsetDateTime};

use crate::PkiError;
use crate::ca::{BACKDATE, Ca, SignedCert, now, validity_for_days};
use crate::files::{DirLock, PkiPaths};
use crate::identity::DeviceIdentity;
use crate::index::{CertIndex, IndexEntry};

/// Largest CSR accepted, in bytes of PEM (an ECDSA or RSA-4096 CSR is well under 4 KiB).
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Why a renewal was refused. Codes are stable and meant for the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The CSR does not parse, is not self-signed correctly, or asks for something unsupported.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The certificate the device authenticated with has been revoked.
    #[error("certificate {serial} of device {device} is revoked")]
    DeviceRevoked {
        /// Device id.
        device: String,
        /// Serial (hex) of the presented certificate.
        serial: String,
    },
    /// The certificate the device authenticated with was already replaced by a newer one. The
    /// device that holds the newer certificate renewed with this key before, so whoever asks
    /// now holds a copy of an old key: a suspected clone.
    #[error("certificate {serial} of device {device} of {org} was superseded by a newer one")]
    Superseded {
        /// Device id.
        device: String,
        /// Organisation.
        org: String,
        /// Serial (hex) of the presented certificate.
        serial: String,
    },
    /// The device's current certificate was issued less than the renewal interval ago.
    #[error("device {device} renewed {age_secs} s ago; renew again in {retry_after_secs} s")]
    TooSoon {
        /// Device id.
        device: String,
        /// Seconds since its current certificate was issued.
        age_secs: u64,
        /// Seconds until a renewal is allowed.
        retry_after_secs: u64,
    },
    /// The certificate the device authenticated with is not in the CA's index.
    #[error("certificate {serial} of device {device} is not in the CA's index")]
    UnknownCertificate {
        /// Device id.
        device: String,
        /// Serial (hex) of the presented certificate.
        serial: String,
    },
    /// The CA could not sign or record the certificate (an operator problem, not the device's).
    #[error("cannot issue the renewed certificate: {0}")]
    Issue(#[from] PkiError),
}

impl RenewError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCsr(_) => "invalid_csr",
            Self::DeviceRevoked { .. } => "device_revoked",
            Self::UnknownCertificate { .. } => "unknown_certificate",
            Self::Superseded { .. } => "certificate_superseded",
            Self::TooSoon { .. } => "renewal_too_soon",
            Self::Issue(_) => "renewal_failed",
        }
    }
}

/// Signs a certificate valid `days` days for the public key of `csr_pem`, with the subject of
/// `presented` (the identity already authenticated by mutual TLS). Checks nothing about
/// revocation and records nothing: see [`renew_recorded`].
pub fn renew(
    ca: &Ca,
    presented: &DeviceIdentity,
    csr_pem: &str,
    days: u32,
) -> Result<SignedCert, RenewError> {
    if csr_pem.len() > MAX_CSR_LEN {
        return Err(RenewError::InvalidCsr(format!(
            "larger than {MAX_CSR_LEN} bytes"
        )));
    }
    // Parsing also verifies the CSR's signature: the requester holds the new private key.
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| RenewError::InvalidCsr(e.to_string()))?;
    let (not_before, not_after) = validity_for_days(days)?;
    Ok(ca.sign_device_key(
        &presented.device,
        &presented.org,
        &csr.public_key,
        not_before,
        not_after,
    )?)
}

/// [`renew`] for the CA of the PKI directory `dir`: refuses a presented certificate that the
/// index does not list (for this organisation and device), lists as revoked or superseded, or
/// a renewal less than `min_interval` after the renewal that issued the presented certificate
/// (one the operator issued may renew at once); then
/// records the new certificate in the index as the device's current one.
pub fn renew_recorded(
    dir: &Path,
    ca: &Ca,
    presented: &DeviceIdentity,
    csr_pem: &str,
    days: u32,
    min_interval: Duration,
) -> Result<SignedCert, RenewError> {
    let paths = PkiPaths::new(dir);
    let _lock = DirLock::acquire(&paths)?;
    let mut index = CertIndex::load(&paths.index())?;
    let now = now();
    match index.find_serial(&presented.serial_hex) {
        Some(entry) if !entry.is_of(&presented.org, &presented.device) => {
            return Err(RenewError::UnknownCertificate {
                device: presented.device.clone(),
                serial: presented.serial_hex.clone(),
            });
        }
        None => {
            return Err(RenewError::UnknownCertificate {
                device: presented.device.clone(),
                serial: presented.serial_hex.clone(),
            });
        }
        Some(entry) if entry.revoked_at.is_some() => {
            return Err(RenewError::DeviceRevoked {
                device: presented.device.clone(),
                serial: presented.serial_hex.clone(),
            });
        }
        Some(entry) if entry.superseded_by.is_some() => {
            return Err(RenewError::Superseded {
                device: presented.device.clone(),
                org: presented.org.clone(),
                serial: presented.serial_hex.clone(),
            });
        }
        Some(entry) if entry.renewed => {
            check_interval(entry.not_before, now, min_interval, &presented.device)?;
        }
        Some(_) => {}
    }
    let signed = renew(ca, presented, csr_pem, days)?;
    index.supersede_with(
        IndexEntry {
            id: presented.device.clone(),
            org: presented.org.clone(),
            serial: signed.serial_hex.clone(),
            not_before: signed.not_before,
            not_after: signed.not_after,
            revoked_at: None,
            superseded_by: None,
            superseded_at: None,
            renewed: true,
        },
        now,
    );
    index.save(&paths.index())?;
    Ok(signed)
}

/// Refuses a renewal less than `min_interval` after the current certificate was issued
/// (`not_before` is backdated by [`BACKDATE`]).
fn check_interval(
    not_before: OffsetDateTime,
    now: OffsetDateTime,
    min_interval: Duration,
    device: &str,
) -> Result<(), RenewError> {
    let age = now - (not_before + BACKDATE);
    if age >= min_interval {
        return Ok(());
    }
    Err(RenewError::TooSoon {
        device: device.to_owned(),
        age_secs: age.whole_seconds().max(0) as u64,
        retry_after_secs: (min_interval - age).whole_seconds().max(1) as u64,
    })
}
