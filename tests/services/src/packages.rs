//! The system packages Weir's services come from, where their binaries live, and installing the
//! missing ones.
//!
//! Weir develops and tests on Debian. [`ensure_packages`] checks for each server's binaries; when
//! some are missing it runs `apt-get` if this process is root (sessions and CI are), and otherwise
//! fails with the exact command to run. Everything it does is printed to stderr, apt's output
//! included, so a test's or xtask's stdout stays clean.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result, bail};

use crate::user::running_as_root;

/// A server Weir needs from the system, named by what it is rather than by its Debian package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Package {
    /// The PostgreSQL server with its contrib modules (`postgres_fdw`): Debian's `postgresql`.
    Postgres,
    /// The Redis server: Debian's `redis-server`.
    Redis,
    /// The nginx web server with its `stream` module (TCP/TLS passthrough, `ssl_preread`):
    /// Debian's `nginx` and `libnginx-mod-stream`.
    Nginx,
}

impl Package {
    /// Where Debian's `libnginx-mod-stream` puts the dynamic `stream` module, which an nginx
    /// configuration with a `stream {}` block loads with `load_module` (Debian's default
    /// configuration does so through `/etc/nginx/modules-enabled`). An nginx built with the
    /// module in it (`--with-stream`, as the official nginx image) needs no such line.
    pub const NGINX_STREAM_MODULE: &'static str = "/usr/lib/nginx/modules/ngx_stream_module.so";

    /// The Debian package that provides this server.
    pub fn debian_package(self) -> &'static str {
        self.debian_packages()[0]
    }

    /// Every Debian package this server needs: the server's own first, then its modules.
    pub fn debian_packages(self) -> &'static [&'static str] {
        match self {
            Package::Postgres => &["postgresql"],
            Package::Redis => &["redis-server"],
            Package::Nginx => &["nginx", "libnginx-mod-stream"],
        }
    }

    /// The server's main binary (`postgres`, `redis-server`, `nginx`), when it is installed.
    pub fn program(self) -> Option<PathBuf> {
        match self {
            Package::Postgres => postgres_bin_dir().map(|bin| bin.join("postgres")),
            Package::Redis => redis_server_binary(),
            Package::Nginx => find_program("nginx", &["/usr/sbin/nginx"]),
        }
    }

    /// Whether the server's binary is present (for nginx: with its `stream` module).
    pub fn is_installed(self) -> bool {
        match (self, self.program()) {
            (_, None) => false,
            (Package::Nginx, Some(nginx)) => {
                Path::new(Self::NGINX_STREAM_MODULE).is_file() || nginx_has_static_stream(&nginx)
            }
            (_, Some(_)) => true,
        }
    }
}

/// Whether `nginx` was built with the `stream` module inside (`--with-stream`, not
/// `--with-stream=dynamic`); `nginx -V` prints its configure arguments to stderr.
fn nginx_has_static_stream(nginx: &Path) -> bool {
    let Ok(output) = Command::new(nginx).arg("-V").stdin(Stdio::null()).output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stderr);
    text.split_whitespace().any(|arg| arg == "--with-stream")
}

/// The `bin` directory of the newest PostgreSQL server installed the Debian way
/// (`/usr/lib/postgresql/<version>/bin`, holding `postgres`, `initdb`, `pg_ctl`, `pg_isready`).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    newest_postgres_bin_dir(Path::new("/usr/lib/postgresql"))
}

fn newest_postgres_bin_dir(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = parse_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            is_executable(&bin.join("postgres")).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// `15` → `[15]`, `9.6` → `[9, 6]`, so versions compare numerically rather than as text.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The `redis-server` binary: on `PATH`, or where Debian puts it.
pub fn redis_server_binary() -> Option<PathBuf> {
    find_program("redis-server", &["/usr/bin/redis-server"])
}

/// Finds `name` on `PATH`, then at the given well-known paths (a non-root `PATH` often lacks
/// `/usr/sbin`).
fn find_program(name: &str, well_known: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(well_known.iter().map(PathBuf::from))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Serialises installs within this process; apt's own lock (waited on) serialises processes.
static INSTALL: Mutex<Installer> = Mutex::new(Installer {
    index_updated: false,
});

struct Installer {
    /// `apt-get update` runs at most once per process.
    index_updated: bool,
}

/// Makes sure every package in `packages` is installed.
///
/// Missing ones are installed with `apt-get` when this process is root; otherwise this fails with
/// the `apt-get install` command to run. Safe to call from many threads and processes at once.
pub fn ensure_packages(packages: &[Package]) -> Result<()> {
    let mut installer = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    let mut missing: Vec<&str> = Vec::new();
    for package in packages.iter().filter(|package| !package.is_installed()) {
        for name in package.debian_packages() {
            if !missing.contains(name) {
                missing.push(*name);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.join(" ");
    if !running_as_root() {
        bail!(
            "missing system packages: {names}. Install them as root:\n    \
             sudo apt-get update && sudo apt-get install -y --no-install-recommends {names}"
        );
    }
    eprintln!("==> installing missing system packages: {names}");
    if !installer.index_updated {
        apt_get(&["update"])?;
        installer.index_updated = true;
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    apt_get(&install)?;

    let still_missing: Vec<&str> = packages
        .iter()
        .filter(|package| !package.is_installed())
        .flat_map(|package| package.debian_packages().iter().copied())
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "`apt-get install {names}` succeeded but these are still not usable: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

/// Runs `apt-get ARGS` non-interactively, waiting for apt's lock if another install holds it, with
/// apt's output sent to our stderr.
fn apt_get(args: &[&str]) -> Result<()> {
    eprintln!("==> apt-get {}", args.join(" "));
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate stderr for apt-get")?;
    let status = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!("`apt-get {}` failed ({status})", args.join(" ")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "apt-get not found: this does not look like Debian; install the packages for \
             `{}` with your system's package manager",
            args.join(" ")
        ),
        Err(err) => Err(err).context("cannot run apt-get"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_postgres_version_wins_numerically() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16", "notaversion"] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::write(bin.join("postgres"), "").unwrap();
            fs::set_permissions(bin.join("postgres"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        // A version without a server binary (only the client installed) does not count.
        fs::create_dir_all(root.path().join("17/bin")).unwrap();
        assert_eq!(
            newest_postgres_bin_dir(root.path()),
            Some(root.path().join("16/bin"))
        );
    }

    #[test]
    fn installed_packages_need_nothing() {
        let installed: Vec<Package> = [Package::Postgres, Package::Redis, Package::Nginx]
            .into_iter()
            .filter(|package| package.is_installed())
            .collect();
        ensure_packages(&installed).unwrap();
    }
}
