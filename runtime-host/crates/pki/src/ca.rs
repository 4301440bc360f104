//! The operator's certificate authority in memory: its certificate and signing key, and the
//! only code that signs anything — device certificates (with a fresh key, or for a key from a
//! CSR), server certificates and CRLs. It does no file I/O apart from [`Ca::load`]; the
//! directory operations in [`crate::issue`] and the issuing service (through [`crate::crl`] and
//! [`mod@crate::renew`]) decide what gets signed and record it.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, ServerName};
use time::{Duration, OffsetDateTime};

use crate::PkiError;
use crate::files::{PkiPaths, read_text};
use crate::identity::check_name;

/// Validity of a new CA certificate.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a CRL is announced to be current (its nextUpdate).
pub const CRL_VALIDITY: Duration = Duration::days(7);
/// Longest validity, in days, that the directory commands and renewal issue (the CA's own).
pub const MAX_DAYS: i64 = CA_VALIDITY.whole_days();
/// How far back `not_before` is set for certificates issued "now", to tolerate peers whose
/// clock runs a little behind ours.
pub const BACKDATE: Duration = Duration::minutes(5);

/// A certificate authority able to issue device and server certificates and CRLs.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// A certificate issued together with a freshly generated private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its PKCS#8 private key, PEM.
    pub key_pem: String,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// Start of validity (whole seconds).
    pub not_before: OffsetDateTime,
    /// End of validity (whole seconds).
    pub not_after: OffsetDateTime,
}

