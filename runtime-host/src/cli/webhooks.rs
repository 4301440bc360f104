//! `weir webhooks`: the webhooks alert events are POSTed to — add one (its signing secret shown
//! once, or read from a file or standard input, never from the command line, which every user of
//! the machine can see), list them with their pending and dead deliveries, re-drive the dead
//! ones, remove one. The webhooks live in PostgreSQL (`weir_storage`), `weir_webhooks` checks
//! their URLs against the destination policy; this module prints them.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use weir_config::Config;

use super::{migrated_storage, utc_time};

/// The shortest secret accepted.
const MIN_SECRET: usize = 16;

/// Webhooks of alert events, per organisation or per rule.
#[derive(Debug, Subcommand)]
pub(super) enum WebhooksCommand {
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
        /// Read the signing secret, at least 16 characters, from this file (one line; the
        /// final line break is not part of it). Default: 32 random bytes in hex, printed.
        #[arg(long, value_name = "PATH", conflicts_with = "secret_stdin")]
        secret_file: Option<PathBuf>,
        /// Read the signing secret, at least 16 characters, from standard input (one line).
        #[arg(long)]
        secret_stdin: bool,
    },
    /// List webhooks (never their secrets) with their pending and dead deliveries.
    List {
        /// Only this organisation's webhooks.
        #[arg(long)]
        org: Option<String>,
    },
    /// Queue a webhook's dead deliveries again (given up after `alerting.webhook_max_age_s`,
    /// `alerting.webhook_max_attempts`, or a refused destination): due now, their age and
    /// attempts counted afresh.
    Redrive {
        /// The webhook's id (as `weir webhooks list` shows it).
        id: i64,
    },
    /// Remove a webhook by its id (as `weir webhooks list` shows it), with its pending
    /// deliveries.
    Remove {
        /// The webhook's id.
        id: i64,
    },
}

/// Runs `command` on the `config` file's database.
pub(super) async fn run(command: WebhooksCommand, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Add {
            org,
            url,
            rule,
            secret_file,
            secret_stdin,
        } => {
            if org.trim().is_empty() {
                anyhow::bail!("--org must name an organisation");
            }
            let settings = Config::load(config)?;
            weir_webhooks::check_destination(&url, settings.alerting.webhook_allow_private)
                .context("--url")?;
            let secret = match (secret_file, secret_stdin) {
                (Some(path), _) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("--secret-file {}", path.display()))?,
                ),
                (None, true) => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("--secret-stdin: reading standard input")?;
                    Some(text)
                }
                (None, false) => None,
            };
            let secret = secret.map(|text| one_line(&text)).transpose()?;
            let (storage, _) = migrated_storage(config).await?;
            let added = storage
                .add_webhook(&org, rule.as_deref(), &url, secret.as_deref())
                .await?;
            eprintln!(
                "added webhook {} for organisation {org:?} ({}) -> {url}",
                added.webhook.id,
                match &rule {
                    Some(rule) => format!("rule {rule:?}"),
                    None => "every rule".to_owned(),
                }
            );
            if secret.is_none() {
                // The secret alone on stdout (`SECRET=$(weir webhooks add ...)` works).
                eprintln!("its signing secret:");
                println!("{}", added.secret);
                eprintln!("Store it now: `weir webhooks list` never shows it.");
            }
        }
        WebhooksCommand::List { org } => {
            let (storage, _) = migrated_storage(config).await?;
            let webhooks = storage.list_webhooks(org.as_deref()).await?;
            if webhooks.is_empty() {
                eprintln!("no webhooks");
            } else {
                println!(
                    "{:>6}  {:<20}  {:<20}  {:<20}  {:>7}  {:>5}  URL",
                    "ID", "ORG", "RULE", "CREATED", "PENDING", "DEAD"
                );
            }
            for webhook in &webhooks {
                println!(
                    "{:>6}  {:<20}  {:<20}  {:<20}  {:>7}  {:>5}  {}",
                    webhook.id,
                    webhook.org,
                    webhook.rule_id.as_deref().unwrap_or("*"),
                    utc_time(webhook.created_at_ms),
                    webhook.pending,
                    webhook.dead,
                    webhook.url
                );
            }
            if webhooks.iter().any(|webhook| webhook.dead > 0) {
                eprintln!(
                    "Dead deliveries were given up; `weir webhooks redrive ID` queues them again."
                );
            }
        }
        WebhooksCommand::Redrive { id } => {
            let (storage, _) = migrated_storage(config).await?;
            if !storage
                .list_webhooks(None)
                .await?
                .iter()
                .any(|webhook| webhook.id == id)
            {
                anyhow::bail!("no webhook {id} (see `weir webhooks list`)");
            }
            let queued = storage.redrive_webhook_deliveries(id).await?;
            println!("queued {queued} dead deliveries of webhook {id} again");
        }
        WebhooksCommand::Remove { id } => {
            let (storage, _) = migrated_storage(config).await?;
            if !storage.remove_webhook(id).await? {
                anyhow::bail!("no webhook {id} (see `weir webhooks list`)");
            }
            println!("removed webhook {id} and its pending deliveries");
        }
    }
    Ok(())
}

/// The secret in `text`: its one line, without the line break; at least [`MIN_SECRET`]
/// characters.
fn one_line(text: &str) -> anyhow::Result<String> {
    let secret = text
        .strip_suffix('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .unwrap_or(text);
    if secret.contains(['\n', '\r']) {
        anyhow::bail!("the secret is one line");
    }
    if secret.chars().count() < MIN_SECRET {
        anyhow::bail!(
            "the secret must be at least {MIN_SECRET} characters (or left out: one is made)"
        );
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_one_line_of_at_least_16_characters() {
        assert_eq!(one_line("0123456789abcdef\n").unwrap(), "0123456789abcdef");
        assert_eq!(
            one_line("0123456789abcdef\r\n").unwrap(),
            "0123456789abcdef"
        );
        assert_eq!(one_line("0123456789abcdefg").unwrap(), "0123456789abcdefg");
        assert!(one_line("short\n").is_err());
        assert!(one_line("0123456789abcdef\nmore\n").is_err());
        assert!(one_line("").is_err());
    }
}
