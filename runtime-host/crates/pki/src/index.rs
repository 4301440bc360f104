//! `index.json`: the CA's record of every device certificate it issued (by the operator or by
//! renewal) and of the last CRL number. It is the source from which `crl.pem` is rebuilt and
//! against which renewals are checked. Callers hold the directory lock (`index.lock`) around a
//! load-modify-save cycle; saving is atomic.

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::PkiError;
use crate::files::{PUBLIC_MODE, read_text, write_atomic};

/// The contents of `index.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertIndex {
    /// Number of the CRL currently in `crl.pem`; the next one gets this plus one.
    pub crl_number: u64,
    /// Every device certificate issued, oldest first.
    pub certificates: Vec<IndexEntry>,
}

/// One issued device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Device id (the certificate's CN).
    pub id: String,
    /// Organisation (the certificate's O).
    pub org: String,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When the operator revoked it, or `null`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The serial (hex) of the certificate that replaced this one (a renewal, or a new
    /// certificate issued by the operator), or `null` while this is the device's current one.
    /// A superseded certificate can no longer renew, and enters the CRL once
    /// [`SUPERSEDED_GRACE`](crate::crl::SUPERSEDED_GRACE) has passed.
    #[serde(default)]
    pub superseded_by: Option<String>,
    /// When it was superseded, or `null`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub superseded_at: Option<OffsetDateTime>,
    /// Whether a renewal issued it (rather than the operator): the renewal interval counts
    /// from such a certificate, while an operator's certificate may renew at once (a device
    /// replacing its factory key on first contact).
    #[serde(default)]
    pub renewed: bool,
}

impl IndexEntry {
    /// Whether this entry is a certificate of device `id` of organisation `org`.
    pub fn is_of(&self, org: &str, id: &str) -> bool {
        self.org == org && self.id == id
    }
}

impl CertIndex {
    /// Reads `index.json`.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let text = read_text(path)?;
        let index: Self = serde_json::from_str(&text).map_err(|source| PkiError::Index {
            path: path.to_owned(),
            source,
        })?;
        if let Some(bad) = index
            .certificates
            .iter()
            .find(|e| e.serial.is_empty() || hex::decode(&e.serial).is_err())
        {
            return Err(invalid_index(
                path,
                format!("serial {:?} is not hex", bad.serial),
            ));
        }
        Ok(index)
    }

    /// Writes `index.json` atomically.
    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|source| PkiError::Index {
            path: path.to_owned(),
            source,
        })?;
        text.push('\n');
        write_atomic(path, text.as_bytes(), PUBLIC_MODE)
    }

    /// Records `entry` as the device's current certificate: every earlier certificate of the
    /// same (organisation, id) that was still current is marked superseded by it.
    pub fn supersede_with(&mut self, entry: IndexEntry, at: OffsetDateTime) {
        for earlier in self
            .certificates
            .iter_mut()
            .filter(|e| e.is_of(&entry.org, &entry.id) && e.superseded_by.is_none())
        {
            earlier.superseded_by = Some(entry.serial.clone());
            earlier.superseded_at = Some(at);
        }
        self.certificates.push(entry);
    }

    /// The entry with this serial, if the CA issued it.
    pub fn find_serial(&self, serial_hex: &str) -> Option<&IndexEntry> {
        self.certificates
            .iter()
            .find(|e| e.serial.eq_ignore_ascii_case(serial_hex))
    }
}

/// An `index.json` error that is not a JSON syntax error.
pub(crate) fn invalid_index(path: &Path, message: String) -> PkiError {
    PkiError::Index {
        path: path.to_owned(),
        source: <serde_json::Error as serde::de::Error>::custom(message),
    }
}
