//! Debian's nginx in front of local Weir hosts, run from the repository's `deploy/nginx` files, so
//! that what the tests exercise is what is deployed.
//!
//! [`NginxServer::start`] renders `deploy/nginx/nginx.conf.template` into a prefix directory,
//! replacing exactly the placeholders the template documents (`${NGINX_DEVICE_LISTEN}`,
//! `${NGINX_API_LISTEN}`), writes one upstream line per host from
//! `deploy/nginx/local/*.upstream.conf.template`, copies `deploy/nginx/local/stream-module.conf`
//! to `modules.d/` (Debian's stream module is a dynamic one), and runs
//! `nginx -p PREFIX/ -c PREFIX/nginx.conf -e stderr -g 'daemon off;'` as a child process in its
//! own process group, its output (errors and access logs) appended to `PREFIX/nginx.log`. It is
//! ready when `GET /nginx-health` on the API listener answers 200 and the device listener accepts
//! TCP.
//!
//! nginx is a master process with workers (and a cache manager): [`NginxServer::kill`] kills the
//! whole process group with SIGKILL, as a crashed machine would; [`NginxServer::stop`] asks the
//! master for a graceful stop (SIGQUIT) and kills the group if that takes more than a few seconds.
//! Like the other servers it has an [orphan guard](crate::orphan_guard), which stops the master
//! (SIGTERM, fast shutdown: the master takes its workers down) if the owning process dies.
//!
//! The device upstream's health check is passive (`max_fails=2 fail_timeout=10s`) with
//! `proxy_next_upstream on`: a device connecting while a host is down is passed to the next host,
//! and after two failures nginx leaves the dead host alone for ten seconds.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::orphan_guard::OrphanGuard;
use crate::packages::{Package, ensure_packages};
use crate::ports::free_port;
use crate::server_process::{LaunchError, NotReady, ServerProcess, Signal, log_tail};
use crate::user::running_as_root;

/// How long a start may take before it is reported as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`NginxServer::stop`] waits after SIGQUIT before killing the process group.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How many port pairs a start tries when another process takes a port it picked.
const PORT_ATTEMPTS: usize = 5;
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The placeholders of `nginx.conf.template`, in the order the template documents them.
const DEVICE_LISTEN: &str = "NGINX_DEVICE_LISTEN";
const API_LISTEN: &str = "NGINX_API_LISTEN";
/// The placeholder of the local upstream templates: one host's address.
const UPSTREAM_SERVER: &str = "NGINX_UPSTREAM_SERVER";

/// The repository's `deploy/nginx` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx")
}

/// An nginx owned by this value, in front of a set of Weir hosts: stopped (SIGQUIT, then SIGKILL
/// of its process group) when it drops. Its files (configuration, pid file, cache, temporary
/// files, `nginx.log`) live in its prefix directory, which is kept.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use std::path::Path;
/// use weir_services::NginxServer;
///
/// let hosts_devices = ["127.0.0.1:7443".parse()?];
/// let hosts_api = ["127.0.0.1:7080".parse()?];
/// let mut nginx = NginxServer::start(
///     Path::new("/tmp/weir-nginx"),
///     "127.0.0.1:0".parse()?, // port 0: a free port
///     "127.0.0.1:0".parse()?,
///     &hosts_devices,
///     &hosts_api,
/// )?;
/// println!("devices: {}, API: {}", nginx.device_addr(), nginx.api_addr());
/// nginx.kill(); // master and workers gone at once
/// nginx.start_again()?; // same ports, same configuration
/// # Ok(())
/// # }
/// ```
pub struct NginxServer {
    binary: PathBuf,
    prefix: PathBuf,
    device_addr: SocketAddr,
    api_addr: SocketAddr,
    device_upstreams: Vec<SocketAddr>,
    api_upstreams: Vec<SocketAddr>,
    log: PathBuf,
    process: Option<ServerProcess>,
    guard: OrphanGuard,
}

