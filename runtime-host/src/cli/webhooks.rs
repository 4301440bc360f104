//! `weir webhooks`: the webhooks alert events are POSTed to — add one (its signing secret shown
//! once), list them with their pending deliveries, remove one. The webhooks live in PostgreSQL
//! (`weir_storage`), `weir_webhooks` checks their URLs; this module prints them.

use std::path::Path;

use anyhow::Context as _;
use clap::Subcommand;

use super::{migrated_storage, utc_time};

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
        /// The signing secret, at least 16 characters (default: 32 random bytes in hex).
        #[arg(long)]
        secret: Option<String>,
    },
    /// List webhooks (never their secrets) with their pending deliveries.
    List {
        /// Only this organisation's webhooks.
        #[arg(long)]
        org: Option<String>,
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
            secret,
        } => {
            if org.trim().is_empty() {
                anyhow::bail!("--org must name an organisation");
            }
            weir_webhooks::check_url(&url).context("--url")?;
            if secret.as_deref().is_some_and(|s| s.len() < 16) {
                anyhow::bail!("--secret must be at least 16 characters (or omitted: one is made)");
            }
            let (storage, _) = migrated_storage(config).await?;
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
        WebhooksCommand::List { org } => {
            let (storage, _) = migrated_storage(config).await?;
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
