//! The command line: one subcommand per operator task, each documented in `weir --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};
use weir_config::Config;
use weir_pipeline::registry::{FunctionName, FunctionRegistry, Readiness};
use weir_runtime::signature::PrivateKey;
use weir_runtime::{FunctionEngine, ValidatorFunction};

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
    /// Apply the database migrations and create the time partitions ahead, then exit.
    Migrate {
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage the device PKI: the CA, the server certificate, device certificates, revocation.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Simulate devices uploading meter data over mutual TLS HTTP/2, with store-and-forward.
    Simulate(SimulateArgs),
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
    Functions(FunctionsCommand),
    /// Apply, list and roll back the alert rule sets each region runs, one per organisation.
    ///
    /// A rule set is a rule file (TOML or JSON, as written), stored in the function registry
    /// content-addressed by SHA-256 under the name `rules:<org>` and assigned per region. The
    /// region's hosts evaluate with a newly applied set within a second, without a restart; a
    /// batch in flight keeps the rules it started with. A region's rule set of an organisation
    /// wins over the rules directory's file of that organisation. Takes `--config` and connects
    /// to `database_url` like `weir migrate`.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Manage the query API's bearer tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the webhooks alert events are POSTed to: add, list, remove.
    ///
    /// Every event of the organisation (or of one rule) is POSTed as JSON, signed with the
    /// webhook's secret (`Weir-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">`),
    /// and retried with backoff until the webhook answers 2xx: at least once, so receivers
    /// deduplicate by `Weir-Delivery-Id`.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

/// Files written in a PKI directory: `ca.pem`, `ca-key.pem`, `crl.pem`, `index.json`,
/// `server.pem`, `server-key.pem`, `devices/<id>.pem`, `devices/<id>-key.pem`.
#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a new CA in DIR (ca.pem, ca-key.pem, an empty crl.pem, index.json).
    Init {
        /// The PKI directory.
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Weir device CA")]
        name: String,
    },
    /// Issue the server certificate (server.pem, server-key.pem) for the given names/IPs.
    Server {
        /// The PKI directory.
        dir: PathBuf,
        /// DNS names or IP addresses the server is reached by (repeat for several).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a device certificate (devices/ID.pem, devices/ID-key.pem): CN=ID, O=ORG.
    Device {
        /// The PKI directory.
        dir: PathBuf,
        /// The device id (the certificate's CN).
        #[arg(long)]
        id: String,
        /// The device's organisation (tenant; the certificate's O).
        #[arg(long)]
        org: String,
        /// Validity in days: short-lived, renewed by the device through POST /v1/renew.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Revoke every certificate of a device and rewrite crl.pem (hosts pick it up within seconds).
    Revoke {
        /// The PKI directory.
        dir: PathBuf,
        /// The device id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// PKI directory whose CA issues the simulated devices' certificates.
    #[arg(long, env = "WEIR_PKI_DIR")]
    pki: PathBuf,
    /// The device listener to upload to.
    #[arg(long, default_value = "127.0.0.1:7443")]
    target: String,
    /// The name the server certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Number of devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Organisation of the devices.
    #[arg(long, default_value = "demo")]
    org: String,
    /// Device id prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Points per second per device (5 meters read together); 0 back-fills a day of history
    /// as fast as the server takes it.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Most points per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds to generate readings for.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Stop after this many points per device instead of after --duration.
    #[arg(long)]
    points: Option<u64>,
    /// Seconds to keep retrying unacknowledged points after generation stops.
    #[arg(long, default_value_t = 60)]
    drain: u64,
}

#[derive(Debug, Subcommand)]
enum FunctionsCommand {
    /// Compile a component and check it against the validator world, as a host would at load.
    Check {
        /// The component file (`.wasm`).
        file: PathBuf,
    },
    /// Deploy FILE as the NAME function of a region; its hosts switch within a second.
    ///
    /// The component is compiled and checked first (world: validator for `validator`, WASI HTTP
    /// proxy for `query`, alerter for `alerter`; a validator must also pass the host's
    /// self-check, an alerter must accept the region's rule sets); one that fails is refused,
    /// nothing is assigned, and the running version stays. Then every live host of the region
    /// prepares it (progress on stderr); a host that refuses it (say, it requires signed
    /// components) refuses the deploy. Once all are ready it is assigned and they swap it in
    /// together. Prints the SHA-256.
    Deploy {
        /// `validator`, `query` or `alerter`.
        name: FunctionName,
        /// The component file (`.wasm`).
        file: PathBuf,
        /// The region whose hosts run it.
        #[arg(long)]
        region: String,
        /// Seconds to wait for the hosts to prepare it; then it is assigned anyway, and the
        /// hosts not ready compile it as they switch.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        prepare_timeout: u64,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List the versions each region ran under each name, newest first (`*`: current).
    List {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Make the previous version of NAME current again in a region (hosts switch in a second).
    ///
    /// The previous version is the newest earlier assignment of another version; rolling back
    /// twice returns to where the first rollback started. Fails when there is none. Staged
    /// like a deploy: the region's hosts prepare it first.
    Rollback {
        /// `validator`, `query` or `alerter`.
        name: FunctionName,
        /// The region.
        #[arg(long)]
        region: String,
        /// Seconds to wait for the hosts to prepare it (see `deploy`).
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        prepare_timeout: u64,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create the operator's Ed25519 signing key: writes the private key (PKCS#8 PEM, mode 600)
    /// and prints the public key to configure hosts with (`WEIR_SIGNING_PUBLIC_KEY`).
    Keygen {
        /// Where to write the private key; refused if it exists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a component with the operator's key (replacing any earlier signature). Hosts with
    /// `functions.signing_public_key` load only components signed for it.
    Sign {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// The private key file from `weir functions keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signed component; default: FILE itself.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Apply FILE as an organisation's rule set in a region; its hosts use it within a second.
    ///
    /// The file is checked first by the alerter the region runs (its deployed one, else the
    /// configured component file); a file it refuses is refused with its message, naming the
    /// rule and field at fault, and nothing is stored. Prints the SHA-256 and the rules.
    Apply {
        /// The rule file (`.toml` or `.json`).
        file: PathBuf,
        /// The region whose hosts evaluate with it.
        #[arg(long)]
        region: String,
        /// The organisation whose devices the rules watch; the file's stem by default
        /// (`acme.toml` → `acme`).
        #[arg(long)]
        org: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List the rule sets each region ran for each organisation, newest first (`*`: current),
    /// with their rules' ids and versions.
    List {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Make an organisation's previous rule set current again in a region (hosts switch in a
    /// second). Fails when there is none.
    Rollback {
        /// The organisation.
        #[arg(long)]
        org: String,
        /// The region.
        #[arg(long)]
        region: String,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Each token reads one organisation's data. Only a hash of it is stored: it is shown once, when
/// created. Revoking takes effect on running hosts within 30 seconds.
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token for an organisation and print it (the only time it is shown).
    Create {
        /// The organisation whose devices the token may read.
        #[arg(long)]
        org: String,
        /// What the token is for (e.g. "grafana"), shown by `weir token list`.
        #[arg(long)]
        name: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List tokens (never their secrets), revoked ones included.
    List {
        /// Only this organisation's tokens.
        #[arg(long)]
        org: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Revoke a token by its id (as `weir token list` shows it).
    Revoke {
        /// The token's id.
        id: i64,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Webhooks of alert events, per organisation or per rule.
#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Add a webhook and print its signing secret (the only time it is shown).
    Add {
        /// The organisation whose alert events it receives.
        #[arg(long)]
        org: String,
        /// Where to POST them: an http:// or https:// URL.
        #[arg(long)]
        url: String,
        /// Only this rule's events (default: every rule of the organisation).
        #[arg(long)]
        rule: Option<String>,
        /// The signing secret, at least 16 characters (default: 32 random bytes in hex).
        #[arg(long)]
        secret: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List webhooks (never their secrets) with their pending deliveries.
    List {
        /// Only this organisation's webhooks.
        #[arg(long)]
        org: Option<String>,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Remove a webhook by its id (as `weir webhooks list` shows it), with its pending
    /// deliveries.
    Remove {
        /// The webhook's id.
        id: i64,
        /// TOML configuration file; `WEIR_*` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
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
        Command::Migrate { config } => {
            let (_, applied) = migrated_storage(config.as_deref()).await?;
            println!("database schema up to date ({applied} migrations applied now)");
            Ok(())
        }
        Command::Pki(command) => pki(command),
        Command::Simulate(args) => simulate(args).await,
        Command::Functions(command) => functions(command).await,
        Command::Rules(command) => rules(command).await,
        Command::Token(command) => token(command).await,
        Command::Webhooks(command) => webhooks(command).await,
    }
}

/// A one-connection storage on the configured database, with the schema brought up to date;
/// and how many migrations that applied.
async fn migrated_storage(
    config: Option<&std::path::Path>,
) -> anyhow::Result<(weir_storage::Storage, usize)> {
    let config = Config::load(config)?;
    let storage =
        weir_storage::Storage::connect(&config.database_url, 1, std::time::Duration::from_secs(10))
            .await?;
    let applied = storage.migrate().await?;
    Ok((storage, applied))
}

async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { org, name, config } => {
            if org.trim().is_empty() {
                anyhow::bail!("--org must name an organisation");
            }
            let (storage, _) = migrated_storage(config.as_deref()).await?;
            let token = storage.create_token(&org, name.as_deref()).await?;
            // The secret alone on stdout (`TOKEN=$(weir token create ...)` works); the rest on
            // stderr.
            eprintln!(
                "created API token {} for organisation {org:?}{}:",
                token.id,
                name.map(|name| format!(" ({name})")).unwrap_or_default()
            );
            println!("{}", token.secret);
            eprintln!("Store it now: it cannot be shown again (only its hash is kept).");
        }
        TokenCommand::List { org, config } => {
            let (storage, _) = migrated_storage(config.as_deref()).await?;
            let tokens = storage.list_tokens(org.as_deref()).await?;
            if tokens.is_empty() {
                eprintln!("no tokens");
            } else {
                println!(
                    "{:>6}  {:<20}  {:<20}  {:<20}  STATUS",
                    "ID", "ORG", "NAME", "CREATED"
                );
            }
            for token in tokens {
                println!(
                    "{:>6}  {:<20}  {:<20}  {:<20}  {}",
                    token.id,
                    token.org,
                    token.name.as_deref().unwrap_or("-"),
                    utc_time(token.created_at_ms),
                    if token.revoked { "revoked" } else { "active" }
                );
            }
        }
        TokenCommand::Revoke { id, config } => {
            let (storage, _) = migrated_storage(config.as_deref()).await?;
            if !storage.revoke_token(id).await? {
                anyhow::bail!(
                    "no active token {id}: it does not exist or is already revoked \
                     (see `weir token list`)"
                );
            }
            println!("revoked API token {id}; running hosts refuse it within 30 seconds");
        }
    }
    Ok(())
}

async fn webhooks(command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Add {
            org,
            url,
            rule,
            secret,
            config,
        } => {
            if org.trim().is_empty() {
                anyhow::bail!("--org must name an organisation");
            }
            weir_webhooks::check_url(&url).context("--url")?;
            if secret.as_deref().is_some_and(|s| s.len() < 16) {
                anyhow::bail!("--secret must be at least 16 characters (or omitted: one is made)");
            }
            let (storage, _) = migrated_storage(config.as_deref()).await?;
            let added = storage
                .add_webhook(&org, rule.as_deref(), &url, secret.as_deref())
                .await?;
            eprintln!(
                "added webhook {} for organisation {org:?} ({}) -> {url}; its signing secret:",
                added.webhook.id,
                match &rule {
                    Some(rule) => format!("rule {rule:?}"),
                    None => "every rule".to_owned(),
                }
            );
            // The secret alone on stdout (`SECRET=$(weir webhooks add ...)` works).
            println!("{}", added.secret);
            eprintln!("Store it now: `weir webhooks list` never shows it.");
        }
        WebhooksCommand::List { org, config } => {
            let (storage, _) = migrated_storage(config.as_deref()).await?;
            let webhooks = storage.list_webhooks(org.as_deref()).await?;
            if webhooks.is_empty() {
                eprintln!("no webhooks");
            } else {
                println!(
                    "{:>6}  {:<20}  {:<20}  {:<20}  {:>7}  URL",
                    "ID", "ORG", "RULE", "CREATED", "PENDING"
                );
            }
            for webhook in webhooks {
                println!(
                    "{:>6}  {:<20}  {:<20}  {:<20}  {:>7}  {}",
                    webhook.id,
                    webhook.org,
                    webhook.rule_id.as_deref().unwrap_or("*"),
                    utc_time(webhook.created_at_ms),
                    webhook.pending,
                    webhook.url
                );
            }
        }
        WebhooksCommand::Remove { id, config } => {
            let (storage, _) = migrated_storage(config.as_deref()).await?;
            if !storage.remove_webhook(id).await? {
                anyhow::bail!("no webhook {id} (see `weir webhooks list`)");
            }
            println!("removed webhook {id} and its pending deliveries");
        }
    }
    Ok(())
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
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

fn pki(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init { dir, name } => {
            let files = weir_pki::init_ca(&dir, &name)?;
            println!("created CA {name:?} in {}", dir.display());
            println!("  certificate  {}", files.cert.display());
            println!("  key          {} (keep it secret)", files.key.display());
        }
        PkiCommand::Server { dir, names, days } => {
            let files = weir_pki::issue_server(&dir, &names, days)?;
            println!(
                "issued server certificate for {} ({days} days)",
                names.join(", ")
            );
            println!("  certificate  {}", files.cert.display());
            println!("  key          {}", files.key.display());
        }
        PkiCommand::Device { dir, id, org, days } => {
            let files = weir_pki::issue_device(&dir, &id, &org, days)?;
            println!(
                "issued device certificate CN={id} O={org} (serial {}, {days} days)",
                files.serial_hex
            );
            println!("  certificate  {}", files.cert.display());
            println!("  key          {}", files.key.display());
        }
        PkiCommand::Revoke { dir, id } => {
            let revocation = weir_pki::revoke_device(&dir, &id)?;
            println!(
                "revoked {} certificate(s) of {id}; wrote CRL #{} to {}",
                revocation.newly_revoked.len(),
                revocation.crl_number,
                revocation.crl.display()
            );
        }
    }
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let config = crate::simulate::SimulationConfig {
        target: args.target,
        server_name: args.server_name,
        pki_dir: args.pki,
        devices: args.devices,
        org: args.org,
        device_prefix: args.prefix,
        rate: (args.rate > 0.0).then_some(args.rate),
        batch_points: args.batch.max(1),
        duration: args
            .points
            .is_none()
            .then(|| std::time::Duration::from_secs(args.duration)),
        points_per_device: args.points,
        drain_timeout: std::time::Duration::from_secs(args.drain),
        progress: true,
    };
    eprintln!(
        "simulating {} devices against {} (Ctrl-C stops)",
        config.devices, config.target
    );
    let report = crate::simulate::run(config).await?;
    println!("{report}");
    if report.acknowledged == 0 {
        anyhow::bail!("no batch was acknowledged: is `weir serve` running at that address?");
    }
    Ok(())
}

/// Prints where a staged version stands on the region's hosts (stderr: stdout keeps the result).
fn print_readiness(readiness: &Readiness) {
    let pending: Vec<&str> = readiness.pending().collect();
    if readiness.hosts.is_empty() {
        eprintln!("no live host in the region: nothing to wait for");
    } else if pending.is_empty() {
        eprintln!(
            "{}/{} hosts ready ({:.1} s)",
            readiness.done(),
            readiness.hosts.len(),
            readiness.elapsed.as_secs_f64()
        );
    } else {
        eprintln!(
            "{}/{} hosts ready ({:.1} s); preparing: {}",
            readiness.done(),
            readiness.hosts.len(),
            readiness.elapsed.as_secs_f64(),
            pending.join(", ")
        );
    }
}

async fn functions(command: FunctionsCommand) -> anyhow::Result<()> {
    match command {
        FunctionsCommand::Check { file } => check_function(&file)?,
        FunctionsCommand::Deploy {
            name,
            file,
            region,
            prepare_timeout,
            config,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let registry = FunctionRegistry::connect(Config::load(config.as_deref())?)
                .await?
                .with_prepare_timeout(Duration::from_secs(prepare_timeout));
            let assignment = registry
                .deploy_reporting(name, &bytes, &region, &mut print_readiness)
                .await?;
            if assignment.changed {
                println!(
                    "deployed {name} {} to region {region} ({} bytes); its hosts switch within a second",
                    assignment.sha256,
                    bytes.len()
                );
            } else {
                println!(
                    "{name} {} is already current in region {region}; nothing changed",
                    assignment.sha256
                );
            }
        }
        FunctionsCommand::List { region, config } => {
            let registry = FunctionRegistry::connect(Config::load(config.as_deref())?).await?;
            let records = registry.list(region.as_deref()).await?;
            if records.is_empty() {
                eprintln!("no versions deployed");
                return Ok(());
            }
            // Rule sets (`rules:<org>`) are listed too: the column fits the longest name.
            let width = records
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(0)
                .max(10);
            println!(
                "{:<16}  {:<width$}  {:<12}  {:>9}  {:<20}  {:<8}  CURRENT",
                "REGION", "NAME", "SHA256", "SIZE", "ASSIGNED", "ACTION"
            );
            for record in records {
                println!(
                    "{:<16}  {:<width$}  {:<12}  {:>9}  {:<20}  {:<8}  {}",
                    record.region,
                    record.name,
                    &record.sha256[..12],
                    record.size,
                    utc_time(record.assigned_at_ms),
                    record.action,
                    if record.current { "*" } else { "" }
                );
            }
        }
        FunctionsCommand::Rollback {
            name,
            region,
            prepare_timeout,
            config,
        } => {
            let registry = FunctionRegistry::connect(Config::load(config.as_deref())?)
                .await?
                .with_prepare_timeout(Duration::from_secs(prepare_timeout));
            let assignment = registry
                .rollback_reporting(name, &region, &mut print_readiness)
                .await?;
            println!(
                "rolled {name} back in region {region}: {} (was {}); its hosts switch within a second",
                assignment.sha256,
                assignment.previous.as_deref().unwrap_or("-")
            );
        }
        FunctionsCommand::Keygen { out } => {
            let key = PrivateKey::generate()?;
            write_private(&out, key.to_pem().as_bytes())?;
            eprintln!("wrote the private key to {}; keep it secret", out.display());
            println!("{}", key.public_key().to_hex());
        }
        FunctionsCommand::Sign { file, key, out } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read the key {}", key.display()))?;
            let key = PrivateKey::from_pem(&pem).with_context(|| key.display().to_string())?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let signed = key
                .sign(&bytes)
                .with_context(|| format!("signing {}", file.display()))?;
            let out = out.unwrap_or(file);
            std::fs::write(&out, &signed)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "signed {} for public key {}",
                out.display(),
                key.public_key().to_hex()
            );
        }
    }
    Ok(())
}

/// Writes a new file only its owner can read; refuses to overwrite.
fn write_private(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn rules(command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Apply {
            file,
            region,
            org,
            config,
        } => {
            let org = match org {
                Some(org) => org,
                None => file
                    .file_stem()
                    .and_then(|stem| stem.to_str())
                    .map(str::to_owned)
                    .with_context(|| {
                        format!(
                            "cannot name the organisation after {}: give --org",
                            file.display()
                        )
                    })?,
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let registry = FunctionRegistry::connect(Config::load(config.as_deref())?).await?;
            let applied = registry.apply_rules(&org, &text, &region).await?;
            let sha256 = &applied.assignment.sha256;
            if applied.assignment.changed {
                println!(
                    "applied the rules of {org} {sha256} to region {region}; its hosts use them within a second"
                );
            } else {
                println!(
                    "the rules of {org} {sha256} are already current in region {region}; nothing changed"
                );
            }
            for (id, version) in &applied.rules {
                println!("  {id} v{version}");
            }
        }
        RulesCommand::List { region, config } => {
            let registry = FunctionRegistry::connect(Config::load(config.as_deref())?).await?;
            let records = registry.list_rules(region.as_deref()).await?;
            if records.is_empty() {
                eprintln!("no rule sets applied");
                return Ok(());
            }
            println!(
                "{:<16}  {:<16}  {:<12}  {:<20}  {:<8}  {:<7}  RULES",
                "REGION", "ORG", "SHA256", "ASSIGNED", "ACTION", "CURRENT"
            );
            for set in records {
                let rules = match &set.rules {
                    Some(rules) => rules
                        .iter()
                        .map(|(id, version)| format!("{id} v{version}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "?".to_owned(),
                };
                println!(
                    "{:<16}  {:<16}  {:<12}  {:<20}  {:<8}  {:<7}  {rules}",
                    set.record.region,
                    set.org,
                    &set.record.sha256[..12],
                    utc_time(set.record.assigned_at_ms),
                    set.record.action,
                    if set.record.current { "*" } else { "" }
                );
            }
        }
        RulesCommand::Rollback {
            org,
            region,
            config,
        } => {
            let registry = FunctionRegistry::connect(Config::load(config.as_deref())?).await?;
            let assignment = registry.rollback_rules(&org, &region).await?;
            println!(
                "rolled the rules of {org} back in region {region}: {} (was {}); its hosts switch within a second",
                assignment.sha256,
                assignment.previous.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

fn check_function(file: &std::path::Path) -> anyhow::Result<()> {
    let engine = FunctionEngine::new(Default::default(), None)?;
    let started = std::time::Instant::now();
    let validator = ValidatorFunction::load_file(&engine, file)?;
    println!(
        "{}: ok, implements {} (sha256 {}, compiled and linked in {:.0} ms)",
        file.display(),
        weir_runtime::validator::WORLD,
        validator.digest(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
