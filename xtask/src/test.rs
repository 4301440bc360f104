//! `cargo xtask test`: every check CI runs, in the order that fails fastest on a 2-core machine.
//!
//! Setup and components first (the tests load the components), then formatting, then tidy (the
//! house rules, in seconds), then clippy, then the whole workspace's tests in release mode, so
//! wasmtime is built once, optimised, and shared with the host and the benchmarks. This is the test command of the README and of `.ci/run`.
//!
//! Component crates outside the workspace (the query component) get the same checks of their
//! own: rustfmt, clippy natively and for the wasm target, and their native tests.

use std::ffi::OsString;

use anyhow::{Context, Result};

use crate::cargo::{cargo, run};
use crate::components::{COMPONENTS, WASM_TARGET};
use crate::{FUNCTIONS_DIR_ENV, Workspace, components, deploy, setup, tidy};

/// Runs setup, components, rustfmt, tidy, clippy and the tests; `cargo_test_args` go to
/// `cargo test`.
pub fn test(workspace: &Workspace, cargo_test_args: &[OsString]) -> Result<()> {
    setup::setup(workspace)?;
    components::components(workspace)?;
    run(cargo(workspace).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs from rustfmt's: run `cargo fmt --all`")?;
    tidy::tidy(workspace)?;
    deploy::check(workspace)?;
    run(cargo(workspace).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems: fix the warnings above")?;
    for manifest in COMPONENTS.iter().filter_map(|c| c.manifest) {
        check_outside_crate(workspace, manifest)?;
    }
    run(cargo(workspace)
        .args(["test", "--release", "--workspace"])
        .args(cargo_test_args)
        .env(FUNCTIONS_DIR_ENV, workspace.functions_dir()))
    .context("tests failed: the command above re-runs them")?;
    eprintln!("==> all checks passed");
    Ok(())
}

/// rustfmt, clippy (native and wasm) and the native tests of the crate at `manifest`, which
/// is outside the workspace; it shares the target directory.
fn check_outside_crate(workspace: &Workspace, manifest: &str) -> Result<()> {
    let crate_cargo = || {
        let mut command = cargo(workspace);
        command.env("CARGO_TARGET_DIR", workspace.target_dir());
        command
    };
    run(crate_cargo().args(["fmt", "--manifest-path", manifest, "--", "--check"]))
        .with_context(|| format!("formatting differs in {manifest}: run `cargo fmt` there"))?;
    // Natively with the tests; for wasm the component itself (its tests run natively).
    for targets in [&["--all-targets"][..], &["--lib", "--target", WASM_TARGET]] {
        run(crate_cargo()
            .args(["clippy", "--manifest-path", manifest])
            .args(targets)
            .args(["--", "-D", "warnings"]))
        .with_context(|| format!("clippy found problems in {manifest}"))?;
    }
    run(crate_cargo().args(["test", "--release", "--manifest-path", manifest]))
        .with_context(|| format!("the tests of {manifest} failed"))
}
