//! A `weir serve` host as a child process, for tests of several hosts and regions side by side.
//!
//! The host gets exactly the `WEIR_*` settings its owner hands it (none are inherited from this
//! process but `WEIR_LOG`, the log filter) and listens on the device and API addresses of its
//! options, free ports on 127.0.0.1 by default. It is ready when `GET /healthz` on its API
//! listener (plain HTTP unless `WEIR_API_TLS_CERT` is set, which is refused here) answers 200:
//! `weir serve` binds its listeners only once the database is migrated and its functions are
//! loaded. Its output is appended to `<dir>/<name>.log`.
//!
//! [`WeirHost::kill`] is a crash (SIGKILL, nothing drained); [`WeirHost::stop`] is an orderly
//! shutdown (SIGTERM: the host stops accepting, answers the uploads in flight and exits).
//! [`WeirHost::start_again`] restarts it on the same ports with the same settings. Like the
//! database servers it runs in a process group of its own and has an
//! [orphan guard](crate::orphan_guard), so a test that is killed leaves no host running.

use std::env;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::orphan_guard::OrphanGuard;
use crate::ports::free_port;
use crate::server_process::{LaunchError, NotReady, ServerProcess, Signal, log_tail};

/// How long [`WeirHost::stop`] waits for the host to drain (its listeners give in-flight
/// requests 10 s) before killing it.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a drop waits after SIGTERM before killing the host.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// How many port pairs a start tries when another process takes the ports it picked.
const PORT_ATTEMPTS: usize = 5;
/// How long one probe of the API listener may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The variable that names the `weir` binary, overriding the one next to this executable.
pub const WEIR_BIN_ENV: &str = "WEIR_BIN";
/// Settings the options carry as addresses, not as variables.
const LISTEN_VARS: [&str; 2] = ["WEIR_DEVICE_LISTEN", "WEIR_API_LISTEN"];

/// The `weir` executable: `$WEIR_BIN` if set, else `weir` in the cargo profile directory of the
/// running executable (`target/<profile>/`, for test binaries in `target/<profile>/deps/` and for
/// xtask in `target/<profile>/`). The error says how to build it.
pub fn weir_binary() -> Result<PathBuf> {
    if let Some(path) = env::var_os(WEIR_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "{WEIR_BIN_ENV} names {}, which is not a file: build the host with `cargo build \
                 --release -p weir`, or unset {WEIR_BIN_ENV} to use target/release/weir",
                path.display()
            );
        }
        return Ok(path);
    }
    let exe = env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join("weir");
    if path.is_file() {
        return Ok(path);
    }
    let build = match dir.file_name().and_then(|name| name.to_str()) {
        Some("release") => "cargo build --release -p weir".to_owned(),
        Some("debug") => "cargo build -p weir".to_owned(),
        Some(profile) => format!("cargo build --profile {profile} -p weir"),
        None => "cargo build --release -p weir".to_owned(),
    };
    bail!(
        "the weir binary is missing: no {} (next to {}). Run `{build}` first, or set \
         {WEIR_BIN_ENV} to a weir executable",
        path.display(),
        exe.display()
    )
}

/// How to start a [`WeirHost`].
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use weir_services::{WeirHostOptions, weir_binary};
///
/// let options = WeirHostOptions::new(weir_binary()?, "eu-1", "/tmp/weir-topology")
///     .env("WEIR_REGION", "eu")
///     .env("WEIR_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/weir");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WeirHostOptions {
    /// The `weir` executable (see [`weir_binary`]).
    pub binary: PathBuf,
    /// The host's name in messages and the name of its log file, `<dir>/<name>.log`.
    pub name: String,
    /// `WEIR_*` settings, e.g. `WEIR_DATABASE_URL`, `WEIR_REDIS_URL`, `WEIR_REGION`,
    /// `WEIR_PKI_DIR`, `WEIR_FUNCTIONS_DIR`, `WEIR_STATE_DIR`. The listen addresses are
    /// [`device_listen`](Self::device_listen) and [`api_listen`](Self::api_listen), not
    /// variables.
    pub env: Vec<(String, String)>,
    /// The device listener (mutual TLS); `None` (or port 0) picks a free port on 127.0.0.1.
    pub device_listen: Option<SocketAddr>,
    /// The API listener (plain HTTP); `None` (or port 0) picks a free port on 127.0.0.1.
    pub api_listen: Option<SocketAddr>,
    /// Where the log file goes; also the host's working directory (relative settings such as
    /// the default `WEIR_STATE_DIR`, `.weir`, land here). Created if missing.
    pub dir: PathBuf,
    /// How long a start may take before it fails (the first start of a state directory
    /// compiles the components).
    pub ready_timeout: Duration,
}

