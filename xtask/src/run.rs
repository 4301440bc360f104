//! `cargo xtask run`: Weir on this machine, starting with nothing configured.
//!
//! Builds what Weir needs, starts the [`DevEnvironment`] (the services Weir talks to, with state
//! kept in `target/weir-dev` between runs), then runs `weir serve` in the foreground. Further
//! pieces of the local setup (a dev PKI, a device simulator) belong in `DevEnvironment`: started in
//! [`DevEnvironment::start`], handed to Weir in [`DevEnvironment::weir_env`].
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

/// Builds everything, starts the dev services and runs `weir serve` until it exits.
pub fn run(workspace: &Workspace) -> Result<()> {
    setup::setup(workspace)?;
    components::components(workspace)?;
    run_command(cargo(workspace).args(["build", "--release", "-p", "weir"]))?;

    let environment = DevEnvironment::start(workspace)?;
    let weir = workspace.target_dir().join("release").join("weir");
    let mut serve = Command::new(&weir);
    serve
        .arg("serve")
        .current_dir(workspace.root())
        .envs(environment.weir_env());
    eprintln!("==> {}", command_line(&serve));
    let child = serve
        .spawn()
        .with_context(|| format!("cannot start {}", weir.display()))?;
    let status = wait_outliving_interrupts(child)?;

    eprintln!("==> weir exited ({status}); stopping the dev services");
    drop(environment);
    if !status.success() {
        bail!("`weir serve` failed ({status}); the dev databases' logs are in target/weir-dev");
    }
    Ok(())
}

/// The services a local Weir talks to, with their state in `target/weir-dev`; stopped on drop.
struct DevEnvironment {
    postgres: PostgresServer,
    redis: RedisServer,
    functions_dir: PathBuf,
    state_dir: PathBuf,
}

impl DevEnvironment {
    fn start(workspace: &Workspace) -> Result<Self> {
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
        Ok(DevEnvironment {
            postgres,
            redis,
            functions_dir: workspace.functions_dir(),
            state_dir,
        })
    }

    /// The environment `weir serve` needs to use these services.
    fn weir_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("WEIR_DATABASE_URL", self.postgres.url().into()),
            ("WEIR_REDIS_URL", self.redis.url().into()),
            (FUNCTIONS_DIR_ENV, self.functions_dir.clone().into()),
            ("WEIR_STATE_DIR", self.state_dir.clone().into()),
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
