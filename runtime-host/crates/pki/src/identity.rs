//! Who a device is: the subject of the client certificate it authenticated with. The CN is
//! the device id and the O its organisation; nothing else in the certificate is trusted as
//! identity. Also the one rule for what a device id or organisation may look like, enforced
//! when certificates are issued so that every identity read back satisfies it.

use serde::{Deserialize, Serialize};
use x509_parser::prelude::X509Certificate;

use crate::PkiError;

/// Longest device id or organisation accepted.
pub const MAX_NAME_LEN: usize = 64;

/// The identity carried by a verified device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Device id: the certificate's subject CN.
    pub device: String,
    /// Organisation: the certificate's subject O.
    pub org: String,
    /// Certificate serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// End of the certificate's validity, Unix seconds.
    pub not_after: i64,
}

/// Why a certificate does not carry a device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    NotACertificate(String),
    /// The subject has no common name.
    #[error("certificate subject has no CN (device id)")]
    MissingDevice,
    /// The subject has no organisation.
    #[error("certificate subject has no O (organisation)")]
    MissingOrg,
    /// The CN or O is not a valid name.
    #[error("certificate subject {field} {value:?} is not a valid name")]
    InvalidName {
        /// "CN" or "O".
        field: &'static str,
        /// The rejected value.
        value: String,
    },
}

impl IdentityError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotACertificate(_) => "not_a_certificate",
            Self::MissingDevice => "missing_device",
            Self::MissingOrg => "missing_org",
            Self::InvalidName { .. } => "invalid_identity",
        }
    }
}

/// Reads the device identity out of a DER certificate (normally the first peer certificate
/// of a verified mutual-TLS connection).
pub fn identity_from_cert(der: &[u8]) -> Result<DeviceIdentity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::NotACertificate(e.to_string()))?;
    identity_of(&cert)
}

pub(crate) fn identity_of(cert: &X509Certificate<'_>) -> Result<DeviceIdentity, IdentityError> {
    let subject = cert.subject();
    let device = first_str(subject.iter_common_name()).ok_or(IdentityError::MissingDevice)?;
    let org = first_str(subject.iter_organization()).ok_or(IdentityError::MissingOrg)?;
    for (field, value) in [("CN", device), ("O", org)] {
        if name_problem(value).is_some() {
            return Err(IdentityError::InvalidName {
                field,
                value: value.to_owned(),
            });
        }
    }
    Ok(DeviceIdentity {
        device: device.to_owned(),
        org: org.to_owned(),
        serial_hex: hex::encode(cert.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn first_str<'a, 'b: 'a>(
    mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
) -> Option<&'b str> {
    attrs.next().and_then(|a| a.as_str().ok())
}

/// Checks a device id or organisation: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), PkiError> {
    match name_problem(value) {
        None => Ok(()),
        Some(reason) => Err(PkiError::InvalidName {
            what,
            value: value.to_owned(),
            reason,
        }),
    }
}

fn name_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_NAME_LEN {
        Some("must be at most 64 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_device_id_rule() {
        for ok in ["a", "dev-01", "org.example_1", &"x".repeat(64)] {
            assert!(check_name("device id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "dev/1", "ünï", "../x", &"x".repeat(65)] {
            let err = check_name("device id", bad).unwrap_err();
            assert_eq!(err.code(), "invalid_name", "{bad}");
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = identity_from_cert(b"not der").unwrap_err();
        assert_eq!(err.code(), "not_a_certificate");
    }
}
