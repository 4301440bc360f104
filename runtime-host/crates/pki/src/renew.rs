//! Renewal ("phone home"): a device that is still authenticated by its current certificate
//! sends a CSR for a new key and gets a fresh short-lived certificate back. The CSR proves
//! possession of the new key and nothing else: its subject, SANs and extensions are ignored,
//! and the new certificate carries the identity the device authenticated with.
//!
//! [`renew`] only signs. [`check_renewal`] is the policy the issuing service applies first,
//! inside the ledger transaction that then records the new certificate as the device's current
//! one, superseding the presented one: it refuses certificates the ledger does not know, has
//! revoked or has seen replaced, and renewals sooner than the interval allows. So a revocation
//! can never race with a renewal and lose, and a stolen key renews at most once: after the real
//! device or the thief renews, the other's renewal is refused as a suspected clone.

use rcgen::CertificateSigningRequestParams;
use time::{Duration, OffsetDateTime};

use crate::PkiError;
use crate::ca::{BACKDATE, Ca, SignedCert, validity_for_days};
use crate::identity::DeviceIdentity;

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
    /// The certificate the device authenticated with is not in the CA's ledger.
    #[error("certificate {serial} of device {device} is not in the CA's ledger")]
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
/// revocation and records nothing: see [`check_renewal`].
pub fn renew(
    ca: &Ca,
    presented: &DeviceIdentity,
    csr_pem: &str,
    days: u32,
) -> Result<SignedCert, RenewError> {
    let csr = parse_csr(csr_pem)?;
    let (not_before, not_after) = validity_for_days(days)?;
    Ok(ca.sign_device_key(
        &presented.device,
        &presented.org,
        &csr.public_key,
        not_before,
        not_after,
    )?)
}

/// Checks that `csr_pem` is a CSR that [`renew`] can sign: small enough, well formed, and
/// signed by the key it asks a certificate for. What an edge host checks before it queues a
/// renewal, so that the issuing service only sees plausible requests.
pub fn check_csr(csr_pem: &str) -> Result<(), RenewError> {
    parse_csr(csr_pem).map(drop)
}

fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, RenewError> {
    if csr_pem.len() > MAX_CSR_LEN {
        return Err(RenewError::InvalidCsr(format!(
            "larger than {MAX_CSR_LEN} bytes"
        )));
    }
    // Parsing also verifies the CSR's signature: the requester holds the new private key.
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| RenewError::InvalidCsr(e.to_string()))
}

/// What the ledger knows of the certificate a device renews with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// Its organisation.
    pub org: String,
    /// Its device id.
    pub device: String,
    /// Start of its validity.
    pub not_before: OffsetDateTime,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Whether a newer certificate replaced it.
    pub superseded: bool,
    /// Whether a renewal issued it (the renewal interval counts from such a certificate; one
    /// the operator issued may renew at once, a device replacing its factory key).
    pub renewed: bool,
}

/// Whether `presented` may renew, given what the ledger knows of its certificate (`None`:
/// the CA never issued it): refused if unknown or of another device, revoked, superseded (a
/// suspected clone: whoever renewed it before holds the newer certificate), or renewed less
/// than `min_interval` ago.
pub fn check_renewal(
    status: Option<&CertStatus>,
    presented: &DeviceIdentity,
    now: OffsetDateTime,
    min_interval: Duration,
) -> Result<(), RenewError> {
    let unknown = || RenewError::UnknownCertificate {
        device: presented.device.clone(),
        serial: presented.serial_hex.clone(),
    };
    let status = status.ok_or_else(unknown)?;
    if status.org != presented.org || status.device != presented.device {
        return Err(unknown());
    }
    if status.revoked {
        return Err(RenewError::DeviceRevoked {
            device: presented.device.clone(),
            serial: presented.serial_hex.clone(),
        });
    }
    if status.superseded {
        return Err(RenewError::Superseded {
            device: presented.device.clone(),
            org: presented.org.clone(),
            serial: presented.serial_hex.clone(),
        });
    }
    if status.renewed {
        check_interval(status.not_before, now, min_interval, &presented.device)?;
    }
    Ok(())
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
