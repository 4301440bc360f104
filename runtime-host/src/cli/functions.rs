//! `weir functions`: function components on the operator's side — check and sign them locally,
//! and deploy, list and roll back the versions each region runs through the function registry
//! (`weir_pipeline::registry`), showing the region's hosts' progress while a version is staged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;

use super::utc_time;
use weir_config::Config;
use weir_pipeline::registry::{FunctionName, FunctionRegistry, Readiness};
use weir_runtime::signature::PrivateKey;
use weir_runtime::{FunctionEngine, ValidatorFunction};

#[derive(Debug, Subcommand)]
pub(super) enum FunctionsCommand {
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
    },
    /// List the versions each region ran under each name, newest first (`*`: current).
    List {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
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

/// Runs `command`; `deploy`, `list` and `rollback` open the registry of the `config` file's
/// database.
pub(super) async fn run(command: FunctionsCommand, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        FunctionsCommand::Check { file } => check_function(&file)?,
        FunctionsCommand::Deploy {
            name,
            file,
            region,
            prepare_timeout,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let registry = FunctionRegistry::connect(Config::load(config)?)
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
        FunctionsCommand::List { region } => {
            let registry = FunctionRegistry::connect(Config::load(config)?).await?;
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
        } => {
            let registry = FunctionRegistry::connect(Config::load(config)?)
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

/// Writes a new file only its owner can read; refuses to overwrite.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
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

fn check_function(file: &Path) -> anyhow::Result<()> {
    let engine = FunctionEngine::new(Default::default(), None)?;
    let started = Instant::now();
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