/// A certificate signed for a public key the CA never saw the private half of (a CSR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// Start of validity (whole seconds).
    pub not_before: OffsetDateTime,
    /// End of validity (whole seconds).
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// Generates a new CA (ECDSA P-256, valid ten years, may sign end-entity certificates and
    /// CRLs only) without writing anything.
    pub fn generate_in_memory(name: &str) -> Result<Self, PkiError> {
        check_ca_name(name)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        // Path length 0: whatever a CSR asks for, nothing below this CA can be another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA of a PKI directory (`ca.pem` and `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let paths = PkiPaths::new(dir);
        for file in [paths.ca_cert(), paths.ca_key()] {
            if !file.exists() {
                return Err(PkiError::NoCa {
                    dir: dir.to_owned(),
                    missing: file,
                });
            }
        }
        let cert_path = paths.ca_cert();
        let key_path = paths.ca_key();
        Self::from_pem_named(
            &read_text(&cert_path)?,
            &cert_path.display().to_string(),
            &read_text(&key_path)?,
            &key_path.display().to_string(),
        )
    }

    /// Builds a CA from its certificate and private key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        Self::from_pem_named(cert_pem, "CA certificate PEM", key_pem, "CA key PEM")
    }

    fn from_pem_named(
        cert_pem: &str,
        cert_origin: &str,
        key_pem: &str,
        key_origin: &str,
    ) -> Result<Self, PkiError> {
        let pem_err = |origin: &str, detail: String| PkiError::Pem {
            origin: origin.to_owned(),
            detail,
        };
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| pem_err(key_origin, format!("not a usable private key: {e}")))?;
        let mut certs = crate::tls::parse_certs(cert_pem.as_bytes(), cert_origin)?;
        if certs.len() != 1 {
            return Err(pem_err(
                cert_origin,
                format!("holds {} certificates; expected only the CA's", certs.len()),
            ));
        }
        let cert_der = certs.remove(0);
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| pem_err(cert_origin, format!("not an X.509 certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(pem_err(
                key_origin,
                format!("does not match the certificate in {cert_origin}"),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| pem_err(cert_origin, format!("not a usable CA certificate: {e}")))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    /// The CA certificate, PEM: the trust anchor to give devices and the device endpoint.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a device (client) certificate for a new key: subject CN=`id`, O=`org`,
    /// clientAuth only, valid from `not_before` to `not_after` — which may lie in the past or
    /// the future, so tests can make expired and not-yet-valid certificates.
    pub fn issue_device_cert(
        &self,
        id: &str,
        org: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let signed = self.sign_device_key(id, org, &key, not_before, not_after)?;
        Ok(IssuedCert {
            cert_pem: signed.cert_pem,
            key_pem: key.serialize_pem(),
            serial_hex: signed.serial_hex,
            not_before: signed.not_before,
            not_after: signed.not_after,
        })
    }

    /// Signs a device certificate for an existing public key (from a CSR). Only `id` and `org`
    /// end up in the subject; nothing else the key's owner asked for is copied.
    pub fn sign_device_key(
        &self,
        id: &str,
        org: &str,
        public_key: &impl PublicKeyData,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<SignedCert, PkiError> {
        check_name("device id", id)?;
        check_name("org", org)?;
        let mut params = end_entity_params(not_before, not_after)?;
        params.distinguished_name.push(DnType::CommonName, id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&params, public_key)
    }

    /// Issues a server certificate for a new key, valid for each of `names`: DNS names, or IP
    /// addresses written as such ("127.0.0.1", "::1"). serverAuth only.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let first = names.first().ok_or(PkiError::InvalidName {
            what: "server name list",
            value: String::new(),
            reason: "give at least one DNS name or IP address",
        })?;
        let mut params = end_entity_params(not_before, not_after)?;
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in names {
            params.subject_alt_names.push(server_san(name)?);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let signed = self.sign(&params, &key)?;
        Ok(IssuedCert {
            cert_pem: signed.cert_pem,
            key_pem: key.serialize_pem(),
            serial_hex: signed.serial_hex,
            not_before: signed.not_before,
            not_after: signed.not_after,
        })
    }

    /// Signs a CRL numbered `number` listing `revoked` (serial bytes, revocation time), valid
    /// from `now` for [`CRL_VALIDITY`]; returns it as PEM.
    pub(crate) fn sign_crl(
        &self,
        number: u64,
        revoked: &[(Vec<u8>, OffsetDateTime)],
        now: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
                .collect(),
            // Same method that derived the CA's subject key identifier, so the CRL's authority
            // key identifier matches it.
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<SignedCert, PkiError> {
        let cert = params.signed_by(public_key, &self.issuer)?;
        let serial = params
            .serial_number
            .as_ref()
            .expect("end_entity_params sets a serial");
        Ok(SignedCert {
            cert_pem: cert.pem(),
            serial_hex: hex::encode(serial.as_ref()),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// The current time, truncated to whole seconds (what X.509 validity can express).
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - Duration::nanoseconds(i64::from(now.nanosecond()))
}

/// `now() - BACKDATE` and `now() + days`: the validity of a certificate issued for `days`.
pub(crate) fn validity_for_days(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if days == 0 || i64::from(days) > MAX_DAYS {
        return Err(PkiError::InvalidValidity(format!(
            "a certificate must be valid for 1 to {MAX_DAYS} days, not {days}"
        )));
    }
    let now = now();
    Ok((now - BACKDATE, now + Duration::days(i64::from(days))))
}

/// Parameters shared by every end-entity certificate: validity, a random serial, not a CA,
/// digitalSignature (all an ECDSA TLS key needs), and an authority key identifier.
fn end_entity_params(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    if not_after <= not_before {
        return Err(PkiError::InvalidValidity(format!(
            "not_after ({not_after}) must be later than not_before ({not_before})"
        )));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A random positive 127-bit serial. Without one, rcgen derives the serial from the public
/// key, and a renewal that reuses its key would get the serial of the certificate it replaces.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Clear the sign bit (serials are positive) and set the next one, so the DER integer is
    // always exactly 16 bytes and the hex form never has a leading zero byte to disagree on.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn server_san(name: &str) -> Result<SanType, PkiError> {
    let invalid = |reason| PkiError::InvalidName {
        what: "server name",
        value: name.to_owned(),
        reason,
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    ServerName::try_from(name).map_err(|_| invalid("not a DNS name or IP address"))?;
    let ia5 = name
        .try_into()
        .map_err(|_| invalid("not a DNS name or IP address"))?;
    Ok(SanType::DnsName(ia5))
}

fn check_ca_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.trim().is_empty() {
        Some("must not be empty")
    } else if name.chars().count() > 64 {
        Some("must be at most 64 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(PkiError::InvalidName {
            what: "CA name",
            value: name.to_owned(),
            reason,
        }),
    }
}
