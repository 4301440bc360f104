//! `cargo xtask test`: every check CI runs, in the order that fails fastest on a 2-core machine.
//!
//! Setup and components first (the tests load the components), then formatting, then clippy, then
//! the whole workspace's tests in release mode, so wasmtime is built once, optimised, and shared
//! with the host and the benchmarks. This is the test command of the README and of `.ci/run`.

use std::ffi::OsString;

use anyhow::{Context, Result};

use crate::cargo::{cargo, run};
use crate::{FUNCTIONS_DIR_ENV, Workspace, components, setup};

/// Runs setup, components, rustfmt, clippy and the tests; `cargo_test_args` go to `cargo test`.
pub fn test(workspace: &Workspace, cargo_test_args: &[OsString]) -> Result<()> {
    setup::setup(workspace)?;
    components::components(workspace)?;
    run(cargo(workspace).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs from rustfmt's: run `cargo fmt --all`")?;
    run(cargo(workspace).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems: fix the warnings above")?;
    run(cargo(workspace)
        .args(["test", "--release", "--workspace"])
        .args(cargo_test_args)
        .env(FUNCTIONS_DIR_ENV, workspace.functions_dir()))
    .context("tests failed: the command above re-runs them")?;
    eprintln!("==> all checks passed");
    Ok(())
}
