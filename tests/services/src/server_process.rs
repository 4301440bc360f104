//! A server running as our child process: started with its output appended to a log file, polled
//! until it is ready, stopped with a signal.
//!
//! Servers get a process group of their own, so a Ctrl-C meant for a test run or for `weir serve`
//! does not reach them: their owner (or its [orphan guard](crate::orphan_guard)) stops them, after
//! whatever used them has finished. PostgreSQL and Redis share everything here except how to
//! probe them and which signal means "shut down now, cleanly".

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(50);

/// A signal, by its `kill -s` name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signal {
    /// SIGINT: PostgreSQL's "fast shutdown".
    Interrupt,
    /// SIGTERM: Redis's clean shutdown (saving first when persistence is on).
    Terminate,
}

impl Signal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "INT",
            Signal::Terminate => "TERM",
        }
    }
}

/// Why one attempt to start a server failed.
pub(crate) enum LaunchError {
    /// Another process took the port: a server on a port we picked retries on another one.
    PortTaken,
    /// Anything else, with what went wrong.
    Failed(anyhow::Error),
}

/// Why a server did not become ready.
pub(crate) enum NotReady {
    /// It exited; its log (since this start) usually says why.
    Exited(ExitStatus),
    /// It still runs but did not answer in time.
    TimedOut,
}

/// A running server process.
pub(crate) struct ServerProcess {
    child: Child,
    log: PathBuf,
    /// Length of the log when this process started: what it wrote begins here.
    log_start: u64,
}

impl ServerProcess {
    /// Spawns `command` in its own process group with stdout and stderr appended to `log`.
    pub(crate) fn spawn(command: &mut Command, log: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let log_start = file.metadata()?.len();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        Ok(ServerProcess {
            child,
            log: log.to_owned(),
            log_start,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is alive (not exited, not a zombie). Takes `&self`: it reads
    /// `/proc/<pid>/stat` instead of reaping. The pid cannot be reused while we hold the
    /// unreaped child, so this never looks at another process.
    pub(crate) fn is_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return false;
        };
        // "pid (comm) S ...": the state follows the last ')', as comm may contain anything.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z" | "X"))
    }

    /// Polls `probe` until it answers true, the process exits, or `timeout` passes.
    pub(crate) fn wait_until_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            if probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            thread::sleep(POLL);
        }
    }

    /// What the server has logged since it was started.
    pub(crate) fn log_since_start(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log)
            && file.seek(SeekFrom::Start(self.log_start)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// The last lines the server logged since it was started, indented for an error message.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log_since_start();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(25)..];
        if tail.is_empty() {
            format!("(nothing in {})", self.log.display())
        } else {
            let mut text = format!("last lines of {}:", self.log.display());
            for line in tail {
                text.push_str("\n    ");
                text.push_str(line);
            }
            text
        }
    }

    /// Sends `signal`, waits up to `grace` for the process to exit, then kills it outright.
    pub(crate) fn stop(mut self, signal: Signal, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // The child is unreaped, so its pid is still ours to signal.
        let signalled = Command::new("kill")
            .args(["-s", signal.name(), &self.pid().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if signalled {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                    return;
                }
                thread::sleep(POLL);
            }
            eprintln!(
                "weir-services: pid {} ignored SIG{} for {grace:?}; killing it",
                self.pid(),
                signal.name()
            );
        }
        // Drop kills it.
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of the log file `log`, after a line naming it: what an error about a
/// server shows of its output.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    let bytes = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let mut tail = format!("last lines of {}:", log.display());
    for line in &all[all.len().saturating_sub(lines)..] {
        tail.push_str("\n    ");
        tail.push_str(line);
    }
    tail
}
