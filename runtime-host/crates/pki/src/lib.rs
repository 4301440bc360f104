//! Weir's device PKI. Devices connect with mutual TLS and their client certificate *is* their
//! identity; the operator runs a private CA, and no public root is trusted anywhere. This crate
//! issues and revokes the certificates, renews device certificates from CSRs, reads the
//! identity out of a verified certificate, and builds every rustls config Weir uses.
//!
//! # Where the PKI lives
//!
//! The CA key stays with the issuing service (`weir ca serve`, run centrally) and the
//! operator's commands; edge hosts hold only the CA certificate and their server key pair. The
//! state every host shares — each certificate issued, revocations, the CRL and its number, the
//! renewal requests — is the PKI ledger in PostgreSQL (`weir_storage`'s `pki` module). This
//! crate holds no state: it signs, checks and parses, and the callers record.
//!
//! The operator's files live in one directory ([`PkiPaths`] names them):
//!
//! | file | contents |
//! | --- | --- |
//! | `ca.pem` | the CA certificate (ECDSA P-256, ten years): the only trust anchor |
//! | `ca-key.pem` | the CA private key, mode 0600 — only where certificates are signed |
//! | `server.pem`, `server-key.pem` | the device endpoint's certificate and key (0600) |
//! | `devices/<org>/<id>.pem`, `devices/<org>/<id>-key.pem` | device certificates and keys (0600) issued by the operator; a device is (organisation, id) |
//!
//! Files are replaced atomically (written aside, then renamed), so a reader never sees half a
//! file, and [`ReloadingServerConfig`] notices the change.
//!
//! # Modules
//!
//! - [`ca`]: the CA in memory, the only code that signs.
//! - [`issue`]: [`init_ca`], [`issue_server`], [`issue_device`].
//! - [`crl`]: what a CRL lists and [`sign_crl`].
//! - [`mod@renew`]: certificate renewal from a CSR ([`renew()`]) and its policy
//!   ([`check_renewal`]).
//! - [`identity`]: [`DeviceIdentity`] and [`identity_from_cert`].
//! - [`tls`]: the rustls configs; [`reload`]: the device endpoint config, kept current.
//!
//! # Example
//!
//! ```
//! use weir_pki::{ClientAlpn, DeviceTlsFiles, InstalledCrl, ReloadingServerConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let dir = dir.path();
//! weir_pki::init_ca(dir, "Example Operator CA")?;
//! weir_pki::issue_server(dir, &["localhost".into(), "127.0.0.1".into()], 90)?;
//! let device = weir_pki::issue_device(dir, "meter-0001", "acme", 7)?;
//! let ca = weir_pki::Ca::load(dir)?;
//! let now = weir_pki::ca::now();
//!
//! // The device endpoint: mutual TLS against ca.pem, enforcing the CRL.
//! let empty = weir_pki::sign_crl(&ca, 1, [], now)?;
//! let crl = InstalledCrl::from_pem(empty.pem.as_bytes(), "the first CRL")?;
//! let server = ReloadingServerConfig::new(DeviceTlsFiles::in_pki_dir(dir), Some(crl))?;
//! // The device: trusts ca.pem only, presents its certificate.
//! let client = weir_pki::device_client_config(
//!     &dir.join("ca.pem"),
//!     &device.cert,
//!     &device.key,
//!     ClientAlpn::H2,
//! )?;
//!
//! // Revoking: a CRL with a higher number listing the serial.
//! let revoking = weir_pki::sign_crl(&ca, 2, [(device.serial_hex.as_str(), now)], now)?;
//! assert!(server.install_crl(InstalledCrl::from_pem(revoking.pem.as_bytes(), "CRL #2")?)?);
//! assert!(server.is_revoked(&device.serial_hex)); // new connections are refused
//! # let _ = (server.current(), client);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![warn(missing_docs)]

pub mod ca;
pub mod crl;
pub mod error;
pub mod files;
pub mod identity;
pub mod issue;
pub mod reload;
pub mod renew;
pub mod tls;

pub use ca::{Ca, IssuedCert, SignedCert};
pub use crl::{CrlPem, SUPERSEDED_GRACE, sign_crl, superseded_cutoff};
pub use error::PkiError;
pub use files::PkiPaths;
pub use identity::{DeviceIdentity, IdentityError, identity_from_cert};
pub use issue::{CaFiles, DeviceFiles, ServerFiles, init_ca, issue_device, issue_server};
pub use reload::{CrlInfo, DeviceTlsFiles, ExpiredCrlPolicy, InstalledCrl, ReloadingServerConfig};
pub use renew::{CertStatus, RenewError, check_csr, check_renewal, renew};
pub use tls::{
    ClientAlpn, api_server_config, device_client_config, device_client_config_from_pem,
    device_server_config, public_client_config,
};
