//! `cargo xtask`: Weir's project workflows (set up a machine, build the function components, check
//! the house rules, run every check, start Weir locally, benchmark), written in Rust rather than
//! shell scripts.
//!
//! `cargo xtask` is an alias (`.cargo/config.toml`) for running this crate in release mode, so it
//! shares the release build directory with the host, the tests and the benchmarks. One module per
//! task; each step prints a `==> step` line to stderr and a failure says what to do about it.
//! Servers come from `weir-services`, the crate the integration tests use too.

mod bench;
mod cargo;
mod components;
mod deploy;
mod run;
mod setup;
mod test;
mod tidy;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Weir's project workflows. `cargo xtask test` is the one command CI runs.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing Weir needs.
    ///
    /// Adds the wasm32-wasip2 Rust target with rustup, and installs PostgreSQL and Redis with
    /// apt-get when they are missing (as root; otherwise prints the command to run). Safe to run
    /// again: it only does what is missing.
    Setup,
    /// Build the WASM function components into target/functions.
    ///
    /// Builds every component crate for wasm32-wasip2 in release mode and copies each `.wasm` to
    /// where Weir and its tests load it: target/functions (test-only components under test/).
    Components,
    /// Run every check CI runs: setup, components, rustfmt, tidy, clippy, then all tests in
    /// release.
    ///
    /// Arguments after `--` go to `cargo test`, e.g. `cargo xtask test -- -p weir-tests
    /// resent_batch -- --nocapture`. Tests find the components through WEIR_FUNCTIONS_DIR.
    Test {
        /// Extra arguments for `cargo test --release --workspace`.
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        cargo_test_args: Vec<OsString>,
    },
    /// Check the house rules the compiler cannot: module docs, the architecture map, layering.
    ///
    /// Every `.rs` file (tracked or untracked-but-not-ignored) opens with a `//!` comment; no
    /// module is named util, utils or helpers; docs/ARCHITECTURE.md names every package; guest
    /// crates (functions/, tests/fixtures/) share only weir-contract with the host; weir-contract
    /// has no dependencies; each host crate depends only on the weir-* packages its row of the
    /// layering table (xtask/src/tidy.rs) allows, and on none of the crates forbidden to it.
    /// Prints one line per problem, naming the file or manifest and the rule. Takes seconds:
    /// it builds nothing. Also part of `cargo xtask test`.
    Tidy,
    /// Check deploy/: render every overlay with kubectl kustomize, validate against Kubernetes
    /// schemas, nginx -t.
    ///
    /// Renders deploy/overlays/* with `kubectl kustomize` (skipped when kubectl is missing),
    /// validates the manifests against Kubernetes 1.32 with `kubernetes-validate --strict`
    /// (installed into target/tools/venv on first use), checks the SpinApp against its CRD and
    /// the monitoring files, and runs `nginx -t` on deploy/nginx filled in as a local test
    /// harness would (installing nginx and its stream module when missing). Also part of
    /// `cargo xtask test`.
    Deploy,
    /// Start Weir on this machine with nothing configured: one region, or several behind nginx.
    ///
    /// Builds the components and the host. With one region (the default) it starts a dev
    /// PostgreSQL (127.0.0.1:54329) and Redis (127.0.0.1:63799) whose data persists in
    /// target/weir-dev, then runs `weir serve` until it exits, with a dev PKI in
    /// target/weir-dev/pki (its issuing service, `weir ca serve`, runs beside it; the host gets
    /// only target/weir-dev/edge-tls, no CA key) and, once Weir is up, simulated devices
    /// uploading for a while. With
    /// `--regions N` (N >= 2) it starts, fresh in target/weir-dev/regions, one PostgreSQL and N
    /// regions (eu, us, ap, ...) of two hosts, a Redis, nginx and a delay proxy each (region k
    /// 15 ms x k away, on 127.0.0.(10+k)), prints their endpoints, simulates devices against all
    /// of them, and keeps them up. Ctrl-C, or SIGINT/SIGTERM to xtask, stops the simulator,
    /// Weir, nginx and then the databases.
    Run {
        /// Seconds of simulated devices to run once Weir is up (0: none).
        #[arg(long, default_value_t = 20)]
        simulate: u64,
        /// Number of regions: 1 is the single-host dev environment, 2 or more a local
        /// multi-region topology behind nginx.
        #[arg(long, default_value_t = 1)]
        regions: usize,
    },
    /// Run the benchmarks (`cargo bench -p weir-tests`) against freshly built components.
    ///
    /// Arguments after `--` go to `cargo bench`.
    Bench {
        /// Extra arguments for `cargo bench -p weir-tests`.
        #[arg(last = true, value_name = "CARGO_BENCH_ARGS")]
        cargo_bench_args: Vec<OsString>,
    },
}

/// The environment variable telling Weir and its tests where the function components are.
pub const FUNCTIONS_DIR_ENV: &str = "WEIR_FUNCTIONS_DIR";

/// Where things are in the repository.
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace is this crate's parent directory.
    fn locate() -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .expect("xtask lives inside the workspace")
            .to_owned();
        Workspace { root }
    }

    /// The repository root, where every command runs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the root) or `target`.
    pub fn target_dir(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => self.root.join(dir),
            _ => self.root.join("target"),
        }
    }

    /// Where the built function components go: `target/functions`.
    pub fn functions_dir(&self) -> PathBuf {
        self.target_dir().join("functions")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let workspace = Workspace::locate();
    let result = match cli.task {
        Task::Setup => setup::setup(&workspace),
        Task::Components => components::components(&workspace),
        Task::Test { cargo_test_args } => test::test(&workspace, &cargo_test_args),
        Task::Tidy => tidy::tidy(&workspace),
        Task::Deploy => deploy::check(&workspace),
        Task::Run { simulate, regions } => run::run(&workspace, simulate, regions),
        Task::Bench { cargo_bench_args } => bench::bench(&workspace, &cargo_bench_args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments_after_a_double_dash_go_to_cargo_test() {
        let cli = Cli::try_parse_from(["cargo xtask", "test", "--", "-p", "weir-tests"]).unwrap();
        let Task::Test { cargo_test_args } = cli.task else {
            panic!("not the test task")
        };
        assert_eq!(cargo_test_args, ["-p", "weir-tests"]);
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let workspace = Workspace::locate();
        let manifest = std::fs::read_to_string(workspace.root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