impl NginxServer {
    /// Renders the configuration into `prefix` (created if missing, made mode 0755 because the
    /// workers of an nginx started as root run as `nobody`) and starts nginx listening on
    /// `device_listen` (TLS passthrough to `device_upstreams`) and `api_listen` (HTTP proxy to
    /// `api_upstreams`). A listen address with port 0 gets a free port on its IP address.
    ///
    /// Returns once `GET /nginx-health` answers 200 and the device listener accepts; if nginx
    /// exits first or takes too long, the error ends with the tail of its log. Installs nginx and
    /// its stream module with `apt-get` when missing (as root; otherwise it names the command).
    pub fn start(
        prefix: &Path,
        device_listen: SocketAddr,
        api_listen: SocketAddr,
        device_upstreams: &[SocketAddr],
        api_upstreams: &[SocketAddr],
    ) -> Result<NginxServer> {
        if device_upstreams.is_empty() || api_upstreams.is_empty() {
            bail!(
                "nginx needs at least one device upstream and one API upstream (got {} and {})",
                device_upstreams.len(),
                api_upstreams.len()
            );
        }
        ensure_packages(&[Package::Nginx])?;
        let binary = Package::Nginx
            .program()
            .context("nginx is installed but its binary was not found")?;
        fs::create_dir_all(prefix.join("modules.d"))
            .with_context(|| format!("cannot create {}", prefix.display()))?;
        let prefix = prefix.canonicalize()?;
        fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", prefix.display()))?;
        if running_as_root() {
            check_reachable_by_workers(&prefix)?;
        }
        let guard = OrphanGuard::spawn(Signal::Terminate, None)?;
        let mut server = NginxServer {
            binary,
            log: prefix.join("nginx.log"),
            prefix,
            device_addr: device_listen,
            api_addr: api_listen,
            device_upstreams: device_upstreams.to_vec(),
            api_upstreams: api_upstreams.to_vec(),
            process: None,
            guard,
        };
        server.write_static_files()?;
        let mut attempt = 1;
        loop {
            let (device, picked_device) = with_port(device_listen)?;
            let (api, picked_api) = with_port(api_listen)?;
            server.device_addr = device;
            server.api_addr = api;
            server.write_main_conf()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(LaunchError::PortTaken)
                    if (picked_device || picked_api) && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(LaunchError::PortTaken) => bail!(
                    "nginx in {} could not listen on {device} and {api}: another process holds \
                     the port; {}",
                    server.prefix.display(),
                    server.log_tail(25)
                ),
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Where devices connect: the stream server passing TLS through to the hosts.
    pub fn device_addr(&self) -> SocketAddr {
        self.device_addr
    }

    /// Where the API is: the HTTP server proxying (and caching) the hosts' API listeners.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The prefix directory: the rendered configuration, the pid file, the cache, the log.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The file nginx's output goes to (kept across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The master's process id while nginx runs (also its process group's id).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// Whether the nginx master process is running.
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ServerProcess::is_alive)
    }

