//! Renewal ("phone home"): a device that is still authenticated by its current certificate
//! sends a CSR for a new key and gets a fresh short-lived certificate back. The CSR proves
//! possession of the new key and nothing else: its subject, SANs and extensions are ignored,
//! and the new certificate carries the identity the device authenticated with.
//!
//! [`renew`] only signs. [`renew_recorded`] is what the device endpoint calls: under the
//! directory lock it refuses certificates the index does not know or has revoked, signs, and
//! records the new certificate, so a revocation can never race with a renewal and lose.

use std::path::Path;

use rcgen::CertificateSigningRequestParams;

use crate::PkiError;
use crate::ca::{Ca, SignedCert, validity_for_days};
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
/// index does not list or lists as revoked, and records the new certificate in the index.
pub fn renew_recorded(
    dir: &Path,
    ca: &Ca,
    presented: &DeviceIdentity,
    csr_pem: &str,
    days: u32,
) -> Result<SignedCert, RenewError> {
    let paths = PkiPaths::new(dir);
    let _lock = DirLock::acquire(&paths)?;
    let mut index = CertIndex::load(&paths.index())?;
    match index.find_serial(&presented.serial_hex) {
        Some(entry) if entry.id != presented.device => {
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
        Some(_) => {}
    }
    let signed = renew(ca, presented, csr_pem, days)?;
    index.certificates.push(IndexEntry {
        id: presented.device.clone(),
        org: presented.org.clone(),
        serial: signed.serial_hex.clone(),
        not_before: signed.not_before,
        not_after: signed.not_after,
        revoked_at: None,
    });
    index.save(&paths.index())?;
    Ok(signed)
}
