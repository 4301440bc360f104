//! The layout of the PKI directory and the few file primitives every operation uses: reads
//! that name the file in their error, atomic writes (temp file + rename, so a reader — the TLS
//! reloader, another process — never sees half a file) with private modes for keys, and the
//! directory lock that keeps two commands from interleaving their writes (a key of one with the
//! certificate of the other).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::PkiError;

/// Mode of private key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificates.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// The paths of the files in a PKI directory (see the crate documentation for what each holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    dir: PathBuf,
}

impl PkiPaths {
    /// The layout of the PKI directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`: the CA certificate, the only trust anchor of devices and server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca-key.pem`: the CA private key (mode 0600).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// `server.pem`: the device endpoint's certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `server-key.pem`: the device endpoint's private key (mode 0600).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// `devices/`: certificates and keys issued by the operator, one folder per organisation.
    pub fn devices_dir(&self) -> PathBuf {
        self.dir.join("devices")
    }

    /// `devices/<org>/`: the organisation's device files. A device is (organisation, id): the
    /// same id in two organisations is two devices.
    pub fn org_devices_dir(&self, org: &str) -> PathBuf {
        self.devices_dir().join(org)
    }

    /// `devices/<org>/<id>.pem`.
    pub fn device_cert(&self, org: &str, id: &str) -> PathBuf {
        self.org_devices_dir(org).join(format!("{id}.pem"))
    }

    /// `devices/<org>/<id>-key.pem` (mode 0600).
    pub fn device_key(&self, org: &str, id: &str) -> PathBuf {
        self.org_devices_dir(org).join(format!("{id}-key.pem"))
    }

    /// `pki.lock`: locked while the CA or the server's key pair is being written.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("pki.lock")
    }
}

/// Reads a whole text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| PkiError::io("read", path, e))
}

/// Creates `dir` and its parents if needed.
pub(crate) fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|e| PkiError::io("create directory", dir, e))
}

/// Replaces `path` with `contents` atomically: written to a temporary file in the same
/// directory, synced, given `mode`, then renamed over `path`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |e| PkiError::io("write", path, e);
    // tempfile creates the file with mode 0600, so a key is never readable by others, even
    // before `set_mode` runs.
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
    tmp.write_all(contents).map_err(io)?;
    set_mode(tmp.as_file(), mode).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Serialises writes to one PKI directory: a process-wide mutex for the threads of this
/// process, and an exclusive file lock on `pki.lock` for other processes.
pub(crate) struct DirLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

static IN_PROCESS: Mutex<()> = Mutex::new(());

impl DirLock {
    /// Blocks until the directory is ours; released on drop.
    pub(crate) fn acquire(paths: &PkiPaths) -> Result<Self, PkiError> {
        // A panic while holding the lock leaves the files as they were (writes are atomic),
        // so a poisoned mutex is safe to take over.
        let guard = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        let path = paths.lock();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PkiError::io("open", &path, e))?;
        file.lock().map_err(|e| PkiError::io("lock", &path, e))?;
        Ok(Self {
            _file: file,
            _guard: guard,
        })
    }
}
