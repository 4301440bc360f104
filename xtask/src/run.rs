//! `cargo xtask run`: Weir on this machine, starting with nothing configured.
//!
//! Builds what Weir needs, then either:
//! - one region (the default): starts the [`DevEnvironment`] (the services Weir talks to and a
//!   dev PKI, with state kept in `target/weir-dev` between runs), runs `weir serve` in the
//!   foreground and, once it answers, `weir simulate` for a while so data visibly flows; or
//! - `--regions N` (N ≥ 2): starts a fresh [`Topology`] in `target/weir-dev/regions` (one
//!   PostgreSQL; per region a Redis, two hosts, nginx and a delay proxy, region k 15 ms × k
//!   away), prints where everything is, runs `weir simulate` against every region's device
//!   endpoint in the foreground, and keeps the regions up until interrupted.
//!
//! Shutdown order matters: Weir flushes to the databases while it stops, so they must outlive
//! it. Every process xtask starts runs in a process group of its own, so a Ctrl-C from the
//! terminal reaches xtask alone, exactly like a `kill -INT` (or `-TERM`) of xtask's pid: xtask
//! stops the simulator, then Weir (SIGTERM: it drains; a second signal kills it), then nginx
//! and the databases, and exits. If xtask itself is killed, the servers' orphan guards stop them.

use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use weir_services::{PostgresServer, RedisServer, RegionSpec, Topology, TopologyOptions};

use crate::cargo::{cargo, command_line, run as run_command};
use crate::{FUNCTIONS_DIR_ENV, Workspace, components, setup};

/// The dev PostgreSQL's port: fixed, so a database tool can stay connected across runs.
pub const POSTGRES_PORT: u16 = 54329;
/// The dev Redis's port.
pub const REDIS_PORT: u16 = 63799;

/// The dev device listener.
pub const DEVICE_LISTEN: &str = "127.0.0.1:7443";
/// The dev API listener (health, readiness, metrics).
pub const API_LISTEN: &str = "127.0.0.1:7080";

/// Names of the regions of `--regions N`, nearest first; more regions are `r8`, `r9`, ...
const REGION_NAMES: &[&str] = &["eu", "us", "ap", "sa", "af", "me", "oc"];
/// Hosts per region with `--regions N`.
const HOSTS_PER_REGION: usize = 2;
/// The one-way delay added per step away from the first region: region k is 15 ms × k away.
const DELAY_STEP: Duration = Duration::from_millis(15);
/// Simulated devices with `--regions N`.
const REGION_DEVICES: &str = "10";
/// How often waits look at their child and at the signals.
const POLL: Duration = Duration::from_millis(100);
/// How long the simulator gets to exit after SIGINT before it is killed.
const SIMULATOR_GRACE: Duration = Duration::from_secs(5);

/// Builds everything, then runs one region (`regions == 1`: `weir serve` until it exits or
/// xtask is interrupted) or several (until interrupted), simulating devices for
/// `simulate_seconds` once Weir is up.
pub fn run(workspace: &Workspace, simulate_seconds: u64, regions: usize) -> Result<()> {
    if regions == 0 {
        bail!("--regions must be at least 1");
    }
    setup::setup(workspace)?;
    components::components(workspace)?;
    run_command(cargo(workspace).args(["build", "--release", "-p", "weir"]))?;
    let weir = workspace.target_dir().join("release").join("weir");

    // From here on SIGINT and SIGTERM no longer end xtask: every wait below watches them.
    let signals = Signals::watch()?;
    if regions == 1 {
        run_one_region(workspace, &weir, simulate_seconds, &signals)
    } else {
        run_regions(workspace, &weir, simulate_seconds, regions, &signals)
    }
}

/// The single-region dev environment: `weir serve` in the foreground on fixed ports, against
/// persistent databases.
fn run_one_region(
    workspace: &Workspace,
    weir: &Path,
    simulate_seconds: u64,
    signals: &Signals,
) -> Result<()> {
    let environment = DevEnvironment::start(workspace, weir)?;
    if let Some(signal) = signals.try_recv() {
        eprintln!("==> {signal}: stopping the dev services");
        return Ok(());
    }
    let mut serve = Command::new(weir);
    serve
        .arg("serve")
        .current_dir(workspace.root())
        .envs(environment.weir_env());
    eprintln!("==> {}", command_line(&serve));
    let child = serve
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", weir.display()))?;
    let simulation = (simulate_seconds > 0)
        .then(|| simulate_when_up(weir, &environment, simulate_seconds))
        .transpose()?;
    let (status, stopped) = serve_until_stopped(child, simulation, signals)?;

    eprintln!("==> weir exited ({status}); stopping the dev services");
    drop(environment);
    if !status.success() && !stopped {
        bail!("`weir serve` failed ({status}); the dev databases' logs are in target/weir-dev");
    }
    Ok(())
}

