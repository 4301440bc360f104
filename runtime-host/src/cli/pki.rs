//! `weir pki`: the operator's device PKI — create the CA, issue the server and device
//! certificates, revoke a device, re-sign the CRL. Files go to the CA directory; what every
//! host must know (certificates issued, revocations, the CRL) goes to the PKI ledger in the
//! configured PostgreSQL. The work is `weir_pki`'s and [`crate::ca`]'s; this module parses the
//! arguments and says what it did. `weir ca serve` is the issuing service ([`crate::ca::Signer`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use weir_config::Config;

use crate::ca;

/// Files written in a PKI directory: `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`,
/// `devices/<org>/<id>.pem`, `devices/<org>/<id>-key.pem`. Device certificates, revocations
/// and the CRL are recorded in the PKI ledger (the configured database).
#[derive(Debug, Subcommand)]
pub(super) enum PkiCommand {
    /// Create a new CA in DIR (ca.pem, ca-key.pem); `weir ca serve` publishes its first CRL.
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
    /// Issue a device certificate (devices/ORG/ID.pem, devices/ORG/ID-key.pem): CN=ID, O=ORG,
    /// recorded in the PKI ledger.
    ///
    /// The device's earlier certificates are superseded: they can no longer renew, and enter
    /// the CRL an hour later.
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
    /// Revoke every certificate of a device and publish a new CRL (every host of every region
    /// enforces it within seconds, open connections included).
    ///
    /// A device is its organisation and id: the same id in another organisation is untouched.
    Revoke {
        /// The PKI directory.
        dir: PathBuf,
        /// The device's organisation.
        #[arg(long)]
        org: String,
        /// The device id.
        #[arg(long)]
        id: String,
    },
    /// Publish a freshly signed CRL (valid 7 days) with the next CRL number.
    ///
    /// `weir ca serve` does this by itself (WEIR_CRL_REFRESH_MINUTES). It also lists
    /// certificates superseded more than an hour ago.
    RefreshCrl {
        /// The PKI directory.
        dir: PathBuf,
    },
}

/// `weir ca`: the issuing service.
#[derive(Debug, Subcommand)]
pub(super) enum CaCommand {
    /// Run the issuing service: the only process that holds the CA key. It answers the renewals
    /// edge hosts queue in the PKI ledger and keeps the CRL fresh. Run it centrally (one or
    /// more); edge hosts need only ca.pem and their server certificate.
    Serve {
        /// The CA directory (ca.pem, ca-key.pem).
        dir: PathBuf,
    },
}

pub(super) async fn run_ca(command: CaCommand, config: Option<&Path>) -> anyhow::Result<()> {
    let CaCommand::Serve { dir } = command;
    let config = Config::load(config)?;
    let storage = ledger(&config).await?;
    let signer = ca::Signer::new(
        storage,
        weir_pki::Ca::load(&dir)?,
        config.tls.renew_days,
        Duration::from_secs(config.tls.renew_min_interval_s),
        Duration::from_secs(config.tls.crl_refresh_minutes.saturating_mul(60)),
    )?;
    signer.refresh_crl_if_due().await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        stop.cancel();
    });
    tracing::info!(dir = %dir.display(), "issuing service running");
    signer.run(config.database_url.clone(), shutdown).await;
    tracing::info!("issuing service stopped");
    Ok(())
}

/// The PKI ledger of the configured database, migrated.
async fn ledger(config: &Config) -> anyhow::Result<weir_storage::Storage> {
    let storage = weir_storage::Storage::connect(&config.database_url, 2, Duration::from_secs(10))
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "connecting to the PKI ledger at {}: {error}",
                weir_config::redact_url(&config.database_url)
            )
        })?;
    storage.migrate().await?;
    Ok(storage)
}

pub(super) async fn run(command: PkiCommand, config: Option<&Path>) -> anyhow::Result<()> {
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
            let storage = ledger(&Config::load(config)?).await?;
            let files = ca::enrol_device(&storage, &dir, &org, &id, days).await?;
            println!(
                "issued device certificate CN={id} O={org} (serial {}, {days} days), recorded in the PKI ledger",
                files.serial_hex
            );
            println!("  certificate  {}", files.cert.display());
            println!("  key          {}", files.key.display());
        }
        PkiCommand::Revoke { dir, org, id } => {
            let storage = ledger(&Config::load(config)?).await?;
            let revocation =
                ca::revoke_device(&storage, &weir_pki::Ca::load(&dir)?, &org, &id).await?;
            println!(
                "revoked {} certificate(s) of {org}/{id}; published CRL #{}",
                revocation.newly_revoked.len(),
                revocation.crl_number,
            );
        }
        PkiCommand::RefreshCrl { dir } => {
            let storage = ledger(&Config::load(config)?).await?;
            let number = ca::publish_crl(&storage, &weir_pki::Ca::load(&dir)?).await?;
            println!("published CRL #{number} (valid 7 days)");
        }
    }
    Ok(())
}