impl WeirHostOptions {
    /// Options with no settings, free ports and a 60 s start timeout.
    pub fn new(
        binary: impl Into<PathBuf>,
        name: impl Into<String>,
        dir: impl Into<PathBuf>,
    ) -> Self {
        WeirHostOptions {
            binary: binary.into(),
            name: name.into(),
            env: Vec::new(),
            device_listen: None,
            api_listen: None,
            dir: dir.into(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// Adds the setting `name=value` (a later one with the same name wins).
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// A `weir serve` process owned by this value: stopped (SIGTERM, then SIGKILL after a few
/// seconds) when it drops.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use weir_services::{WeirHost, WeirHostOptions, weir_binary};
///
/// let options = WeirHostOptions::new(weir_binary()?, "eu-1", "/tmp/weir-topology")
///     .env("WEIR_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/weir")
///     .env("WEIR_PKI_DIR", "/tmp/weir-topology/pki");
/// let mut host = WeirHost::start(options)?;
/// println!("devices: {}, API: {}", host.device_addr(), host.api_addr());
/// host.kill(); // a crash
/// host.start_again()?; // same ports, same settings
/// # Ok(())
/// # }
/// ```
pub struct WeirHost {
    options: WeirHostOptions,
    device_addr: SocketAddr,
    api_addr: SocketAddr,
    log: PathBuf,
    process: Option<ServerProcess>,
    guard: OrphanGuard,
}

impl WeirHost {
    /// Starts `weir serve` and waits until `GET /healthz` answers 200 on its API listener. If
    /// the host exits or does not answer within the options' timeout, the error ends with the
    /// tail of its log.
    pub fn start(options: WeirHostOptions) -> Result<WeirHost> {
        check_options(&options)?;
        fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create {}", options.dir.display()))?;
        let dir = options.dir.canonicalize()?;
        let log = dir.join(format!("{}.log", options.name));
        let guard = OrphanGuard::spawn(Signal::Terminate, None)?;
        let (device_listen, api_listen) = (options.device_listen, options.api_listen);
        let mut host = WeirHost {
            options: WeirHostOptions { dir, ..options },
            device_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            api_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            log,
            process: None,
            guard,
        };
        let mut attempt = 1;
        loop {
            let (device, picked_device) = with_port(device_listen)?;
            let (api, picked_api) = with_port(api_listen)?;
            host.device_addr = device;
            host.api_addr = api;
            match host.launch() {
                Ok(()) => return Ok(host),
                Err(LaunchError::PortTaken)
                    if (picked_device || picked_api) && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(LaunchError::PortTaken) => bail!(
                    "weir host {} could not bind its listeners (device {device}, API {api}): \
                     another process holds the port; {}",
                    host.options.name,
                    host.log_tail(25)
                ),
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
    }

    /// The host's name (from its options).
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// Where devices connect (mutual TLS), as an address to connect to: an unspecified listen
    /// address (`0.0.0.0`) is given as the loopback address.
    pub fn device_addr(&self) -> SocketAddr {
        connectable(self.device_addr)
    }

    /// Where the API listener is (plain HTTP), as an address to connect to.
    pub fn api_addr(&self) -> SocketAddr {
        connectable(self.api_addr)
    }

    /// The process id while the host runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// Whether the host process is running.
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ServerProcess::is_alive)
    }

    /// The file the host's output goes to (kept across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log (across restarts), after a line naming the file.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Kills the host with SIGKILL, as a crash would: nothing is drained, uploads in flight are
    /// cut. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            self.guard.unwatch();
            // Dropping a running `ServerProcess` kills it (SIGKILL) and reaps it.
            drop(process);
        }
    }

    /// Stops the host in order (SIGTERM): it stops accepting, answers the requests in flight
    /// and exits; killed if that takes over 30 s. Does nothing if it is not running.
    pub fn stop(&mut self) {
        self.stop_within(STOP_GRACE);
    }

    /// Starts the host again after [`stop`](Self::stop), [`kill`](Self::kill) or a crash, on the
    /// same ports with the same settings, and waits until it is ready. Does nothing if it runs.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // Reap a host that died on its own.
        self.kill();
        match self.launch() {
            Ok(()) => Ok(()),
            Err(LaunchError::PortTaken) => bail!(
                "weir host {} cannot listen on its ports again (device {}, API {}): another \
                 process took one; {}",
                self.options.name,
                self.device_addr,
                self.api_addr,
                self.log_tail(25)
            ),
            Err(LaunchError::Failed(err)) => Err(err),
        }
    }

    /// `GET path` on the API listener: the status code and the body.
    pub fn api_get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(self.api_addr(), path)
    }

