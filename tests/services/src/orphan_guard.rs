//! A guard process that stops a server when the process that started it dies without cleaning up.
//!
//! Drop handlers do not run when a test binary is killed (a CI timeout, a second Ctrl-C) or when a
//! server lives in a `static`. Each server therefore has a small `sh` process beside it. We tell it
//! the server's pid over a pipe; it reads until the pipe closes, which happens exactly when our
//! process is gone (the write end is close-on-exec, so no other child holds it). It then signals
//! the last pid it was told, waits for it, and deletes the server's directory if it has one. A
//! normal drop kills the guard first, so it never acts on a server we stopped ourselves.
//!
//! The guard ignores SIGINT, SIGTERM and SIGHUP and runs in its own process group, so whatever
//! kills the test process (and its group) leaves the guard to do its job.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

use crate::server_process::Signal;

/// `$1`: the signal that stops the server gracefully; `$2`: a directory to delete, or empty.
/// Each line read is the server's current pid, or `none` while it is stopped.
const SCRIPT: &str = r#"
trap '' INT TERM HUP
pid=none
while read -r line; do pid=$line; done
case $pid in
    ''|0|*[!0-9]*) ;;
    *)
        kill -s "$1" "$pid" 2>/dev/null
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
        kill -s KILL "$pid" 2>/dev/null ;;
esac
if [ -n "$2" ]; then rm -rf -- "$2"; fi
"#;

/// The guard of one server, for the server value's whole life (across stops and restarts).
pub(crate) struct OrphanGuard {
    child: Child,
    pipe: ChildStdin,
}

impl OrphanGuard {
    /// Starts a guard that would stop the server with `signal` and then delete `remove` (a
    /// temporary server's directory).
    pub(crate) fn spawn(signal: Signal, remove: Option<&Path>) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("weir-orphan-guard")
            .arg(signal.name())
            .arg(remove.map_or(OsStr::new(""), Path::as_os_str))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start the orphan guard (`sh`)")?;
        let pipe = child.stdin.take().context("orphan guard has no stdin")?;
        Ok(OrphanGuard { child, pipe })
    }

    /// Tells the guard the server now runs as `pid`.
    pub(crate) fn watch(&mut self, pid: u32) {
        self.tell(&pid.to_string());
    }

    /// Tells the guard the server is stopped.
    pub(crate) fn unwatch(&mut self) {
        self.tell("none");
    }

    fn tell(&mut self, line: &str) {
        if let Err(err) = writeln!(self.pipe, "{line}") {
            eprintln!(
                "weir-services: orphan guard unreachable ({err}); a leaked server may remain"
            );
        }
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        // SIGKILL: the guard must not act on a server we are cleaning up ourselves.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