/// Once the API listener answers, runs `weir simulate` in the background so data visibly
/// flows; `weir serve` keeps running afterwards.
fn simulate_when_up(weir: &Path, environment: &DevEnvironment, seconds: u64) -> Result<Simulation> {
    let mut simulate = Command::new(weir);
    simulate
        .args([
            "simulate",
            "--target",
            DEVICE_LISTEN,
            "--devices",
            "5",
            "--rate",
            "50",
        ])
        .args(["--duration", &seconds.to_string(), "--drain", "10"])
        .arg("--pki")
        .arg(&environment.pki_dir);
    let api: SocketAddr = API_LISTEN.parse()?;
    Ok(Simulation::start(
        simulate,
        Some(api),
        Box::new(|status| match status {
            Ok(status) if status.success() => eprintln!(
                "==> data is flowing. weir keeps serving: devices on https://{DEVICE_LISTEN}, \
                 metrics on http://{API_LISTEN}/metrics. Ctrl-C stops."
            ),
            Ok(status) => eprintln!("==> the simulation failed ({status})"),
            Err(error) => eprintln!("==> cannot start the simulation: {error:#}"),
        }),
    ))
}

/// Waits for `weir serve` to exit. The first SIGINT or SIGTERM to xtask stops the simulation
/// and asks Weir to shut down (SIGTERM: it drains its requests), a second one kills it. Returns
/// Weir's exit status and whether xtask stopped it.
fn serve_until_stopped(
    mut child: Child,
    mut simulation: Option<Simulation>,
    signals: &Signals,
) -> Result<(ExitStatus, bool)> {
    let mut stopping = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for weir")? {
            break status;
        }
        let Some(signal) = signals.wait(POLL) else {
            continue;
        };
        if let Some(simulation) = &mut simulation {
            simulation.stop();
        }
        if stopping {
            eprintln!("==> {signal} again: killing weir");
            let _ = child.kill();
        } else {
            eprintln!("==> {signal}: waiting for weir to shut down (Ctrl-C again kills it)");
            // `child` is unreaped, so its pid is still weir's.
            send_signal("TERM", child.id());
            stopping = true;
        }
    };
    if let Some(mut simulation) = simulation {
        simulation.stop();
    }
    Ok((status, stopping))
}

/// Several regions: a fresh [`Topology`] in `target/weir-dev/regions`, the simulator against
/// all of them in the foreground, then the regions keep running until xtask is interrupted.
fn run_regions(
    workspace: &Workspace,
    weir: &Path,
    simulate_seconds: u64,
    count: usize,
    signals: &Signals,
) -> Result<()> {
    let dev = workspace.target_dir().join("weir-dev");
    let dir = dev.join("regions");
    fs::create_dir_all(&dev).with_context(|| format!("cannot create {}", dev.display()))?;
    // PostgreSQL runs as `postgres` and nginx's workers as `nobody`: they must enter it.
    fs::set_permissions(&dev, fs::Permissions::from_mode(0o755))?;
    match fs::remove_dir_all(&dir) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("cannot delete {}", dir.display()));
        }
        _ => {}
    }
    let regions: Vec<RegionSpec> = (0..count)
        .map(|k| {
            let name = REGION_NAMES
                .get(k)
                .map_or_else(|| format!("r{}", k + 1), |name| (*name).to_owned());
            let steps = u32::try_from(k).unwrap_or(u32::MAX);
            RegionSpec::new(name, HOSTS_PER_REGION, DELAY_STEP.saturating_mul(steps))
        })
        .collect();

    eprintln!(
        "==> starting {count} regions × {HOSTS_PER_REGION} hosts (nginx, PostgreSQL, Redis) in {}",
        dir.display()
    );
    let started = Instant::now();
    let topology = Topology::start(TopologyOptions {
        binary: weir.to_owned(),
        functions_dir: workspace.functions_dir(),
        dir: dir.clone(),
        regions,
        extra_env: Vec::new(),
    })
    .context("cannot start the regions")?;
    eprintln!("    up in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(signal) = signals.try_recv() {
        return stop_regions(topology, signal);
    }
    print_regions(&topology);

    if simulate_seconds > 0 {
        let mut simulate = Command::new(weir);
        simulate.arg("simulate").arg("--pki").arg(&topology.pki_dir);
        for (name, endpoint) in topology.device_endpoints() {
            simulate.arg("--endpoint").arg(format!("{name}={endpoint}"));
        }
        simulate.args([
            "--duration",
            &simulate_seconds.to_string(),
            "--devices",
            REGION_DEVICES,
        ]);
        check_simulator_takes_endpoints(weir)?;
        let mut simulation = Simulation::start(
            simulate,
            None,
            Box::new(|status| match status {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("==> the simulation failed ({status})"),
                Err(error) => eprintln!("==> cannot start the simulation: {error:#}"),
            }),
        );
        while !simulation.is_finished() {
            if let Some(signal) = signals.wait(POLL) {
                simulation.stop();
                return stop_regions(topology, signal);
            }
        }
        simulation.stop();
    }
    eprintln!(
        "==> the regions keep running (logs in {}). Ctrl-C stops them.",
        dir.display()
    );
    let signal = signals.wait_forever();
    stop_regions(topology, signal)
}

