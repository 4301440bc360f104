//! The command line: one subcommand per operator task, each documented in `weir --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::functions::{FunctionEngine, ValidatorFunction};
use crate::telemetry::{self, LogFormat};

/// Weir: edge ingest for IoT meter data.
///
/// Devices upload batches of (key, value, timestamp) readings; Weir validates them in sandboxed
/// WASM functions and stores them. Configuration comes from `--config` (TOML) and `WEIR_*`
/// environment variables; see the README for every setting.
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: load the functions and serve until interrupted (SIGHUP reloads them).
    Serve {
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage function components.
    #[command(subcommand)]
    Functions(FunctionsCommand),
}

#[derive(Debug, Subcommand)]
enum FunctionsCommand {
    /// Compile a component and check it against the validator world, as a host would at load.
    Check {
        /// The component file (`.wasm`).
        file: PathBuf,
    },
}

/// Entry point of the `weir` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            crate::serve::serve(config).await
        }
        Command::Functions(FunctionsCommand::Check { file }) => check_function(&file),
    }
}

fn check_function(file: &std::path::Path) -> anyhow::Result<()> {
    let engine = FunctionEngine::new(Default::default(), None)?;
    let started = std::time::Instant::now();
    let validator = ValidatorFunction::load_file(&engine, file)?;
    println!(
        "{}: ok, implements {} (sha256 {}, compiled and linked in {:.0} ms)",
        file.display(),
        crate::functions::validator::WORLD,
        validator.digest(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
