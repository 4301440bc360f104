//! Keeps the device endpoint's CRL current: a host that holds the CA key re-signs `crl.pem`
//! before it grows old (which also lists certificates whose supersession grace has passed), and
//! every host raises the alarm while the CRL in service is past its nextUpdate
//! (`weir_device_crl_expired`, an error in the log). What an expired CRL means for devices is
//! the operator's [`weir_pki::ExpiredCrlPolicy`], applied by the TLS config itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use weir_metrics::Metrics;
use weir_pki::ReloadingServerConfig;

/// Watches the CRL in service; re-signs it when this host may.
pub struct CrlKeeper {
    /// The PKI directory to re-sign in, when this host holds the CA key and refreshing is on.
    signer: Option<PathBuf>,
    /// How old the CRL may grow before it is re-signed.
    refresh_every: time::Duration,
    metrics: Arc<Metrics>,
    expired: bool,
}

impl CrlKeeper {
    /// A keeper re-signing in `pki_dir` every `refresh_every` (`None` or zero: never).
    pub fn new(pki_dir: Option<PathBuf>, refresh_every: Duration, metrics: Arc<Metrics>) -> Self {
        let signer = pki_dir.filter(|dir| {
            !refresh_every.is_zero() && weir_pki::PkiPaths::new(dir).ca_key().is_file()
        });
        CrlKeeper {
            signer,
            refresh_every: time::Duration::try_from(refresh_every).unwrap_or(time::Duration::MAX),
            metrics,
            expired: false,
        }
    }

    /// Re-signs the CRL now if it is due; the caller's reload picks the new file up.
    pub async fn refresh_if_due(&self, tls: &ReloadingServerConfig) {
        let (Some(dir), Some(crl)) = (&self.signer, tls.crl_info()) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        if crl.this_update + self.refresh_every > now && !crl.is_expired(now) {
            return;
        }
        let dir = dir.clone();
        match tokio::task::spawn_blocking(move || weir_pki::refresh_crl(&dir)).await {
            Ok(Ok(path)) => tracing::info!(crl = %path.display(), "device CRL re-signed"),
            Ok(Err(error)) => tracing::error!(%error, "cannot re-sign the device CRL"),
            Err(error) => tracing::error!(%error, "CRL refresh task failed"),
        }
    }

    /// Updates the alarm from the CRL in service.
    pub fn check_expiry(&mut self, tls: &ReloadingServerConfig) {
        let crl = tls.crl_info();
        let expired = crl
            .as_ref()
            .is_some_and(|crl| crl.is_expired(OffsetDateTime::now_utc()));
        self.metrics.device_crl_expired.set(i64::from(expired));
        if expired != self.expired {
            let next_update = crl.and_then(|crl| crl.next_update);
            if expired {
                tracing::error!(?next_update, policy = ?tls.files().expired_crl, "the device CRL is past its nextUpdate: run `weir pki refresh-crl` or give this host the CA (WEIR_CRL_REFRESH_MINUTES)");
            } else {
                tracing::info!(?next_update, "the device CRL is current again");
            }
            self.expired = expired;
        }
    }
}
