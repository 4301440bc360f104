//! An edge host's side of the shared PKI ledger: it puts every newer CRL the issuing service
//! publishes in service (new connections are checked against it, and open connections whose
//! certificate it lists are cut), raises the alarm while the CRL in service is past its
//! nextUpdate (`weir_device_crl_expired`, an error in the log; what that means for devices is
//! the operator's [`weir_pki::ExpiredCrlPolicy`], applied by the TLS config itself), and passes
//! renewal answers to the requests waiting for them.
//!
//! It learns of changes through `weir_pki` notifications, and checks the CRL number every
//! [`CHECK_INTERVAL`] in case one was missed: a revocation reaches every host of every region
//! within that interval, and within the notification's latency (milliseconds) normally.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use weir_metrics::Metrics;
use weir_pki::{InstalledCrl, ReloadingServerConfig};
use weir_storage::{PkiEvent, Storage, listen_pki};

/// How often the CRL number is checked without a notification.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where the ledger's CRL comes from, in logs and errors.
const LEDGER: &str = "the PKI ledger's CRL";

/// Follows the PKI ledger for one host.
pub struct PkiFollower {
    storage: Storage,
    tls: Arc<ReloadingServerConfig>,
    crl_installed: watch::Sender<u64>,
    renewals_answered: broadcast::Sender<i64>,
    metrics: Arc<Metrics>,
    expired: bool,
}

/// The CRL the ledger holds now, ready to install; fails if none was ever published.
pub async fn ledger_crl(storage: &Storage) -> anyhow::Result<InstalledCrl> {
    let crl = storage
        .current_crl()
        .await
        .context("reading the device CRL from the PKI ledger")?
        .context("the PKI ledger holds no device CRL yet: start the issuing service (`weir ca serve`), which publishes one, or run `weir pki refresh-crl`")?;
    Ok(InstalledCrl::from_pem(crl.pem.as_bytes(), LEDGER)?)
}

impl PkiFollower {
    /// A follower installing CRLs into `tls`, announcing each on `crl_installed` and each
    /// renewal answer on `renewals_answered`.
    pub fn new(
        storage: Storage,
        tls: Arc<ReloadingServerConfig>,
        crl_installed: watch::Sender<u64>,
        renewals_answered: broadcast::Sender<i64>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut follower = PkiFollower {
            storage,
            tls,
            crl_installed,
            renewals_answered,
            metrics,
            expired: false,
        };
        follower.check_expiry();
        follower
    }

    /// Follows the ledger until `shutdown`.
    pub async fn run(mut self, database_url: String, shutdown: CancellationToken) {
        let listen = || listen_pki(&database_url);
        let Some(mut listener) = crate::listening::listen_until_stopped(
            "PKI changes",
            CHECK_INTERVAL,
            &shutdown,
            listen,
        )
        .await
        else {
            return;
        };
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        loop {
            tokio::select! {
                event = listener.next_event() => match event {
                    Some(PkiEvent::Answered(id)) => {
                        // No receiver is waiting when the request was made through another host.
                        let _ = self.renewals_answered.send(id);
                    }
                    Some(PkiEvent::Crl(number)) => self.follow_crl(Some(number)).await,
                    Some(PkiEvent::Missed) => self.follow_crl(None).await,
                    Some(PkiEvent::RenewalRequested) => {}
                    None => return,
                },
                _ = tick.tick() => self.follow_crl(None).await,
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Installs the ledger's CRL if it is newer than the one in service (`announced`: the
    /// number a notification gave, saving a query).
    async fn follow_crl(&mut self, announced: Option<u64>) {
        let in_service = self.tls.crl_info().map_or(0, |crl| crl.number);
        let latest = match announced {
            Some(number) => Some(number),
            None => match self.storage.crl_number().await {
                Ok(number) => number,
                Err(error) => {
                    tracing::debug!(%error, "cannot check the device CRL now");
                    None
                }
            },
        };
        if latest.is_some_and(|latest| latest > in_service) {
            self.install_latest().await;
        }
        self.check_expiry();
    }

    async fn install_latest(&self) {
        let installed = match ledger_crl(&self.storage).await {
            Ok(crl) => self.tls.install_crl(crl).map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        match installed {
            Ok(true) => {
                let number = self.tls.crl_info().map_or(0, |crl| crl.number);
                tracing::info!(number, "device CRL installed");
                // Open connections check their certificate against the new CRL.
                self.crl_installed
                    .send_modify(|generation| *generation += 1);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot install the device CRL; keeping the one in service"
                );
            }
        }
    }

    /// Updates the alarm from the CRL in service.
    fn check_expiry(&mut self) {
        let crl = self.tls.crl_info();
        let expired = crl
            .as_ref()
            .is_some_and(|crl| crl.is_expired(OffsetDateTime::now_utc()));
        self.metrics.device_crl_expired.set(i64::from(expired));
        let number = crl.as_ref().map_or(0, |crl| crl.number);
        self.metrics
            .device_crl_number
            .set(i64::try_from(number).unwrap_or(i64::MAX));
        if expired != self.expired {
            let next_update = crl.and_then(|crl| crl.next_update);
            if expired {
                tracing::error!(?next_update, policy = ?self.tls.files().expired_crl, "the device CRL is past its nextUpdate: is the issuing service (`weir ca serve`) running? `weir pki refresh-crl` re-signs it");
            } else {
                tracing::info!(?next_update, "the device CRL is current again");
            }
            self.expired = expired;
        }
    }
}
