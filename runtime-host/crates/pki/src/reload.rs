//! Hot reload of the device endpoint's TLS config. The host asks for [`ReloadingServerConfig::current`]
//! for each new connection and calls [`ReloadingServerConfig::reload_if_changed`] on a timer;
//! when the CRL, the CA bundle or the server certificate or key was replaced (the PKI commands
//! replace files by rename), the config is rebuilt, so a revocation or a new server
//! certificate applies to new connections without a restart. Connections already open keep
//! the config they were accepted with.
//!
//! The CRL is also checked for freshness: a replacement with a lower CRL number than the one in
//! service is refused (an old signed CRL put back cannot undo revocations), and
//! [`ExpiredCrlPolicy`] says what happens once its nextUpdate has passed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use time::OffsetDateTime;

use crate::PkiError;
use crate::files::PkiPaths;
use crate::tls::device_server_config;

/// The files the device endpoint's TLS config is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTlsFiles {
    /// Server certificate chain, PEM.
    pub server_cert: PathBuf,
    /// Server private key, PEM.
    pub server_key: PathBuf,
    /// CA bundle that client certificates must chain to, PEM.
    pub client_ca: PathBuf,
    /// CRL(s) to enforce, PEM; `None` for no revocation checking.
    pub crl: Option<PathBuf>,
    /// What to do once the CRL's nextUpdate has passed.
    pub expired_crl: ExpiredCrlPolicy,
}

/// What the device endpoint does with a CRL whose nextUpdate has passed (it is refreshed by
/// the host holding the CA, by `weir pki refresh-crl`, or by any revocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiredCrlPolicy {
    /// Refuse every device certificate until a current CRL is in place: nobody is let in on
    /// revocation information that may be out of date.
    #[default]
    Refuse,
    /// Keep enforcing the last CRL (its revocations stay in force) and raise the alarm.
    Keep,
}

/// The number, validity and revoked serials of a CRL, read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Its CRL number (0 when it has none).
    pub number: u64,
    /// Its thisUpdate.
    pub this_update: OffsetDateTime,
    /// Its nextUpdate, if it has one.
    pub next_update: Option<OffsetDateTime>,
    /// The serials it revokes, lowercase hex (as [`crate::DeviceIdentity::serial_hex`]).
    pub revoked: Arc<HashSet<String>>,
}

impl CrlInfo {
    /// Reads the first CRL in the PEM file `path`.
    pub fn read(path: &Path) -> Result<Self, PkiError> {
        let origin = path.display().to_string();
        let invalid = |detail: String| PkiError::Pem {
            origin: origin.clone(),
            detail,
        };
        let der = CertificateRevocationListDer::from_pem_file(path)
            .map_err(|e| invalid(format!("no readable X509 CRL: {e}")))?;
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| invalid(format!("not a CRL: {e}")))?;
        let number = crl.crl_number().map_or(0, |n| {
            n.to_bytes_be().iter().fold(0u64, |acc, byte| {
                acc.saturating_mul(256).saturating_add(u64::from(*byte))
            })
        });
        let revoked = crl
            .iter_revoked_certificates()
            .map(|entry| hex::encode(entry.raw_serial()))
            .collect();
        Ok(Self {
            number,
            this_update: crl.last_update().to_datetime(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            revoked: Arc::new(revoked),
        })
    }

    /// Whether its nextUpdate lies before `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.next_update.is_some_and(|next| next < now)
    }
}

impl DeviceTlsFiles {
    /// The standard files of a PKI directory: `server.pem`, `server-key.pem`, `ca.pem` and
    /// `crl.pem`.
    pub fn in_pki_dir(dir: &Path) -> Self {
        let paths = PkiPaths::new(dir);
        Self {
            server_cert: paths.server_cert(),
            server_key: paths.server_key(),
            client_ca: paths.ca_cert(),
            crl: Some(paths.crl()),
            expired_crl: ExpiredCrlPolicy::default(),
        }
    }

    /// Builds the config from the files as they are now.
    pub fn build(&self) -> Result<Arc<ServerConfig>, PkiError> {
        device_server_config(
            &self.server_cert,
            &self.server_key,
            &self.client_ca,
            self.crl.as_deref(),
            self.expired_crl == ExpiredCrlPolicy::Refuse,
        )
    }

    fn stamps(&self) -> Vec<Option<FileStamp>> {
        [
            Some(&self.server_cert),
            Some(&self.server_key),
            Some(&self.client_ca),
            self.crl.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| FileStamp::of(p))
        .collect()
    }
}

/// What identifies one version of a file. The inode is part of it because files are replaced
/// by rename: a new version is detected even when the clock or the filesystem's timestamp
/// granularity gives it the same modification time as the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}

/// The device endpoint's current TLS config, rebuilt when its files change.
#[derive(Debug)]
pub struct ReloadingServerConfig {
    files: DeviceTlsFiles,
    current: ArcSwap<ServerConfig>,
    /// Stamps of the files the current config was built from; the mutex also keeps two
    /// reloads from racing.
    built_from: Mutex<Vec<Option<FileStamp>>>,
    /// The CRL in service, if any.
    crl: Mutex<Option<CrlInfo>>,
}

impl ReloadingServerConfig {
    /// Builds the first config; fails if the files do not make one.
    pub fn new(files: DeviceTlsFiles) -> Result<Self, PkiError> {
        // Stamps are taken before reading, so a change during the build is seen next time.
        let stamps = files.stamps();
        let crl = files.crl.as_deref().map(CrlInfo::read).transpose()?;
        let config = files.build()?;
        Ok(Self {
            files,
            current: ArcSwap::new(config),
            built_from: Mutex::new(stamps),
            crl: Mutex::new(crl),
        })
    }

    /// The number and validity of the CRL in service, if revocation is checked.
    pub fn crl_info(&self) -> Option<CrlInfo> {
        self.crl.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the CRL in service revokes the certificate with serial `serial_hex`: what an
    /// open connection checks after a reload.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.crl
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|crl| crl.revoked.contains(&serial_hex.to_ascii_lowercase()))
    }

    /// The config to accept a new connection with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// The files watched.
    pub fn files(&self) -> &DeviceTlsFiles {
        &self.files
    }

    /// Rebuilds the config if any file changed since the last successful build. Returns
    /// whether it was replaced. On error (including a CRL older than the one in service:
    /// [`PkiError::StaleCrl`]) the previous config stays in service and the next call tries
    /// again.
    pub fn reload_if_changed(&self) -> Result<bool, PkiError> {
        let mut built_from = self.built_from.lock().unwrap_or_else(|p| p.into_inner());
        let stamps = self.files.stamps();
        if stamps == *built_from {
            return Ok(false);
        }
        let mut in_service = self.crl.lock().unwrap_or_else(|p| p.into_inner());
        let crl = match &self.files.crl {
            Some(path) => {
                let found = CrlInfo::read(path)?;
                if let Some(current) = in_service.as_ref()
                    && found.number < current.number
                {
                    return Err(PkiError::StaleCrl {
                        path: path.clone(),
                        found: found.number,
                        in_service: current.number,
                    });
                }
                Some(found)
            }
            None => None,
        };
        let config = self.files.build()?;
        self.current.store(config);
        *built_from = stamps;
        *in_service = crl;
        Ok(true)
    }
}
