//! The operator's PKI actions that change the shared ledger: enrolling a device (its files in
//! the CA directory, its certificate in the ledger as the device's current one), revoking a
//! device and publishing a CRL. They need the CA directory with its key, so they run where
//! certificates are signed (the operator's machine or the issuing service), never on an edge
//! host; every host then learns of the change through the ledger.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use time::OffsetDateTime;
use weir_pki::{Ca, DeviceFiles};
use weir_storage::{IssuedCertificate, SignedCrl, Storage};

/// What [`revoke_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serials (hex) revoked now; empty if every certificate of the device already was.
    pub newly_revoked: Vec<String>,
    /// Number of the CRL published.
    pub crl_number: u64,
}

/// Issues device `id` of `org` a certificate valid `days` days (files in `dir`) and records it
/// in the ledger as the device's current certificate, superseding earlier ones.
pub async fn enrol_device(
    storage: &Storage,
    dir: &Path,
    org: &str,
    id: &str,
    days: u32,
) -> anyhow::Result<DeviceFiles> {
    let files = weir_pki::issue_device(dir, id, org, days)?;
    storage
        .record_certificate(&IssuedCertificate {
            serial: files.serial_hex.clone(),
            org: org.to_owned(),
            device: id.to_owned(),
            not_before: files.not_before.into(),
            not_after: files.not_after.into(),
            renewed: false,
            revoked_at: None,
            superseded_by: None,
            superseded_at: None,
        })
        .await
        .context("recording the certificate in the PKI ledger")?;
    Ok(files)
}

/// Revokes every certificate of device `id` of `org` and publishes a CRL listing them. The
/// same id in another organisation is another device, left alone. Fails if the ledger knows
/// no certificate of that device.
pub async fn revoke_device(
    storage: &Storage,
    ca: &Ca,
    org: &str,
    id: &str,
) -> anyhow::Result<Revocation> {
    let newly_revoked = storage
        .revoke_device_certificates(org, id)
        .await?
        .with_context(|| format!("the PKI ledger knows no certificate of device {org}/{id}"))?;
    // Published even when nothing changed, so that re-running the command repairs a CRL that
    // an earlier, interrupted run failed to publish.
    let crl_number = publish_crl(storage, ca).await?;
    Ok(Revocation {
        newly_revoked,
        crl_number,
    })
}

/// Signs and publishes the next CRL: every certificate still valid that is revoked, or was
/// superseded more than [`weir_pki::SUPERSEDED_GRACE`] ago. Returns its number.
pub async fn publish_crl(storage: &Storage, ca: &Ca) -> anyhow::Result<u64> {
    let now = weir_pki::ca::now();
    let cutoff: SystemTime = weir_pki::superseded_cutoff(now).into();
    let number = storage
        .publish_crl(cutoff, |number, entries| {
            let retired = entries
                .iter()
                .map(|entry| (entry.serial.as_str(), OffsetDateTime::from(entry.at)));
            weir_pki::sign_crl(ca, number, retired, now).map(|crl| SignedCrl {
                pem: crl.pem,
                this_update: crl.this_update.into(),
                next_update: crl.next_update.into(),
            })
        })
        .await
        .context("publishing the CRL in the PKI ledger")??;
    Ok(number)
}