    /// Polls `GET /readyz` until it answers 200 (PostgreSQL and Redis both reachable), or fails
    /// after `timeout` with the last answer and the log's tail.
    pub fn wait_until_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let answer = self.api_get("/readyz");
            if matches!(answer, Ok((200, _))) {
                return Ok(());
            }
            if !self.is_running() || std::time::Instant::now() >= deadline {
                let last = match answer {
                    Ok((status, body)) => format!("{status} {body}"),
                    Err(err) => err.to_string(),
                };
                bail!(
                    "weir host {} is not ready (running: {}); GET /readyz: {last}; {}",
                    self.options.name,
                    self.is_running(),
                    self.log_tail(25)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_within(&mut self, grace: Duration) {
        if let Some(process) = self.process.take() {
            self.guard.unwatch();
            process.stop(Signal::Terminate, grace);
        }
    }

    /// Starts `weir serve` on `self.device_addr` and `self.api_addr` and waits for `/healthz`.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let options = &self.options;
        let (device, api) = (self.device_addr, self.api_addr);
        let mut command = Command::new(&options.binary);
        command.arg("serve").current_dir(&options.dir);
        for (name, _) in env::vars_os() {
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("WEIR_") && name != "WEIR_LOG")
            {
                command.env_remove(name);
            }
        }
        command
            .envs(options.env.iter().map(|(name, value)| (name, value)))
            .env("WEIR_DEVICE_LISTEN", device.to_string())
            .env("WEIR_API_LISTEN", api.to_string());
        // Before the spawn, so that the process's own lines start after it.
        let header = format!(
            "==> weir-services: starting weir host {} (device {device}, API {api})\n",
            options.name
        );
        let _ = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut file| file.write_all(header.as_bytes()));
        let mut process =
            ServerProcess::spawn(&mut command, &self.log).map_err(LaunchError::Failed)?;
        self.guard.watch(process.pid());

        let api = connectable(api);
        let ready = process.wait_until_ready(options.ready_timeout, || {
            matches!(http_get(api, "/healthz"), Ok((200, _)))
        });
        let failure = match ready {
            Ok(()) => {
                self.process = Some(process);
                return Ok(());
            }
            Err(NotReady::Exited(_)) if port_taken(&process.log_since_start()) => {
                self.guard.unwatch();
                return Err(LaunchError::PortTaken);
            }
            Err(NotReady::Exited(status)) => format!("exited while starting ({status})"),
            Err(NotReady::TimedOut) => format!(
                "did not answer GET http://{api}/healthz with 200 within {}s",
                options.ready_timeout.as_secs()
            ),
        };
        let tail = process.log_tail();
        self.guard.unwatch();
        drop(process);
        Err(LaunchError::Failed(anyhow!(
            "weir host {} {failure} (device {device}, API {api}, binary {}); {tail}",
            options.name,
            options.binary.display()
        )))
    }
}

