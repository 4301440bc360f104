//! The CRL: which certificates it lists and how it is signed. The issuing service keeps the
//! ledger of issued certificates (PostgreSQL) and publishes a new CRL, with a number one higher
//! than the last, on every revocation and periodically; hosts enforce it.
//!
//! Device certificates are short-lived, so the main way to cut a device off is to refuse its
//! renewal (see [`mod@crate::renew`]); the CRL closes the window until its current certificate
//! expires.

use time::OffsetDateTime;

use crate::PkiError;
use crate::ca::{CRL_VALIDITY, Ca};

/// How long a superseded certificate keeps connecting after it was replaced, so that a device
/// that renewed can finish what it was doing on its open connection and reconnect with the
/// new certificate. After it the certificate is listed in the next CRL (published at the
/// latest after the issuing service's refresh interval).
pub const SUPERSEDED_GRACE: time::Duration = time::Duration::hours(1);

/// A CRL signed by the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlPem {
    /// The CRL, PEM.
    pub pem: String,
    /// Its thisUpdate.
    pub this_update: OffsetDateTime,
    /// Its nextUpdate ([`CRL_VALIDITY`] later).
    pub next_update: OffsetDateTime,
}

/// Certificates superseded before this time are past their grace and belong on a CRL signed
/// at `now`.
pub fn superseded_cutoff(now: OffsetDateTime) -> OffsetDateTime {
    now - SUPERSEDED_GRACE
}

/// Signs CRL number `number` listing `retired`: (serial in hex, time it left service) of every
/// certificate, still valid, that is revoked or superseded past its grace. An expired
/// certificate is refused anyway, so RFC 5280 lets it leave the CRL; with certificates of a
/// few days this keeps the CRL small however many devices were revoked.
pub fn sign_crl<'a>(
    ca: &Ca,
    number: u64,
    retired: impl IntoIterator<Item = (&'a str, OffsetDateTime)>,
    now: OffsetDateTime,
) -> Result<CrlPem, PkiError> {
    let revoked = retired
        .into_iter()
        .map(|(serial, at)| {
            hex::decode(serial)
                .map(|bytes| (bytes, at))
                .map_err(|_| PkiError::Pem {
                    origin: "the PKI ledger".into(),
                    detail: format!("serial {serial:?} is not hex"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pem = ca.sign_crl(number, &revoked, now)?;
    Ok(CrlPem {
        pem,
        this_update: now,
        next_update: now + CRL_VALIDITY,
    })
}