/// Stops every region, then PostgreSQL, reporting the signal that asked for it.
fn stop_regions(topology: Topology, signal: &str) -> Result<()> {
    eprintln!("==> {signal}: stopping the regions");
    drop(topology);
    eprintln!("==> stopped");
    Ok(())
}

/// The table of regions: where devices and API clients connect, and each host's listeners.
fn print_regions(topology: &Topology) {
    let rows: Vec<[String; 5]> = topology
        .regions
        .iter()
        .map(|region| {
            let hosts: Vec<String> = region
                .hosts
                .iter()
                .map(|host| {
                    format!(
                        "{} (devices {}, API {})",
                        host.name(),
                        host.device_addr(),
                        host.api_addr()
                    )
                })
                .collect();
            [
                region.name.clone(),
                format!("{} ms", region.proxy.delay().as_millis()),
                region.device_endpoint().to_string(),
                format!("http://{}", region.api_endpoint()),
                hosts.join(", "),
            ]
        })
        .collect();
    let header = [
        "region",
        "delay",
        "device endpoint",
        "API endpoint",
        "hosts",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut text = String::from("   ");
        for (cell, width) in cells.iter().zip(widths) {
            text.push_str(&format!(" {cell:<width$} "));
        }
        text.trim_end().to_owned()
    };
    eprintln!("{}", line(header));
    for row in &rows {
        eprintln!("{}", line(row.each_ref().map(String::as_str)));
    }
    eprintln!(
        "    PKI {}, PostgreSQL {}",
        topology.pki_dir.display(),
        topology.postgres.url()
    );
}