impl Drop for WeirHost {
    fn drop(&mut self) {
        self.stop_within(DROP_GRACE);
    }
}

impl fmt::Debug for WeirHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeirHost")
            .field("name", &self.options.name)
            .field("device_addr", &self.device_addr)
            .field("api_addr", &self.api_addr)
            .field("pid", &self.pid())
            .field("running", &self.is_running())
            .finish()
    }
}

/// Refuses options the host could not honour: listen addresses as variables (the options carry
/// them) and an API listener with TLS (readiness is probed in plain HTTP).
fn check_options(options: &WeirHostOptions) -> Result<()> {
    if options.name.is_empty() || options.name.contains('/') {
        bail!(
            "weir host name {:?} must be a non-empty file name (it names the log file)",
            options.name
        );
    }
    for (name, _) in &options.env {
        if LISTEN_VARS.contains(&name.as_str()) {
            bail!(
                "{name} is set by WeirHost: give the address as WeirHostOptions::device_listen \
                 or api_listen instead"
            );
        }
        if name == "WEIR_API_TLS_CERT" || name == "WEIR_API_TLS_KEY" {
            bail!(
                "{name}: WeirHost probes the API listener in plain HTTP, so it cannot run one \
                 with TLS"
            );
        }
    }
    if !options.binary.is_file() {
        bail!(
            "the weir binary {} does not exist: run `cargo build --release -p weir`",
            options.binary.display()
        );
    }
    Ok(())
}

/// `requested` with a free port on 127.0.0.1 when it is `None` or has port 0, and whether the
/// port was picked here.
fn with_port(requested: Option<SocketAddr>) -> Result<(SocketAddr, bool)> {
    match requested {
        Some(addr) if addr.port() != 0 => Ok((addr, false)),
        Some(mut addr) => {
            addr.set_port(free_port()?);
            Ok((addr, true))
        }
        None => Ok((SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)), true)),
    }
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        addr => addr,
    }
}

/// Whether the host's log says a listener's address was taken.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("address in use")
}

/// A plain HTTP/1.1 `GET`: the status code and the body (de-chunked if need be).
fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of the response headers"))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let body = &response[end + 4..];
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| invalid("bad chunked body"))?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The data of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line_end = body.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(data);
        }
        data.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk(b"4\r\nWeir\r\n6;x=y\r\n serve\r\n0\r\n\r\n").as_deref(),
            Some(&b"Weir serve"[..])
        );
        assert_eq!(dechunk(b"4\r\nWe"), None);
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0];
            while !request.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 11\r\n\r\n{\"no\":\"pg\"}",
                )
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        let (status, body) = http_get(addr, "/readyz").unwrap();
        assert_eq!((status, body.as_str()), (503, "{\"no\":\"pg\"}"));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /readyz HTTP/1.1\r\n")
        );
    }

    #[test]
    fn listen_addresses_are_refused_as_variables() {
        let options = WeirHostOptions::new("/bin/sh", "h", "/tmp").env("WEIR_API_LISTEN", "x");
        let err = check_options(&options).unwrap_err();
        assert!(err.to_string().contains("api_listen"), "{err:#}");
    }

    #[test]
    fn unspecified_addresses_are_connected_to_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:7443".parse().unwrap();
        assert_eq!(connectable(addr), "127.0.0.1:7443".parse().unwrap());
        let addr: SocketAddr = "[::]:7443".parse().unwrap();
        assert_eq!(connectable(addr), "[::1]:7443".parse().unwrap());
    }
}
