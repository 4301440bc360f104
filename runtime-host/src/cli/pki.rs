//! `weir pki`: the device PKI on disk — create the CA, issue the server and device
//! certificates, revoke a device, re-sign the CRL. The work is `weir_pki`'s; this module parses the arguments
//! and says which files it wrote.

use std::path::PathBuf;

use clap::Subcommand;

/// Files written in a PKI directory: `ca.pem`, `ca-key.pem`, `crl.pem`, `index.json`,
/// `server.pem`, `server-key.pem`, `devices/<org>/<id>.pem`, `devices/<org>/<id>-key.pem`.
#[derive(Debug, Subcommand)]
pub(super) enum PkiCommand {
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
    /// Issue a device certificate (devices/ORG/ID.pem, devices/ORG/ID-key.pem): CN=ID, O=ORG.
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
    /// Revoke every certificate of a device and rewrite crl.pem (hosts pick it up within seconds).
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
    /// Re-sign crl.pem with a fresh validity (7 days) and the next CRL number.
    ///
    /// Hosts that hold the CA key do this by themselves (WEIR_CRL_REFRESH_MINUTES); run it
    /// from cron where none does. It also lists certificates superseded more than an hour ago.
    RefreshCrl {
        /// The PKI directory.
        dir: PathBuf,
    },
}

pub(super) fn run(command: PkiCommand) -> anyhow::Result<()> {
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
        PkiCommand::Revoke { dir, org, id } => {
            let revocation = weir_pki::revoke_device(&dir, &org, &id)?;
            println!(
                "revoked {} certificate(s) of {org}/{id}; wrote CRL #{} to {}",
                revocation.newly_revoked.len(),
                revocation.crl_number,
                revocation.crl.display()
            );
        }
        PkiCommand::RefreshCrl { dir } => {
            let crl = weir_pki::refresh_crl(&dir)?;
            let info = weir_pki::CrlInfo::read(&crl)?;
            println!(
                "wrote CRL #{} to {} (next update {})",
                info.number,
                crl.display(),
                info.next_update
                    .map_or_else(|| "none".to_owned(), |at| at.to_string())
            );
        }
    }
    Ok(())
}
