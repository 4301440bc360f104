//! The command line: one subcommand per operator task, each documented in `weir --help`.
//!
//! This module owns the parser ([`Cli`]: the global `--config` and `--log-format`), the list of
//! commands and the dispatch to them, and what several command groups share (opening the
//! configured database, printing a time). Each command group lives in its own module and only
//! parses its arguments, calls the crate that does the work and prints the outcome; `weir serve`
//! is [`crate::serve`].

mod functions;
mod pki;
mod rules;
mod simulate;
mod token;
mod webhooks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};
use weir_config::Config;

/// Weir: edge ingest for IoT meter data.
///
/// Devices upload batches of (key, value, timestamp) readings; Weir validates them in sandboxed
/// WASM functions and stores them. Configuration comes from `--config` (TOML) and `WEIR_*`
/// environment variables; see the README for every setting.
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file; `WEIR_*` variables override it.
    #[arg(long, short, global = true, env = "WEIR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: load the functions and serve until interrupted (SIGHUP reloads them).
    Serve,
    /// Apply the database migrations and create the time partitions ahead, then exit.
    Migrate,
    /// Manage the device PKI: the CA, the server certificate, device certificates, revocation.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// The issuing service of the device PKI (holds the CA key; edge hosts do not).
    #[command(subcommand)]
    Ca(pki::CaCommand),
    /// Simulate devices uploading meter data over mutual TLS HTTP/2, with store-and-forward.
    Simulate(simulate::SimulateArgs),
    /// Check and sign function components; deploy, list and roll back the versions each region runs.
    ///
    /// The function registry (in PostgreSQL) keeps every deployed version, content-addressed by
    /// SHA-256, and which version each region runs under each name (`validator`, `query`,
    /// `alerter`; alert rule sets are `weir rules`). Hosts started with `WEIR_REGION=R` run R's
    /// versions (the files of `functions_dir` for names R has none for). A deploy or rollback
    /// is staged: every live host of R compiles and checks the version first (the deploy shows
    /// their progress and waits; a few seconds for the alerter), then it is assigned and the
    /// hosts swap it in within a second, without a restart or a failed request; batches in
    /// flight finish on the version they started with. Other regions are untouched. `deploy`,
    /// `list` and `rollback` take `--config` and connect to `database_url` like `weir migrate`.
    #[command(subcommand)]
    Functions(functions::FunctionsCommand),
    /// Apply, list and roll back the alert rule sets each region runs, one per organisation.
    ///
    /// A rule set is a rule file (TOML or JSON, as written), stored in the function registry
    /// content-addressed by SHA-256 under the name `rules:<org>` and assigned per region. The
    /// region's hosts evaluate with a newly applied set within a second, without a restart; a
    /// batch in flight keeps the rules it started with. A region's rule set of an organisation
    /// wins over the rules directory's file of that organisation. Takes `--config` and connects
    /// to `database_url` like `weir migrate`.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Manage the query API's bearer tokens: create, list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Manage the webhooks alert events are POSTed to: add, list, redrive, remove.
    ///
    /// Every event of the organisation (or of one rule) is POSTed as JSON, signed with the
    /// webhook's secret (`Weir-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">`),
    /// and retried with backoff until the webhook answers 2xx: at least once, so receivers
    /// deduplicate by `Weir-Delivery-Id`. A delivery too old or tried too often is given up
    /// (dead) until `weir webhooks redrive`.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
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
    let result = runtime.block_on(run(cli.command, cli.config.as_deref()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        Command::Serve => crate::serve::serve(Config::load(config)?).await,
        Command::Migrate => {
            let (_, applied) = migrated_storage(config).await?;
            println!("database schema up to date ({applied} migrations applied now)");
            Ok(())
        }
        Command::Pki(command) => pki::run(command, config).await,
        Command::Ca(command) => pki::run_ca(command, config).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Functions(command) => functions::run(command, config).await,
        Command::Rules(command) => rules::run(command, config).await,
        Command::Token(command) => token::run(command, config).await,
        Command::Webhooks(command) => webhooks::run(command, config).await,
    }
}

/// A one-connection storage on the configured database, with the schema brought up to date;
/// and how many migrations that applied.
async fn migrated_storage(config: Option<&Path>) -> anyhow::Result<(weir_storage::Storage, usize)> {
    let config = Config::load(config)?;
    let storage =
        weir_storage::Storage::connect(&config.database_url, 1, Duration::from_secs(10)).await?;
    let applied = storage.migrate().await?;
    Ok((storage, applied))
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`, as every listing prints times.
fn utc_time(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The path `--config` gives, unless `WEIR_CONFIG` is set in the test's environment (then
    /// the variable supplies it when the flag is absent, which this test cannot control).
    fn config_of(args: &[&str]) -> Option<PathBuf> {
        Cli::try_parse_from(args).unwrap().config
    }

    #[test]
    fn config_is_accepted_before_or_after_the_subcommand() {
        let expected = Some(PathBuf::from("f.toml"));
        assert_eq!(
            config_of(&["weir", "serve", "--config", "f.toml"]),
            expected
        );
        assert_eq!(
            config_of(&["weir", "--config", "f.toml", "serve"]),
            expected
        );
        assert_eq!(config_of(&["weir", "-c", "f.toml", "migrate"]), expected);
        assert_eq!(
            config_of(&["weir", "token", "revoke", "7", "-c", "f.toml"]),
            expected
        );
        assert_eq!(
            config_of(&[
                "weir",
                "functions",
                "list",
                "--config=f.toml",
                "--region",
                "eu"
            ]),
            expected
        );
    }

    #[test]
    fn config_is_optional() {
        if std::env::var_os("WEIR_CONFIG").is_some() {
            return; // The variable would supply it.
        }
        assert_eq!(config_of(&["weir", "serve"]), None);
        assert_eq!(config_of(&["weir", "webhooks", "list"]), None);
    }

    #[test]
    fn subcommand_arguments_still_parse_with_the_global_config() {
        let cli = Cli::try_parse_from([
            "weir",
            "rules",
            "apply",
            "acme.toml",
            "--region",
            "eu",
            "-c",
            "f.toml",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("f.toml")));
        assert!(matches!(
            cli.command,
            Command::Rules(rules::RulesCommand::Apply { ref region, .. }) if region == "eu"
        ));
    }
}
