//! A private PostgreSQL server: a throw-away one per test, or the dev environment's persistent one.
//!
//! Each server is a cluster of its own (`initdb`), listening on 127.0.0.1 only, with trust
//! authentication for the `postgres` role and a database named `weir` created at start. When this
//! process is root the cluster belongs to, and runs as, the `postgres` system user. Temporary
//! clusters trade durability for speed (`fsync=off` and friends); the persistent one does not.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::orphan_guard::OrphanGuard;
use crate::packages::{Package, postgres_bin_dir};
use crate::ports::{free_port, is_free_soon};
use crate::server_process::{LaunchError, NotReady, ServerProcess, Signal};
use crate::user::{SystemUser, unprivileged_account};

/// How long a start may take before it is reported as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How many ports a temporary server tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 5;
/// The database every server has: the one [`PostgresServer::url`] names.
const DATABASE: &str = "weir";

/// A PostgreSQL server owned by this value: stopped, and for a temporary one deleted, on drop.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let mut postgres = weir_services::PostgresServer::start_temporary()?;
/// let url = postgres.url(); // postgres://postgres@127.0.0.1:PORT/weir
/// postgres.stop(); // an outage: connections now fail
/// postgres.start_again()?; // same port, same data
/// # Ok(())
/// # }
/// ```
pub struct PostgresServer {
    port: u16,
    bin_dir: PathBuf,
    /// The account the cluster runs as when this process is root; `None` means our own.
    owner: Option<SystemUser>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    /// Persistent clusters keep PostgreSQL's crash-safety settings.
    durable: bool,
    process: Option<ServerProcess>,
    guard: OrphanGuard,
    /// Deleted after everything above has stopped (fields drop in order).
    temp_dir: Option<TempDir>,
}

impl PostgresServer {
    /// Starts a throw-away server with a fresh cluster in a temporary directory, on a free port.
    ///
    /// Fast and not crash-safe (`fsync=off`). The directory is deleted when the value drops.
    pub fn start_temporary() -> Result<Self> {
        let bin_dir = find_bin_dir()?;
        let owner = cluster_owner()?;
        let temp_dir = tempfile::Builder::new()
            .prefix("weir-postgres-")
            .tempdir()
            .context("cannot create a temporary directory for PostgreSQL")?;
        let root = temp_dir.path().to_owned();
        let socket_dir = root.join("socket");
        fs::create_dir(&socket_dir)?;
        if let Some(owner) = &owner {
            owner.give(&root)?;
            owner.give(&socket_dir)?;
        }
        let guard = OrphanGuard::spawn(Signal::Interrupt, Some(&root))?;
        let mut server = PostgresServer {
            port: 0,
            bin_dir,
            owner,
            data_dir: root.join("data"),
            socket_dir,
            log: root.join("server.log"),
            durable: false,
            process: None,
            guard,
            temp_dir: Some(temp_dir),
        };
        server.initdb()?;
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => break,
                Err(LaunchError::PortTaken) if attempt < PORT_ATTEMPTS => attempt += 1,
                Err(LaunchError::PortTaken) => bail!(
                    "PostgreSQL could not bind a port: {PORT_ATTEMPTS} free ports were taken by \
                     other processes before it started"
                ),
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        server.create_database(DATABASE)?;
        Ok(server)
    }

    /// Starts the dev environment's server on `port`, keeping its cluster in `dir` between runs.
    ///
    /// `dir` holds `data/` (created with `initdb` when missing or empty, reused otherwise), the
    /// Unix socket and `postgres.log`. The server is crash-safe, and stops when the value drops.
    pub fn start_persistent(dir: &Path, port: u16) -> Result<Self> {
        let bin_dir = find_bin_dir()?;
        let owner = cluster_owner()?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        if let Some(owner) = &owner {
            owner.give(&dir)?;
        }
        if !is_free_soon(port) {
            bail!(
                "port {port} on 127.0.0.1 is in use, so the dev PostgreSQL cannot start: is \
                 another `cargo xtask run` running? Stop it, or find the owner with `ss -ltnp \
                 'sport = :{port}'`"
            );
        }
        let guard = OrphanGuard::spawn(Signal::Interrupt, None)?;
        let mut server = PostgresServer {
            port,
            bin_dir,
            owner,
            data_dir: dir.join("data"),
            socket_dir: dir.clone(),
            log: dir.join("postgres.log"),
            durable: true,
            process: None,
            guard,
            temp_dir: None,
        };
        if needs_initdb(&server.data_dir)? {
            server.initdb()?;
        }
        server.launch_on_own_port()?;
        server.create_database(DATABASE)?;
        Ok(server)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `weir` database: `postgres://postgres@127.0.0.1:PORT/weir`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of database `database` on this server (see [`create_database`](Self::create_database)).
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file the server's output goes to (kept across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates database `name` (owned by `postgres`) unless it exists.
    pub fn create_database(&self, name: &str) -> Result<()> {
        let output = Command::new(self.bin_dir.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(name)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .context("cannot run createdb")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || stderr.contains("already exists") {
            return Ok(());
        }
        bail!(
            "cannot create database {name} on port {}: {}",
            self.port,
            stderr.trim()
        )
    }

    /// Makes `role` log in over TCP with its password only (`scram-sha-256`, ahead of the
    /// cluster's trust lines in `pg_hba.conf`), and reloads the configuration: new connections
    /// of `role` without the right password are refused from now on.
    pub fn require_password(&self, role: &str) -> Result<()> {
        let hba = self.data_dir.join("pg_hba.conf");
        let current = std::fs::read_to_string(&hba)
            .with_context(|| format!("cannot read {}", hba.display()))?;
        let lines = format!(
            "host all {role} 127.0.0.1/32 scram-sha-256\nhost all {role} ::1/128 scram-sha-256\n"
        );
        std::fs::write(&hba, lines + &current)
            .with_context(|| format!("cannot write {}", hba.display()))?;
        let output = Command::new(self.bin_dir.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-At", "-c", "SELECT pg_reload_conf()"])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql")?;
        if !output.status.success() {
            bail!(
                "cannot reload the configuration on port {}: {}",
                self.port,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ServerProcess::is_alive)
    }

    /// Stops the server with a fast shutdown (open connections are closed), keeping its data.
    /// Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            self.guard.unwatch();
            process.stop(Signal::Interrupt, STOP_GRACE);
        }
    }

    /// Starts the server again after [`stop`](Self::stop) (or a crash), on the same port and data.
    /// Does nothing if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // Reap a server that died on its own.
        self.stop();
        self.launch_on_own_port()
    }

