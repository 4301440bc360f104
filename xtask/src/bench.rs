//! `cargo xtask bench`: the benchmarks of `weir-tests`, against freshly built components.
//!
//! The bench profile inherits the release one, so this reuses the release build of wasmtime.
//! The regions benchmark runs `weir serve` hosts, so the release `weir` binary is built too.

use std::ffi::OsString;

use anyhow::Result;

use crate::cargo::{cargo, run};
use crate::{FUNCTIONS_DIR_ENV, Workspace, components};

/// Builds the components and the `weir` binary, then runs `cargo bench -p weir-tests` with `cargo_bench_args`.
pub fn bench(workspace: &Workspace, cargo_bench_args: &[OsString]) -> Result<()> {
    components::components(workspace)?;
    run(cargo(workspace).args(["build", "--release", "-p", "weir"]))?;
    run(cargo(workspace)
        .args(["bench", "-p", "weir-tests"])
        .args(cargo_bench_args)
        .env(FUNCTIONS_DIR_ENV, workspace.functions_dir()))
}