    /// The last `lines` lines of the log (across restarts), after a line naming the file.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// `GET path` on the API listener: the status code and the body.
    pub fn api_get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(self.api_addr, path)
    }

    /// Kills the master and its workers at once (SIGKILL to the process group): open
    /// connections are cut, the listeners close. Does nothing if nginx is not running.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            self.guard.unwatch();
            kill_group(&process);
            drop(process);
        }
    }

    /// Stops nginx gracefully (SIGQUIT: the listeners close, open sessions may finish), killing
    /// its process group if it has not exited after a few seconds. Does nothing if it is not
    /// running.
    pub fn stop(&mut self) {
        let Some(process) = self.process.take() else {
            return;
        };
        self.guard.unwatch();
        if process.is_alive() && send_signal("QUIT", &process.pid().to_string()) {
            let deadline = Instant::now() + STOP_GRACE;
            while process.is_alive() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever is left of the group (workers still closing sessions) goes now, while the
        // master is unreaped so that its pid, the group's id, cannot have been reused.
        kill_group(&process);
        drop(process);
    }

    /// Starts nginx again after [`stop`](Self::stop), [`kill`](Self::kill) or a crash, on the
    /// same ports with the same configuration, and waits until it is ready. Does nothing if it
    /// runs.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // Reap (and clear the group of) an nginx that died on its own.
        self.kill();
        match self.launch() {
            Ok(()) => Ok(()),
            Err(LaunchError::PortTaken) => bail!(
                "nginx in {} cannot listen on {} and {} again: another process took a port; {}",
                self.prefix.display(),
                self.device_addr,
                self.api_addr,
                self.log_tail(25)
            ),
            Err(LaunchError::Failed(err)) => Err(err),
        }
    }

    /// The upstream files and the stream module line: the same for every attempt.
    fn write_static_files(&self) -> Result<()> {
        let local = deploy_dir().join("local");
        for (file, servers) in [
            ("devices.upstream.conf", &self.device_upstreams),
            ("api.upstream.conf", &self.api_upstreams),
        ] {
            let template_path = local.join(format!("{file}.template"));
            let template = read(&template_path)?;
            let mut lines = String::new();
            for server in servers {
                let rendered = fill(
                    &template,
                    &[(UPSTREAM_SERVER, &server.to_string())],
                    &template_path,
                )?;
                // The template's directive lines; its comments would repeat once per host.
                for line in rendered.lines().map(str::trim) {
                    if !line.is_empty() && !line.starts_with('#') {
                        lines.push_str(line);
                        lines.push('\n');
                    }
                }
            }
            write(&self.prefix.join(file), &lines)?;
        }
        let module = self.prefix.join("modules.d/stream.conf");
        if has_static_stream_module(&self.binary) {
            // An nginx with the module built in refuses to load it a second time.
            let _ = fs::remove_file(&module);
        } else {
            let load = read(&local.join("stream-module.conf"))?;
            write(&module, &load)?;
        }
        Ok(())
    }

    /// `nginx.conf` with the current listen addresses.
    fn write_main_conf(&self) -> Result<()> {
        let template_path = deploy_dir().join("nginx.conf.template");
        let template = read(&template_path)?;
        let conf = fill(
            &template,
            &[
                (DEVICE_LISTEN, &self.device_addr.to_string()),
                (API_LISTEN, &self.api_addr.to_string()),
            ],
            &template_path,
        )?;
        write(&self.prefix.join("nginx.conf"), &conf)
    }

    /// Starts nginx on the configured addresses and waits until both listeners answer.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let (device, api) = (self.device_addr, self.api_addr);
        let mut prefix_arg = self.prefix.as_os_str().to_owned();
        prefix_arg.push("/");
        let mut command = Command::new(&self.binary);
        command
            .arg("-p")
            .arg(prefix_arg)
            .arg("-c")
            .arg(self.prefix.join("nginx.conf"))
            .args(["-e", "stderr", "-g", "daemon off;"])
            .current_dir(&self.prefix);
        let header = format!("==> weir-services: starting nginx (devices {device}, API {api})\n");
        let _ = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut file| file.write_all(header.as_bytes()));
        let mut process =
            ServerProcess::spawn(&mut command, &self.log).map_err(LaunchError::Failed)?;
        self.guard.watch(process.pid());

        let ready = process.wait_until_ready(READY_TIMEOUT, || {
            matches!(http_get(api, "/nginx-health"), Ok((200, _)))
                && TcpStream::connect_timeout(&device, PROBE_TIMEOUT).is_ok()
        });
        let failure = match ready {
            Ok(()) => {
                self.process = Some(process);
                return Ok(());
            }
            // The master exited (and was reaped): it had started no workers, or took them down.
            Err(NotReady::Exited(_))
                if process.log_since_start().contains("Address already in use") =>
            {
                self.guard.unwatch();
                return Err(LaunchError::PortTaken);
            }
            Err(NotReady::Exited(status)) => format!("exited while starting ({status})"),
            Err(NotReady::TimedOut) => {
                kill_group(&process);
                format!(
                    "did not answer GET http://{api}/nginx-health with 200 and accept on \
                     {device} within {}s",
                    READY_TIMEOUT.as_secs()
                )
            }
        };
        let tail = process.log_tail();
        self.guard.unwatch();
        drop(process);
        Err(LaunchError::Failed(anyhow!(
            "nginx (prefix {}) {failure}; {tail}",
            self.prefix.display()
        )))
    }
}

