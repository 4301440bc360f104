//! `cargo xtask setup`: what a fresh machine needs before Weir builds and its tests run.
//!
//! The components need Rust's `wasm32-wasip2` target; the tests and the dev environment need
//! PostgreSQL and Redis from the system (`weir_services::ensure_packages` installs them). Every
//! other task that needs these runs this first, so it must be cheap when nothing is missing.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use weir_services::{Package, ensure_packages};

use crate::Workspace;
use crate::cargo::run;
use crate::components::WASM_TARGET;

/// Makes sure the wasm target and the system packages are installed.
pub fn setup(workspace: &Workspace) -> Result<()> {
    ensure_wasm_target(workspace)?;
    eprintln!("==> checking system packages: PostgreSQL, Redis");
    ensure_packages(&[Package::Postgres, Package::Redis])
}

fn ensure_wasm_target(workspace: &Workspace) -> Result<()> {
    eprintln!("==> checking the {WASM_TARGET} Rust target");
    // In the workspace root, so rustup answers for the toolchain this workspace builds with.
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace.root())
        .output();
    let installed = match listed {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Ok(output) => bail!(
            "`rustup target list --installed` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) if err.kind() == ErrorKind::NotFound => return check_toolchain_without_rustup(),
        Err(err) => return Err(err).context("cannot run rustup"),
    };
    if installed.lines().any(|target| target.trim() == WASM_TARGET) {
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .current_dir(workspace.root()))
}

/// Without rustup the target cannot be added, but a toolchain may ship it already.
fn check_toolchain_without_rustup() -> Result<()> {
    if let Some(sysroot) = sysroot()
        && sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir()
    {
        eprintln!("==> rustup not found; the toolchain already has {WASM_TARGET}");
        return Ok(());
    }
    bail!(
        "rustup not found, and the Rust toolchain has no {WASM_TARGET} standard library. \
         Install rustup (https://rustup.rs) and run `cargo xtask setup` again, or install the \
         {WASM_TARGET} target for your toolchain another way"
    )
}

fn sysroot() -> Option<PathBuf> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| PathBuf::from(text.trim()))
}