    /// Starts the server on `self.port`, which must not change (the URL has been handed out).
    fn launch_on_own_port(&mut self) -> Result<()> {
        // A port held for a moment by another thread's forked child frees itself: wait for it.
        if !is_free_soon(self.port) {
            bail!(
                "PostgreSQL cannot listen on 127.0.0.1:{}: another process holds the port",
                self.port
            );
        }
        match self.launch() {
            Ok(()) => Ok(()),
            Err(LaunchError::PortTaken) => bail!(
                "PostgreSQL cannot listen on 127.0.0.1:{}: another process took the port",
                self.port
            ),
            Err(LaunchError::Failed(err)) => Err(err),
        }
    }

    /// Starts `postgres` and waits until it accepts connections.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let port = self.port;
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if !self.durable {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
            command.args(["-c", "full_page_writes=off"]);
        }
        self.as_owner(&mut command);
        let mut process =
            ServerProcess::spawn(&mut command, &self.log).map_err(LaunchError::Failed)?;
        self.guard.watch(process.pid());

        let pg_isready = self.bin_dir.join("pg_isready");
        let ready =
            process.wait_until_ready(READY_TIMEOUT, || accepts_connections(&pg_isready, port));
        let failure = match ready {
            Ok(()) => {
                self.process = Some(process);
                return Ok(());
            }
            Err(NotReady::Exited(_))
                if process.log_since_start().contains("Address already in use") =>
            {
                self.guard.unwatch();
                return Err(LaunchError::PortTaken);
            }
            Err(NotReady::Exited(status)) => format!("PostgreSQL exited while starting ({status})"),
            Err(NotReady::TimedOut) => format!(
                "PostgreSQL did not accept connections within {}s",
                READY_TIMEOUT.as_secs()
            ),
        };
        let tail = process.log_tail();
        self.guard.unwatch();
        drop(process);
        Err(LaunchError::Failed(anyhow!(
            "{failure} (port {port}, data {}); {tail}",
            self.data_dir.display()
        )))
    }

    /// Creates the cluster: trust authentication, superuser `postgres`, UTF-8, C collation.
    fn initdb(&self) -> Result<()> {
        let mut command = Command::new(self.bin_dir.join("initdb"));
        command.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]);
        if !self.durable {
            command.arg("--no-sync");
        }
        command.arg("-D").arg(&self.data_dir).stdin(Stdio::null());
        self.as_owner(&mut command);
        let output = command.output();
        let (problem, details) = match &output {
            Ok(output) if output.status.success() => return Ok(()),
            Ok(output) => (
                format!("failed ({})", output.status),
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ),
            Err(err) => ("could not run".to_owned(), err.to_string()),
        };
        let hint = match &self.owner {
            Some(owner) if details.contains("ermission denied") => format!(
                "\nhint: the `{}` user must be able to reach {}: every parent directory needs \
                 o+x",
                owner.name,
                self.data_dir.display()
            ),
            _ => String::new(),
        };
        bail!(
            "initdb -D {} {problem}:\n{details}{hint}",
            self.data_dir.display()
        )
    }

    /// Makes `command` run as the cluster's owner, from a directory that owner may enter.
    fn as_owner(&self, command: &mut Command) {
        command.current_dir(&self.socket_dir);
        if let Some(owner) = &self.owner {
            owner.assign(command);
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("running", &self.is_running())
            .field("temporary", &self.temp_dir.is_some())
            .finish()
    }
}

fn find_bin_dir() -> Result<PathBuf> {
    postgres_bin_dir().with_context(|| {
        format!(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: run `cargo xtask \
             setup` (or `apt-get install {}`)",
            Package::Postgres.debian_package()
        )
    })
}

fn cluster_owner() -> Result<Option<SystemUser>> {
    unprivileged_account("postgres", "PostgreSQL refuses to run as root")
}

/// Whether `data_dir` has no cluster yet; an unrelated non-empty directory is an error.
fn needs_initdb(data_dir: &Path) -> Result<bool> {
    let mut entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(true),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", data_dir.display())),
    };
    if entries.next().is_none() {
        return Ok(true);
    }
    if !data_dir.join("PG_VERSION").exists() {
        bail!(
            "{} is neither empty nor a PostgreSQL data directory: move it away",
            data_dir.display()
        );
    }
    Ok(false)
}

fn accepts_connections(pg_isready: &Path, port: u16) -> bool {
    Command::new(pg_isready)
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
