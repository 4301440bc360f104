//! Weir's device PKI. Devices connect with mutual TLS and their client certificate *is* their
//! identity; the operator runs a private CA, and no public root is trusted anywhere. This crate
//! issues and revokes the certificates, renews device certificates from CSRs, reads the
//! identity out of a verified certificate, and builds every rustls config Weir uses.
//!
//! # The PKI directory
//!
//! The operator's commands work on one directory of PEM files ([`PkiPaths`] names them):
//!
//! | file | contents |
//! | --- | --- |
//! | `ca.pem` | the CA certificate (ECDSA P-256, ten years): the only trust anchor |
//! | `ca-key.pem` | the CA private key, mode 0600 |
//! | `crl.pem` | the current CRL, signed by the CA, rebuilt on every revocation |
//! | `index.json` | every device certificate issued (id, org, serial hex, not_before, not_after, revoked_at, superseded_by and superseded_at or null) and the last CRL number |
//! | `index.lock` | locked while `index.json` and `crl.pem` are updated |
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
//! - [`crl`]: [`revoke_device`], [`refresh_crl`].
//! - [`mod@renew`]: certificate renewal from a CSR ([`renew()`], [`renew_recorded`]).
//! - [`identity`]: [`DeviceIdentity`] and [`identity_from_cert`].
//! - [`tls`]: the rustls configs; [`reload`]: the self-reloading device endpoint config.
//!
//! # Example
//!
//! ```
//! use weir_pki::{ClientAlpn, DeviceTlsFiles, ReloadingServerConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let dir = dir.path();
//! weir_pki::init_ca(dir, "Example Operator CA")?;
//! weir_pki::issue_server(dir, &["localhost".into(), "127.0.0.1".into()], 90)?;
//! let device = weir_pki::issue_device(dir, "meter-0001", "acme", 7)?;
//!
//! // The device endpoint: mutual TLS against ca.pem, enforcing crl.pem.
//! let server = ReloadingServerConfig::new(DeviceTlsFiles::in_pki_dir(dir))?;
//! // The device: trusts ca.pem only, presents its certificate.
//! let client = weir_pki::device_client_config(
//!     &dir.join("ca.pem"),
//!     &device.cert,
//!     &device.key,
//!     ClientAlpn::H2,
//! )?;
//!
//! weir_pki::revoke_device(dir, "acme", "meter-0001")?;
//! assert!(server.reload_if_changed()?); // new connections now see the new CRL
//! # let _ = (server.current(), client);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![warn(missing_docs)]

pub mod ca;
pub mod crl;
pub mod error;
pub mod files;
pub mod identity;
pub mod index;
pub mod issue;
pub mod reload;
pub mod renew;
pub mod tls;

pub use ca::{Ca, IssuedCert, SignedCert};
pub use crl::{Revocation, SUPERSEDED_GRACE, refresh_crl, revoke_device};
pub use error::PkiError;
pub use files::PkiPaths;
pub use identity::{DeviceIdentity, IdentityError, identity_from_cert};
pub use index::{CertIndex, IndexEntry};
pub use issue::{CaFiles, DeviceFiles, ServerFiles, init_ca, issue_device, issue_server};
pub use reload::{CrlInfo, DeviceTlsFiles, ExpiredCrlPolicy, ReloadingServerConfig};
pub use renew::{RenewError, renew, renew_recorded};
pub use tls::{
    ClientAlpn, api_server_config, device_client_config, device_client_config_from_pem,
    device_server_config, public_client_config,
};
