//! `weir token`: the query API's bearer tokens — create one (its secret shown once), list them,
//! revoke one. The tokens live in PostgreSQL (`weir_storage`); this module prints them.

use std::path::Path;

use clap::Subcommand;

use super::{migrated_storage, utc_time};

/// Each token reads one organisation's data. Only a hash of it is stored: it is shown once, when
/// created. Revoking takes effect on running hosts within 30 seconds.
#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a token for an organisation and print it (the only time it is shown).
    Create {
        /// The organisation whose devices the token may read.
        #[arg(long)]
        org: String,
        /// What the token is for (e.g. "grafana"), shown by `weir token list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets), revoked ones included.
    List {
        /// Only this organisation's tokens.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a token by its id (as `weir token list` shows it).
    Revoke {
        /// The token's id.
        id: i64,
    },
}

/// Runs `command` on the `config` file's database.
pub(super) async fn run(command: TokenCommand, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { org, name } => {
            if org.trim().is_empty() {
                anyhow::bail!("--org must name an organisation");
            }
            let (storage, _) = migrated_storage(config).await?;
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
        TokenCommand::List { org } => {
            let (storage, _) = migrated_storage(config).await?;
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
        TokenCommand::Revoke { id } => {
            let (storage, _) = migrated_storage(config).await?;
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