/// Fails, saying what to do, when this `weir` has no `simulate --endpoint` yet.
fn check_simulator_takes_endpoints(weir: &Path) -> Result<()> {
    let help = Command::new(weir)
        .args(["simulate", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} simulate --help", weir.display()))?;
    if !String::from_utf8_lossy(&help.stdout).contains("--endpoint") {
        bail!(
            "{} simulate has no --endpoint option yet: rebuild the host (`cargo build --release \
             -p weir`) once the multi-region simulator is in",
            weir.display()
        );
    }
    Ok(())
}

/// `weir simulate` as a child of xtask in a process group of its own (so only xtask signals
/// it), started once `wait_for` accepts TCP (if given), watched by a thread.
struct Simulation {
    state: Arc<Mutex<SimulationState>>,
    thread: Option<JoinHandle<()>>,
}

struct SimulationState {
    /// Set by [`Simulation::stop`]: do not start, or stop.
    stopping: bool,
    child: Option<Child>,
    /// The child has been reaped: its pid is no longer ours to signal.
    exited: bool,
}

/// What to say when the simulator has exited by itself (or could not start).
type Report = Box<dyn FnOnce(Result<ExitStatus>) + Send>;

impl Simulation {
    fn start(mut command: Command, wait_for: Option<SocketAddr>, report: Report) -> Simulation {
        command.stdin(Stdio::null()).process_group(0);
        let state = Arc::new(Mutex::new(SimulationState {
            stopping: false,
            child: None,
            exited: false,
        }));
        let shared = state.clone();
        let thread = thread::spawn(move || watch_simulation(&shared, command, wait_for, report));
        Simulation {
            state,
            thread: Some(thread),
        }
    }

    /// Whether the simulator has exited (or will never start).
    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the simulator (SIGINT, then SIGKILL after a few seconds) and waits until it has
    /// exited. Does nothing if it has.
    fn stop(&mut self) {
        {
            let mut state = lock(&self.state);
            state.stopping = true;
            if !state.exited
                && let Some(child) = &state.child
            {
                send_signal("INT", child.id());
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch_simulation(
    state: &Mutex<SimulationState>,
    mut command: Command,
    wait_for: Option<SocketAddr>,
    report: Report,
) {
    if let Some(addr) = wait_for {
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if lock(state).stopping {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("==> weir did not start listening on {addr}; not simulating");
                return;
            }
            thread::sleep(POLL);
        }
    }
    {
        let mut state = lock(state);
        if state.stopping {
            return;
        }
        eprintln!("==> {}", command_line(&command));
        match command.spawn() {
            Ok(child) => state.child = Some(child),
            Err(error) => {
                report(Err(error).context("cannot run weir simulate"));
                return;
            }
        }
    }
    let mut stop_seen: Option<Instant> = None;
    loop {
        thread::sleep(POLL);
        let mut state = lock(state);
        let stopping = state.stopping;
        let Some(child) = state.child.as_mut() else {
            return;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                state.exited = true;
                drop(state);
                if !stopping {
                    report(Ok(status));
                }
                return;
            }
            Ok(None) if stopping => {
                if stop_seen.get_or_insert_with(Instant::now).elapsed() > SIMULATOR_GRACE {
                    let _ = child.kill();
                }
            }
            Ok(None) => {}
            Err(error) => {
                state.exited = true;
                drop(state);
                report(Err(error).context("cannot wait for weir simulate"));
                return;
            }
        }
    }
}

/// SIGINT and SIGTERM sent to xtask, as messages on a channel.
///
/// tokio is already in the lock file (the host's runtime) and xtask used its signal handling
/// before, so no signal crate (signal-hook, ctrlc) is added: a thread runs a current-thread
/// tokio runtime that listens for both signals and forwards each one. Registering replaces
/// the default action (exit) for as long as xtask runs, so every wait of xtask watches this
/// channel.
struct Signals {
    received: Receiver<&'static str>,
}

impl Signals {
    /// Starts listening; returns once both handlers are registered.
    fn watch() -> Result<Signals> {
        let (registered_tx, registered) = mpsc::channel();
        let (sender, received) = mpsc::channel();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = registered_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let handlers = signal(SignalKind::interrupt())
                        .and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
                    let (mut interrupts, mut terminations) = match handlers {
                        Ok(handlers) => handlers,
                        Err(error) => {
                            let _ = registered_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = registered_tx.send(Ok(()));
                    loop {
                        let name = tokio::select! {
                            _ = interrupts.recv() => "SIGINT",
                            _ = terminations.recv() => "SIGTERM",
                        };
                        if sender.send(name).is_err() {
                            return;
                        }
                    }
                });
            })
            .context("cannot start the signal handling thread")?;
        registered
            .recv()
            .context("the signal handling thread ended")?
            .context("cannot listen for SIGINT and SIGTERM")?;
        Ok(Signals { received })
    }

    /// A signal received since the last look, if any.
    fn try_recv(&self) -> Option<&'static str> {
        self.received.try_recv().ok()
    }

    /// The next signal, if one comes within `timeout`.
    fn wait(&self, timeout: Duration) -> Option<&'static str> {
        match self.received.recv_timeout(timeout) {
            Ok(signal) => Some(signal),
            Err(RecvTimeoutError::Timeout) => None,
            // The listening thread never ends; should it, no signal will come.
            Err(RecvTimeoutError::Disconnected) => {
                thread::sleep(timeout);
                None
            }
        }
    }

    /// Blocks until a signal comes.
    fn wait_forever(&self) -> &'static str {
        loop {
            if let Some(signal) = self.wait(Duration::from_secs(3600)) {
                return signal;
            }
        }
    }
}

