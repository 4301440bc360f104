//! `weir rules`: the alert rule sets each region runs, one per organisation — apply a rule file,
//! list the history, roll back. The function registry (`weir_pipeline::registry`) checks and
//! stores them; this module names the organisation and prints the outcome.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::utc_time;
use weir_config::Config;
use weir_pipeline::registry::FunctionRegistry;

#[derive(Debug, Subcommand)]
pub(super) enum RulesCommand {
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
    },
    /// List the rule sets each region ran for each organisation, newest first (`*`: current),
    /// with their rules' ids and versions.
    List {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
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
    },
}

/// Runs `command` on the registry of the `config` file's database.
pub(super) async fn run(command: RulesCommand, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        RulesCommand::Apply { file, region, org } => {
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
            let registry = FunctionRegistry::connect(Config::load(config)?).await?;
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
        RulesCommand::List { region } => {
            let registry = FunctionRegistry::connect(Config::load(config)?).await?;
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
        RulesCommand::Rollback { org, region } => {
            let registry = FunctionRegistry::connect(Config::load(config)?).await?;
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
