//! The one place that builds rustls configs: the device endpoint (mutual TLS against the
//! operator's CA only, with its CRL), the optional HTTPS API (server auth only) and the device
//! side (trusting only the operator's CA, presenting a device certificate), and the alert
//! webhooks' outgoing HTTPS (the public web PKI roots, the only config that loads them). All use
//! the *ring* provider explicitly and TLS 1.3 + 1.2.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::PkiError;

/// TLS 1.3 preferred, TLS 1.2 for older device stacks. With the *ring* provider's default
/// suites TLS 1.2 is AEAD-only: ECDHE with AES-GCM or ChaCha20-Poly1305 (no CBC, no static
/// RSA key exchange), so enabling it adds no weak cipher.
const VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// ALPN offered by the servers, in order of preference.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The application protocol a device client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAlpn {
    /// HTTP/2 only (`h2`), what devices use.
    #[default]
    H2,
    /// HTTP/1.1 only (`http/1.1`), for clients without HTTP/2.
    Http11,
}

impl ClientAlpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Self::H2 => vec![b"h2".to_vec()],
            Self::Http11 => vec![b"http/1.1".to_vec()],
        }
    }
}

/// The device endpoint's config: presents `server_cert_pem`/`server_key_pem`, requires a
/// client certificate that chains to a CA in `client_ca_pem` (and nothing else), not revoked
/// by `crls` (from `crl_origin`, named in errors) when given; with `enforce_crl_expiry`, a CRL
/// past its nextUpdate refuses every client certificate. ALPN `h2`, then `http/1.1`.
pub fn device_server_config(
    server_cert_pem: &Path,
    server_key_pem: &Path,
    client_ca_pem: &Path,
    crls: Vec<CertificateRevocationListDer<'static>>,
    crl_origin: &str,
    enforce_crl_expiry: bool,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = provider();
    let roots = load_roots(client_ca_pem)?;
    let origin = if crls.is_empty() {
        client_ca_pem.display().to_string()
    } else {
        format!("{} and {crl_origin}", client_ca_pem.display())
    };
    // Revocation policy left at its strict defaults on purpose: the CRL comes from the same CA
    // that issued every client certificate, so a certificate whose status it cannot tell (an
    // "unknown" status) means a mismatched CA/CRL pair and is refused, not let through
    // (no `allow_unknown_revocation_status`). Whether the CRL's nextUpdate is enforced is the
    // operator's choice (`ExpiredCrlPolicy`).
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls);
    if enforce_crl_expiry {
        verifier = verifier.enforce_revocation_expiration();
    }
    let verifier = verifier
        .build()
        .map_err(|source| PkiError::Verifier { origin, source })?;
    let (certs, key) = load_cert_and_key(server_cert_pem, server_key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|source| tls_error("TLS protocol versions", source))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| tls_error(&pair_origin(server_cert_pem, server_key_pem), source))?;
    config.alpn_protocols = server_alpn();
    // No session resumption: a resumed session skips certificate verification, so it could
    // outlive the certificate's expiry or a revocation. Every connection does a full
    // handshake; devices reconnect rarely enough for that to cost nothing.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The HTTPS API's config: presents `cert_pem`/`key_pem`, no client authentication.
/// ALPN `h2`, then `http/1.1`.
pub fn api_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, PkiError> {
    let (certs, key) = load_cert_and_key(cert_pem, key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| tls_error("TLS protocol versions", source))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| tls_error(&pair_origin(cert_pem, key_pem), source))?;
    config.alpn_protocols = server_alpn();
    Ok(Arc::new(config))
}

/// A device's config: trusts only the CA(s) in `ca_pem` for the server, presents
/// `client_cert_pem` with `client_key_pem`, offers `alpn`.
pub fn device_client_config(
    ca_pem: &Path,
    client_cert_pem: &Path,
    client_key_pem: &Path,
    alpn: ClientAlpn,
) -> Result<Arc<ClientConfig>, PkiError> {
    let roots = load_roots(ca_pem)?;
    let (certs, key) = load_cert_and_key(client_cert_pem, client_key_pem)?;
    client_config(
        roots,
        certs,
        key,
        alpn,
        &pair_origin(client_cert_pem, client_key_pem),
    )
}

/// [`device_client_config`] from PEM strings rather than files.
pub fn device_client_config_from_pem(
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
    alpn: ClientAlpn,
) -> Result<Arc<ClientConfig>, PkiError> {
    let roots = roots_from(
        parse_certs(ca_pem.as_bytes(), "CA certificate PEM")?,
        "CA PEM",
    )?;
    let certs = parse_certs(client_cert_pem.as_bytes(), "client certificate PEM")?;
    let key = parse_key(client_key_pem.as_bytes(), "client key PEM")?;
    client_config(roots, certs, key, alpn, "client certificate and key PEM")
}

/// The config of outgoing HTTPS to arbitrary public servers (alert webhooks): server auth
/// against the Mozilla roots that `webpki-roots` ships (no dependency on the system's store),
/// no client certificate. ALPN is left to the HTTP client.
pub fn public_client_config() -> Result<ClientConfig, PkiError> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| tls_error("TLS protocol versions", source))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn client_config(
    roots: RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: ClientAlpn,
    origin: &str,
) -> Result<Arc<ClientConfig>, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| tls_error("TLS protocol versions", source))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|source| tls_error(origin, source))?;
    config.alpn_protocols = alpn.protocols();
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_alpn() -> Vec<Vec<u8>> {
    SERVER_ALPN.iter().map(|p| p.to_vec()).collect()
}

fn tls_error(origin: &str, source: rustls::Error) -> PkiError {
    PkiError::Tls {
        origin: origin.to_owned(),
        source,
    }
}

fn pair_origin(cert: &Path, key: &Path) -> String {
    format!("certificate {} with key {}", cert.display(), key.display())
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|e| PkiError::io("read", path, e))
}

fn load_cert_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let certs = parse_certs(&read_bytes(cert)?, &cert.display().to_string())?;
    let key = parse_key(&read_bytes(key)?, &key.display().to_string())?;
    Ok((certs, key))
}

fn load_roots(path: &Path) -> Result<RootCertStore, PkiError> {
    let origin = path.display().to_string();
    roots_from(parse_certs(&read_bytes(path)?, &origin)?, &origin)
}

fn roots_from(
    certs: Vec<CertificateDer<'static>>,
    origin: &str,
) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|source| tls_error(&format!("{origin}: unusable CA certificate"), source))?;
    }
    Ok(roots)
}

/// The CRLs in a PEM text (at least one), for error messages described by `origin`.
pub(crate) fn parse_crls(
    pem: &[u8],
    origin: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(origin, format!("invalid PEM: {e}")))?;
    if crls.is_empty() {
        return Err(pem_error(origin, "no X509 CRL found".into()));
    }
    Ok(crls)
}

/// Every certificate in a PEM text (at least one), for error messages described by `origin`.
pub(crate) fn parse_certs(
    pem: &[u8],
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(origin, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(origin, "no CERTIFICATE found".into()));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            pem_error(origin, "no PRIVATE KEY found".into())
        }
        e => pem_error(origin, format!("invalid PEM: {e}")),
    })
}

fn pem_error(origin: &str, detail: String) -> PkiError {
    PkiError::Pem {
        origin: origin.to_owned(),
        detail,
    }
}
