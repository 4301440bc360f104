//! The error of the operator-facing boundary: building the CA, issuing and revoking
//! certificates, reading the PKI directory and building TLS configs. Every message names the
//! file or the value at fault so that an operator can act on it; [`PkiError::code`] gives a
//! stable code for logs and tests. Device-facing failures have their own types
//! ([`crate::RenewError`], [`crate::IdentityError`]).

use std::io;
use std::path::PathBuf;

/// Why a PKI operation or a TLS config build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was attempted ("read", "write", "create directory", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A PEM file or string holds nothing usable of the expected kind.
    #[error("{origin}: {detail}")]
    Pem {
        /// The file path, or a description of an in-memory PEM string.
        origin: String,
        /// What is wrong with it.
        detail: String,
    },
    /// `init_ca` found an existing CA and will not overwrite it.
    #[error(
        "a CA already exists in {} ({} is present); refusing to overwrite it",
        dir.display(),
        existing.display()
    )]
    CaExists {
        /// The PKI directory.
        dir: PathBuf,
        /// The file that proves it.
        existing: PathBuf,
    },
    /// The directory holds no CA (yet).
    #[error("no CA in {}: {} is missing (initialise the CA first)", dir.display(), missing.display())]
    NoCa {
        /// The PKI directory.
        dir: PathBuf,
        /// The missing file.
        missing: PathBuf,
    },
    /// A device id, organisation, CA name or server name is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which name ("device id", "org", ...).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A validity period is empty or out of range.
    #[error("invalid validity: {0}")]
    InvalidValidity(String),
    /// rcgen could not build or sign a certificate, key, CRL or CSR.
    #[error("cannot build certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a certificate, key or protocol setting.
    #[error("{origin}: {source}")]
    Tls {
        /// What was being configured (names the files involved).
        origin: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built (no CA, or a CRL that does not parse).
    #[error("cannot build the client certificate verifier from {origin}: {source}")]
    Verifier {
        /// The CA bundle and CRL files involved.
        origin: String,
        /// rustls' reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A replacement CRL is older (a lower CRL number) than the one in service: refused, so an
    /// old signed CRL put back in place cannot undo revocations.
    #[error(
        "{origin} holds CRL #{found}, older than CRL #{in_service} in service; keeping that one"
    )]
    StaleCrl {
        /// Where the CRL came from (its file, or the PKI ledger).
        origin: String,
        /// Its CRL number.
        found: u64,
        /// The number of the CRL in service.
        in_service: u64,
    },
}

impl PkiError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Pem { .. } => "pem",
            Self::CaExists { .. } => "ca_exists",
            Self::NoCa { .. } => "no_ca",
            Self::InvalidName { .. } => "invalid_name",
            Self::InvalidValidity(_) => "invalid_validity",
            Self::Certificate(_) => "certificate",
            Self::Tls { .. } => "tls",
            Self::Verifier { .. } => "tls_verifier",
            Self::Random => "random",
            Self::StaleCrl { .. } => "stale_crl",
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