impl Drop for NginxServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for NginxServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NginxServer")
            .field("prefix", &self.prefix)
            .field("device_addr", &self.device_addr)
            .field("api_addr", &self.api_addr)
            .field("pid", &self.pid())
            .field("running", &self.is_running())
            .finish()
    }
}

/// `template` with each `${NAME}` of `values` replaced; fails naming any placeholder left.
fn fill(template: &str, values: &[(&str, &str)], what: &Path) -> Result<String> {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    let left = placeholders(&text);
    if !left.is_empty() {
        bail!(
            "{} has placeholders weir-services does not fill: {}. A local harness fills only the \
             documented ones; fill the new ones in tests/services/src/nginx.rs",
            what.display(),
            left.join(", ")
        );
    }
    Ok(text)
}

/// The `${NAME}` placeholders of `text`, envsubst style (NAME: a letter or underscore, then
/// letters, digits and underscores). `$name` without braces is nginx's own, and a `${...}` in a
/// comment is prose.
fn placeholders(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        let name = &rest[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid && !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Whether `nginx -V` says the stream module is built in (`--with-stream`, not
/// `--with-stream=dynamic` as Debian's).
fn has_static_stream_module(nginx: &Path) -> bool {
    let Ok(output) = Command::new(nginx).arg("-V").stdin(Stdio::null()).output() else {
        return false;
    };
    String::from_utf8_lossy(&output.stderr)
        .split_whitespace()
        .any(|arg| arg == "--with-stream")
}

/// Fails unless every directory from `/` down to `prefix` may be entered by others: the workers
/// of an nginx started as root run as `nobody` and write the prefix's cache and temporary files.
fn check_reachable_by_workers(prefix: &Path) -> Result<()> {
    for dir in prefix.ancestors() {
        let mode = fs::metadata(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "nginx's workers run as `nobody` and cannot enter {} (mode {:o}), on the way to \
                 the prefix {}: use a prefix under a directory others may enter, or `chmod o+x` \
                 it",
                dir.display(),
                mode & 0o7777,
                prefix.display()
            );
        }
    }
    Ok(())
}

/// `requested`, with a free port on its IP address when it has port 0, and whether the port was
/// picked here.
fn with_port(requested: SocketAddr) -> Result<(SocketAddr, bool)> {
    if requested.port() != 0 {
        return Ok((requested, false));
    }
    let mut addr = requested;
    addr.set_port(free_port()?);
    Ok((addr, true))
}

/// SIGKILL to the process's group (nginx runs in a group of its own, led by the master). The
/// master must still be unreaped, so that the group id is still ours.
fn kill_group(process: &ServerProcess) {
    send_signal("KILL", &format!("-{}", process.pid()));
}

/// `kill -s SIGNAL -- TARGET` (a pid, or `-PGID` for a process group); whether it was delivered.
fn send_signal(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A plain `GET` in HTTP/1.0, so that nginx answers without chunking and closes when done: the
/// status code and the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of the response headers"))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let body = String::from_utf8_lossy(&response[end + 4..]).into_owned();
    Ok((status, body))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_exactly_the_placeholders_filled_here() {
        let template = read(&deploy_dir().join("nginx.conf.template")).unwrap();
        assert_eq!(placeholders(&template), [DEVICE_LISTEN, API_LISTEN]);
        for file in ["devices.upstream.conf", "api.upstream.conf"] {
            let path = deploy_dir().join(format!("local/{file}.template"));
            assert_eq!(placeholders(&read(&path).unwrap()), [UPSTREAM_SERVER]);
        }
    }

    #[test]
    fn a_placeholder_left_over_is_named() {
        let path = Path::new("t.template");
        let filled = fill("listen ${A}; set $x y; # ${...}", &[("A", "1")], path).unwrap();
        assert_eq!(filled, "listen 1; set $x y; # ${...}");
        let err = fill("listen ${A} ${B_2};", &[("A", "1")], path).unwrap_err();
        assert!(err.to_string().contains("B_2"), "{err:#}");
    }
}