/// `kill -s SIGNAL PID`; the caller holds the child unreaped, so the pid is still its.
fn send_signal(signal: &str, pid: u32) {
    if let Err(err) = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
    {
        eprintln!("warning: cannot send SIG{signal} to {pid}: {err}");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The services a local Weir talks to and its dev PKI, with their state in `target/weir-dev`:
/// the CA directory (`pki/`, with the CA key, where `weir simulate` enrols its devices), what
/// the host holds (`edge-tls/`: the CA certificate and the server's key pair) and the issuing
/// service (`weir ca serve`, log in `ca.log`). Everything is stopped on drop.
struct DevEnvironment {
    // Fields drop in order: the issuing service stops before the database it uses.
    _issuer: IssuingService,
    postgres: PostgresServer,
    redis: RedisServer,
    functions_dir: PathBuf,
    state_dir: PathBuf,
    pki_dir: PathBuf,
    edge_tls_dir: PathBuf,
}

/// `weir ca serve` as a child in its own process group; stopped (SIGTERM) on drop.
struct IssuingService {
    child: Child,
}

impl IssuingService {
    /// Publishes a fresh CRL (`weir pki refresh-crl`), then starts `weir ca serve` on `pki_dir`.
    fn start(weir: &Path, pki_dir: &Path, database_url: &str, log: &Path) -> Result<Self> {
        let mut refresh = Command::new(weir);
        refresh
            .args(["pki", "refresh-crl"])
            .arg(pki_dir)
            .env("WEIR_DATABASE_URL", database_url);
        run_command(&mut refresh)?;
        let log_file =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(weir)
            .args(["ca", "serve"])
            .arg(pki_dir)
            .env("WEIR_DATABASE_URL", database_url)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start `{} ca serve`", weir.display()))?;
        Ok(IssuingService { child })
    }
}

impl Drop for IssuingService {
    fn drop(&mut self) {
        send_signal("TERM", self.child.id());
        let _ = self.child.wait();
    }
}

impl DevEnvironment {
    fn start(workspace: &Workspace, weir: &std::path::Path) -> Result<Self> {
        let dir = workspace.target_dir().join("weir-dev");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // PostgreSQL may run as the `postgres` user, which must be able to enter this directory.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;

        eprintln!("==> starting PostgreSQL on 127.0.0.1:{POSTGRES_PORT}");
        let postgres = PostgresServer::start_persistent(&dir.join("postgres"), POSTGRES_PORT)
            .context("cannot start the dev PostgreSQL")?;
        eprintln!(
            "    {} (log: {})",
            postgres.url(),
            postgres.log_path().display()
        );

        eprintln!("==> starting Redis on 127.0.0.1:{REDIS_PORT}");
        let redis = RedisServer::start_persistent(&dir.join("redis"), REDIS_PORT)
            .context("cannot start the dev Redis")?;
        eprintln!("    {} (log: {})", redis.url(), redis.log_path().display());

        let state_dir = dir.join("state");
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let pki_dir = dir.join("pki");
        if !pki_dir.join("ca.pem").exists() {
            eprintln!("==> creating a dev PKI in {}", pki_dir.display());
            let mut init = Command::new(weir);
            init.args(["pki", "init"]).arg(&pki_dir);
            run_command(&mut init)?;
            let mut server = Command::new(weir);
            server.args(["pki", "server"]).arg(&pki_dir).args([
                "--name",
                "localhost",
                "--name",
                "127.0.0.1",
            ]);
            run_command(&mut server)?;
        }
        let edge_tls_dir = dir.join("edge-tls");
        fs::create_dir_all(&edge_tls_dir)
            .with_context(|| format!("cannot create {}", edge_tls_dir.display()))?;
        for file in ["ca.pem", "server.pem", "server-key.pem"] {
            fs::copy(pki_dir.join(file), edge_tls_dir.join(file))
                .with_context(|| format!("cannot copy {file} to {}", edge_tls_dir.display()))?;
        }
        eprintln!(
            "==> starting the issuing service (weir ca serve; log: {})",
            dir.join("ca.log").display()
        );
        let issuer = IssuingService::start(weir, &pki_dir, &postgres.url(), &dir.join("ca.log"))?;
        Ok(DevEnvironment {
            _issuer: issuer,
            postgres,
            redis,
            functions_dir: workspace.functions_dir(),
            state_dir,
            pki_dir,
            edge_tls_dir,
        })
    }

    /// The environment `weir serve` needs to use these services.
    fn weir_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("WEIR_DATABASE_URL", self.postgres.url().into()),
            ("WEIR_REDIS_URL", self.redis.url().into()),
            (FUNCTIONS_DIR_ENV, self.functions_dir.clone().into()),
            ("WEIR_STATE_DIR", self.state_dir.clone().into()),
            ("WEIR_PKI_DIR", self.edge_tls_dir.clone().into()),
            ("WEIR_DEVICE_LISTEN", DEVICE_LISTEN.into()),
            ("WEIR_API_LISTEN", API_LISTEN.into()),
        ]
    }
}
