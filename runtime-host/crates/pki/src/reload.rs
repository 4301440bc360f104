//! The device endpoint's TLS config, kept current. The host asks for
//! [`ReloadingServerConfig::current`] for each new connection. The certificate files are
//! watched ([`ReloadingServerConfig::reload_if_changed`], on a timer: the PKI commands replace
//! files by rename); the CRL comes from the PKI ledger and is installed with
//! [`ReloadingServerConfig::install_crl`]. Either way the config is rebuilt, so a revocation or
//! a new server certificate applies to new connections without a restart; connections already
//! open keep the config they were accepted with (the host checks them against
//! [`ReloadingServerConfig::is_revoked`]).
//!
//! The CRL is also checked for freshness: one with a lower CRL number than the one in service
//! is refused (an old signed CRL put back cannot undo revocations), and [`ExpiredCrlPolicy`]
//! says what happens once its nextUpdate has passed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::CertificateRevocationListDer;
use time::OffsetDateTime;

use crate::PkiError;
use crate::files::PkiPaths;
use crate::tls::{device_server_config, parse_crls};

/// The files the device endpoint's TLS config is built from, and its CRL policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTlsFiles {
    /// Server certificate chain, PEM.
    pub server_cert: PathBuf,
    /// Server private key, PEM.
    pub server_key: PathBuf,
    /// CA bundle that client certificates must chain to, PEM.
    pub client_ca: PathBuf,
    /// What to do once the CRL's nextUpdate has passed.
    pub expired_crl: ExpiredCrlPolicy,
}

/// What the device endpoint does with a CRL whose nextUpdate has passed (the issuing service
/// re-signs it well before, and on every revocation).
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
    /// Reads the CRL `der`, from `origin` (named in errors).
    pub fn parse(der: &CertificateRevocationListDer<'_>, origin: &str) -> Result<Self, PkiError> {
        let invalid = |detail: String| PkiError::Pem {
            origin: origin.to_owned(),
            detail,
        };
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
    /// The standard files of a PKI directory: `server.pem`, `server-key.pem` and `ca.pem`.
    pub fn in_pki_dir(dir: &Path) -> Self {
        let paths = PkiPaths::new(dir);
        Self {
            server_cert: paths.server_cert(),
            server_key: paths.server_key(),
            client_ca: paths.ca_cert(),
            expired_crl: ExpiredCrlPolicy::default(),
        }
    }

    /// Builds the config from the files as they are now, enforcing `crl` if given.
    pub fn build(&self, crl: Option<&InstalledCrl>) -> Result<Arc<ServerConfig>, PkiError> {
        let (ders, origin) = crl.map_or((Vec::new(), ""), |crl| (crl.ders.clone(), &crl.origin));
        device_server_config(
            &self.server_cert,
            &self.server_key,
            &self.client_ca,
            ders,
            origin,
            self.expired_crl == ExpiredCrlPolicy::Refuse,
        )
    }

    fn stamps(&self) -> Vec<Option<FileStamp>> {
        [&self.server_cert, &self.server_key, &self.client_ca]
            .into_iter()
            .map(|p| FileStamp::of(p))
            .collect()
    }
}

/// A CRL in service: what it says, and its DER for the verifier.
#[derive(Debug, Clone)]
pub struct InstalledCrl {
    /// Its number, validity and revoked serials.
    pub info: CrlInfo,
    ders: Vec<CertificateRevocationListDer<'static>>,
    origin: String,
}

impl InstalledCrl {
    /// Parses the CRL PEM `pem` from `origin` (a file, or the PKI ledger; named in errors).
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, PkiError> {
        let ders = parse_crls(pem, origin)?;
        let info = CrlInfo::parse(&ders[0], origin)?;
        Ok(Self {
            info,
            ders,
            origin: origin.to_owned(),
        })
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

/// The device endpoint's current TLS config, rebuilt when its files change or a newer CRL is
/// installed.
#[derive(Debug)]
pub struct ReloadingServerConfig {
    files: DeviceTlsFiles,
    current: ArcSwap<ServerConfig>,
    /// What the current config was built from; the mutex also keeps two rebuilds from racing.
    state: Mutex<BuiltFrom>,
}

#[derive(Debug)]
struct BuiltFrom {
    stamps: Vec<Option<FileStamp>>,
    crl: Option<InstalledCrl>,
}

impl ReloadingServerConfig {
    /// Builds the first config, enforcing `crl` (`None`: no revocation checking, for tests of
    /// the handshake alone); fails if the files do not make one.
    pub fn new(files: DeviceTlsFiles, crl: Option<InstalledCrl>) -> Result<Self, PkiError> {
        // Stamps are taken before reading, so a change during the build is seen next time.
        let stamps = files.stamps();
        let config = files.build(crl.as_ref())?;
        Ok(Self {
            files,
            current: ArcSwap::new(config),
            state: Mutex::new(BuiltFrom { stamps, crl }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BuiltFrom> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number and validity of the CRL in service, if revocation is checked.
    pub fn crl_info(&self) -> Option<CrlInfo> {
        self.state().crl.as_ref().map(|crl| crl.info.clone())
    }

    /// Whether the CRL in service revokes the certificate with serial `serial_hex`: what an
    /// open connection checks after a new CRL is installed.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.state()
            .crl
            .as_ref()
            .is_some_and(|crl| crl.info.revoked.contains(&serial_hex.to_ascii_lowercase()))
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
    /// whether it was replaced. On error the previous config stays in service and the next
    /// call tries again.
    pub fn reload_if_changed(&self) -> Result<bool, PkiError> {
        let mut state = self.state();
        let stamps = self.files.stamps();
        if stamps == state.stamps {
            return Ok(false);
        }
        let config = self.files.build(state.crl.as_ref())?;
        self.current.store(config);
        state.stamps = stamps;
        Ok(true)
    }

    /// Puts `crl` in service if it is newer than the one in service. Returns whether it was
    /// installed: false when it has the same number. A CRL with a lower number is refused
    /// ([`PkiError::StaleCrl`]) and the one in service stays.
    pub fn install_crl(&self, crl: InstalledCrl) -> Result<bool, PkiError> {
        let mut state = self.state();
        if let Some(current) = &state.crl {
            if crl.info.number < current.info.number {
                return Err(PkiError::StaleCrl {
                    origin: crl.origin,
                    found: crl.info.number,
                    in_service: current.info.number,
                });
            }
            if crl.info.number == current.info.number {
                return Ok(false);
            }
        }
        let config = self.files.build(Some(&crl))?;
        self.current.store(config);
        state.crl = Some(crl);
        Ok(true)
    }
}
