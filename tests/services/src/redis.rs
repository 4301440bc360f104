//! A private Redis server: a throw-away one per test, or the dev environment's persistent one.
//!
//! Each server listens on 127.0.0.1 only, keeps its files in a directory of its own and logs to a
//! file there. Temporary servers never write to disk; the persistent one snapshots (`--save 60 1`)
//! and on shutdown. Redis runs fine as root, so unlike PostgreSQL it runs as this process's user.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::orphan_guard::OrphanGuard;
use crate::packages::{Package, redis_server_binary};
use crate::ports::{free_port, is_free_soon};
use crate::server_process::{LaunchError, NotReady, ServerProcess, Signal};

/// How long a start may take before it is reported as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown (a final snapshot, for the persistent server) may take before a kill.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How many ports a temporary server tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 5;

/// A Redis server owned by this value: stopped, and for a temporary one deleted, on drop.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let mut redis = weir_services::RedisServer::start_temporary()?;
/// let url = redis.url(); // redis://127.0.0.1:PORT/
/// redis.stop();
/// redis.start_again()?; // same port; a temporary server starts empty again
/// # Ok(())
/// # }
/// ```
pub struct RedisServer {
    port: u16,
    binary: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    /// The persistent server snapshots its data into `dir`.
    durable: bool,
    process: Option<ServerProcess>,
    guard: OrphanGuard,
    /// Deleted after everything above has stopped (fields drop in order).
    temp_dir: Option<TempDir>,
}

impl RedisServer {
    /// Starts a throw-away server without persistence in a temporary directory, on a free port.
    /// The directory is deleted when the value drops.
    pub fn start_temporary() -> Result<Self> {
        let binary = find_binary()?;
        let temp_dir = tempfile::Builder::new()
            .prefix("weir-redis-")
            .tempdir()
            .context("cannot create a temporary directory for Redis")?;
        let dir = temp_dir.path().to_owned();
        let guard = OrphanGuard::spawn(Signal::Terminate, Some(&dir))?;
        let mut server = RedisServer {
            port: 0,
            binary,
            log: dir.join("redis.log"),
            dir,
            durable: false,
            process: None,
            guard,
            temp_dir: Some(temp_dir),
        };
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(LaunchError::PortTaken) if attempt < PORT_ATTEMPTS => attempt += 1,
                Err(LaunchError::PortTaken) => bail!(
                    "Redis could not bind a port: {PORT_ATTEMPTS} free ports were taken by other \
                     processes before it started"
                ),
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Starts the dev environment's server on `port`, keeping its snapshot (`dump.rdb`) and
    /// `redis.log` in `dir` between runs. It stops, saving first, when the value drops.
    pub fn start_persistent(dir: &Path, port: u16) -> Result<Self> {
        let binary = find_binary()?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        if !is_free_soon(port) {
            bail!(
                "port {port} on 127.0.0.1 is in use, so the dev Redis cannot start: is another \
                 `cargo xtask run` running? Stop it, or find the owner with `ss -ltnp 'sport = \
                 :{port}'`"
            );
        }
        let guard = OrphanGuard::spawn(Signal::Terminate, None)?;
        let mut server = RedisServer {
            port,
            binary,
            log: dir.join("redis.log"),
            dir,
            durable: true,
            process: None,
            guard,
            temp_dir: None,
        };
        server.launch_on_own_port()?;
        Ok(server)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's working directory (snapshots and the log live here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file the server's output goes to (kept across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ServerProcess::is_alive)
    }

    /// Stops the server (SIGTERM: the persistent one saves first). Does nothing if it is not
    /// running. A temporary server loses its data.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            self.guard.unwatch();
            process.stop(Signal::Terminate, STOP_GRACE);
        }
    }

    /// Starts the server again after [`stop`](Self::stop) (or a crash), on the same port.
    /// Does nothing if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.stop();
        self.launch_on_own_port()
    }

    fn launch_on_own_port(&mut self) -> Result<()> {
        // A port held for a moment by another thread's forked child frees itself: wait for it.
        if !is_free_soon(self.port) {
            bail!(
                "Redis cannot listen on 127.0.0.1:{}: another process holds the port",
                self.port
            );
        }
        match self.launch() {
            Ok(()) => Ok(()),
            Err(LaunchError::PortTaken) => bail!(
                "Redis cannot listen on 127.0.0.1:{}: another process took the port",
                self.port
            ),
            Err(LaunchError::Failed(err)) => Err(err),
        }
    }

    /// Starts `redis-server` and waits until it answers `PING`.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let port = self.port;
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "no", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir);
        if self.durable {
            command.args(["--save", "60", "1"]);
        } else {
            command.args(["--save", ""]);
        }
        let mut process =
            ServerProcess::spawn(&mut command, &self.log).map_err(LaunchError::Failed)?;
        self.guard.watch(process.pid());

        let failure = match process.wait_until_ready(READY_TIMEOUT, || answers_ping(port)) {
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
            Err(NotReady::Exited(status)) => format!("Redis exited while starting ({status})"),
            Err(NotReady::TimedOut) => format!(
                "Redis did not answer PING within {}s",
                READY_TIMEOUT.as_secs()
            ),
        };
        let tail = process.log_tail();
        self.guard.unwatch();
        drop(process);
        Err(LaunchError::Failed(anyhow!(
            "{failure} (port {port}); {tail}"
        )))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("running", &self.is_running())
            .field("temporary", &self.temp_dir.is_some())
            .finish()
    }
}

fn find_binary() -> Result<PathBuf> {
    redis_server_binary().with_context(|| {
        format!(
            "redis-server not found: run `cargo xtask setup` (or `apt-get install {}`)",
            Package::Redis.debian_package()
        )
    })
}

/// Whether a raw `PING` gets `+PONG` (not `-LOADING`: a persistent server reads its snapshot).
fn answers_ping(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
