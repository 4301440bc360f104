//! `cargo xtask run`: Weir on this machine, starting with nothing configured.
//!
//! Builds what Weir needs, starts the [`DevEnvironment`] (the services Weir talks to and a dev
//! PKI, with state kept in `target/weir-dev` between runs), then runs `weir serve` in the
//! foreground and, once it answers, `weir simulate` for a while so data visibly flows.
//!
//! Shutdown order matters: Weir flushes to the databases while it stops, so they must outlive
//! it. Ctrl-C reaches `weir serve` from the terminal; xtask catches it and waits for Weir to
//! exit, then stops the databases. (The databases run in process groups of their own, so the
//! terminal's Ctrl-C does not reach them; if xtask itself is killed, their guards stop them.)

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use weir_services::{PostgresServer, RedisServer};

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

/// Builds everything, starts the dev services, runs `weir serve` until it exits, and simulates
/// devices for `simulate_seconds` once it is up.
pub fn run(workspace: &Workspace, simulate_seconds: u64) -> Result<()> {
    setup::setup(workspace)?;
    components::components(workspace)?;
    run_command(cargo(workspace).args(["build", "--release", "-p", "weir"]))?;

    let weir = workspace.target_dir().join("release").join("weir");
    let environment = DevEnvironment::start(workspace, &weir)?;
    let mut serve = Command::new(&weir);
    serve
        .arg("serve")
        .current_dir(workspace.root())
        .envs(environment.weir_env());
    eprintln!("==> {}", command_line(&serve));
    let child = serve
        .spawn()
        .with_context(|| format!("cannot start {}", weir.display()))?;
    if simulate_seconds > 0 {
        simulate_when_up(&weir, &environment, simulate_seconds);
    }
    let status = wait_outliving_interrupts(child)?;

    eprintln!("==> weir exited ({status}); stopping the dev services");
    drop(environment);
    if !status.success() {
        bail!("`weir serve` failed ({status}); the dev databases' logs are in target/weir-dev");
    }
    Ok(())
}

/// Once the API listener answers, runs `weir simulate` in the background so data visibly
/// flows; `weir serve` keeps running afterwards.
fn simulate_when_up(weir: &std::path::Path, environment: &DevEnvironment, seconds: u64) {
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
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::net::TcpStream::connect(API_LISTEN).is_err() {
            if std::time::Instant::now() > deadline {
                eprintln!("==> weir did not start listening on {API_LISTEN}; not simulating");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        eprintln!("==> {}", command_line(&simulate));
        match simulate.status() {
            Ok(status) if status.success() => eprintln!(
                "==> data is flowing. weir keeps serving: devices on https://{DEVICE_LISTEN}, \
                 metrics on http://{API_LISTEN}/metrics. Ctrl-C stops."
            ),
            Ok(status) => eprintln!("==> the simulation failed ({status})"),
            Err(error) => eprintln!("==> cannot start the simulation: {error}"),
        }
    });
}

/// The services a local Weir talks to and its dev PKI, with their state in `target/weir-dev`;
/// the services are stopped on drop.
struct DevEnvironment {
    postgres: PostgresServer,
    redis: RedisServer,
    functions_dir: PathBuf,
    state_dir: PathBuf,
    pki_dir: PathBuf,
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
        Ok(DevEnvironment {
            postgres,
            redis,
            functions_dir: workspace.functions_dir(),
            state_dir,
            pki_dir,
        })
    }

    /// The environment `weir serve` needs to use these services.
    fn weir_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("WEIR_DATABASE_URL", self.postgres.url().into()),
            ("WEIR_REDIS_URL", self.redis.url().into()),
            (FUNCTIONS_DIR_ENV, self.functions_dir.clone().into()),
            ("WEIR_STATE_DIR", self.state_dir.clone().into()),
            ("WEIR_PKI_DIR", self.pki_dir.clone().into()),
            ("WEIR_DEVICE_LISTEN", DEVICE_LISTEN.into()),
            ("WEIR_API_LISTEN", API_LISTEN.into()),
        ]
    }
}

/// Waits for `child` to exit without dying of the Ctrl-C that the terminal sends to both of us.
///
/// A second Ctrl-C kills Weir. A SIGTERM sent to xtask alone (by a supervisor, say) is passed on
/// to Weir, and xtask keeps waiting.
fn wait_outliving_interrupts(mut child: Child) -> Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handling runtime")?;
    runtime.block_on(async {
        // Registering replaces the default action (exit) for as long as xtask runs.
        let mut interrupts = signal(SignalKind::interrupt())?;
        let mut terminations = signal(SignalKind::terminate())?;
        let pid = child.id().to_string();
        let mut exited = tokio::task::spawn_blocking(move || child.wait());
        let mut interrupted = false;
        loop {
            tokio::select! {
                status = &mut exited => return Ok(status??),
                _ = interrupts.recv() => {
                    if interrupted {
                        eprintln!("==> Ctrl-C again: killing weir");
                        send_signal("KILL", &pid);
                    } else {
                        eprintln!("==> Ctrl-C: waiting for weir to shut down (Ctrl-C again kills it)");
                        interrupted = true;
                    }
                }
                _ = terminations.recv() => {
                    eprintln!("==> SIGTERM: passing it on to weir");
                    send_signal("TERM", &pid);
                }
            }
        }
    })
}

fn send_signal(signal: &str, pid: &str) {
    if let Err(err) = Command::new("kill").args(["-s", signal, pid]).status() {
        eprintln!("warning: cannot send SIG{signal} to weir ({pid}): {err}");
    }
}
