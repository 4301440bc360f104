//! Hot reload of the device endpoint's TLS config. The host asks for [`ReloadingServerConfig::current`]
//! for each new connection and calls [`ReloadingServerConfig::reload_if_changed`] on a timer;
//! when the CRL, the CA bundle or the server certificate or key was replaced (the PKI commands
//! replace files by rename), the config is rebuilt, so a revocation or a new server
//! certificate applies to new connections without a restart. Connections already open keep
//! the config they were accepted with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

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
        }
    }

    /// Builds the config from the files as they are now.
    pub fn build(&self) -> Result<Arc<ServerConfig>, PkiError> {
        device_server_config(
            &self.server_cert,
            &self.server_key,
            &self.client_ca,
            self.crl.as_deref(),
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
}

impl ReloadingServerConfig {
    /// Builds the first config; fails if the files do not make one.
    pub fn new(files: DeviceTlsFiles) -> Result<Self, PkiError> {
        // Stamps are taken before reading, so a change during the build is seen next time.
        let stamps = files.stamps();
        let config = files.build()?;
        Ok(Self {
            files,
            current: ArcSwap::new(config),
            built_from: Mutex::new(stamps),
        })
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
        let mut built_from = self.built_from.lock().unwrap_or_else(|p| p.into_inner());
        let stamps = self.files.stamps();
        if stamps == *built_from {
            return Ok(false);
        }
        let config = self.files.build()?;
        self.current.store(config);
        *built_from = stamps;
        Ok(true)
    }
}
