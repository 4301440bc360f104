//! `weir ca serve`: the issuing service. It holds the CA key (no edge host does), answers the
//! renewal requests edge hosts queue in the PKI ledger, and keeps the CRL fresh.
//!
//! It wakes on `weir_pki` notifications (a queued renewal) and, should one be missed, once a
//! second. Each round answers the pending requests in batches, each batch one ledger
//! transaction: [`weir_pki::check_renewal`] on the presented certificate as the ledger has it,
//! then [`weir_pki::renew`], recorded as the device's current certificate. A CRL is published
//! when there is none, and re-signed every `crl_refresh` (which also lists the certificates
//! whose supersession grace has passed). Several signers may run (one per failure domain):
//! requests are claimed with `SKIP LOCKED` and CRL publication is serialised by the ledger.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use weir_pki::{Ca, CertStatus, DeviceIdentity, RenewError};
use weir_storage::{
    IssuedCertificate, PkiEvent, RenewalAnswer, RenewalRequest, Storage, listen_pki,
};

/// How often pending requests are looked for without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the CRL's age is checked.
const CRL_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Requests answered per ledger transaction.
const BATCH: i64 = 64;

/// The issuing service: the CA and the policy it signs renewals under.
pub struct Signer {
    storage: Storage,
    ca: Arc<Ca>,
    days: u32,
    min_interval: time::Duration,
    crl_refresh: time::Duration,
}

impl Signer {
    /// A signer with `ca`, issuing renewed certificates valid `days` days at most once per
    /// `min_interval` per device, re-signing the CRL every `crl_refresh`.
    pub fn new(
        storage: Storage,
        ca: Ca,
        days: u32,
        min_interval: Duration,
        crl_refresh: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Signer {
            storage,
            ca: Arc::new(ca),
            days,
            min_interval: time::Duration::try_from(min_interval)?,
            crl_refresh: time::Duration::try_from(crl_refresh)?,
        })
    }

    /// Publishes a CRL if the ledger has none or it is due; returns its number if it did.
    pub async fn refresh_crl_if_due(&self) -> anyhow::Result<Option<u64>> {
        let due = match self.storage.current_crl().await? {
            None => true,
            Some(crl) => {
                OffsetDateTime::from(crl.this_update) + self.crl_refresh
                    <= OffsetDateTime::now_utc()
            }
        };
        if !due {
            return Ok(None);
        }
        let number = super::publish_crl(&self.storage, &self.ca).await?;
        tracing::info!(number, "device CRL published");
        Ok(Some(number))
    }

    /// Answers every pending renewal request; returns how many.
    pub async fn answer_pending(&self) -> anyhow::Result<usize> {
        let mut answered = 0;
        loop {
            let n = self
                .storage
                .answer_renewals(BATCH, |request, current| self.decide(request, current))
                .await?;
            answered += n;
            if n < BATCH as usize {
                return Ok(answered);
            }
        }
    }

    /// Serves until `shutdown`: answers renewals as they are queued and keeps the CRL fresh.
    pub async fn run(self, database_url: String, shutdown: CancellationToken) {
        let listen = || listen_pki(&database_url);
        let Some(mut listener) = crate::listening::listen_until_stopped(
            "renewal requests",
            POLL_INTERVAL,
            &shutdown,
            listen,
        )
        .await
        else {
            return;
        };
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        let mut crl_check = tokio::time::interval(CRL_CHECK_INTERVAL);
        loop {
            tokio::select! {
                event = listener.next_event() => match event {
                    Some(PkiEvent::RenewalRequested | PkiEvent::Missed) => self.answer_logged().await,
                    Some(_) => {}
                    None => return,
                },
                _ = poll.tick() => self.answer_logged().await,
                _ = crl_check.tick() => {
                    if let Err(error) = self.refresh_crl_if_due().await {
                        tracing::error!(error = format!("{error:#}"), "cannot re-sign the device CRL");
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn answer_logged(&self) {
        match self.answer_pending().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(answered = n, "renewal requests answered"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "cannot answer renewals now; will retry"
            ),
        }
    }

    /// The answer to one request, given the ledger's row of the certificate it presented.
    fn decide(
        &self,
        request: &RenewalRequest,
        current: Option<&IssuedCertificate>,
    ) -> RenewalAnswer {
        let presented = DeviceIdentity {
            device: request.device.clone(),
            org: request.org.clone(),
            serial_hex: request.presented_serial.clone(),
            not_after: 0,
        };
        let status = current.map(|cert| CertStatus {
            org: cert.org.clone(),
            device: cert.device.clone(),
            not_before: cert.not_before.into(),
            revoked: cert.revoked_at.is_some(),
            superseded: cert.superseded_by.is_some(),
            renewed: cert.renewed,
        });
        let now = weir_pki::ca::now();
        let signed = weir_pki::check_renewal(status.as_ref(), &presented, now, self.min_interval)
            .and_then(|()| weir_pki::renew(&self.ca, &presented, &request.csr, self.days));
        match signed {
            Ok(signed) => {
                tracing::info!(device = %request.device, org = %request.org, old = %request.presented_serial, new = %signed.serial_hex, "certificate renewed");
                RenewalAnswer::Issued {
                    record: IssuedCertificate {
                        serial: signed.serial_hex,
                        org: request.org.clone(),
                        device: request.device.clone(),
                        not_before: signed.not_before.into(),
                        not_after: signed.not_after.into(),
                        renewed: true,
                        revoked_at: None,
                        superseded_by: None,
                        superseded_at: None,
                    },
                    pem: signed.cert_pem,
                }
            }
            Err(error) => refusal(request, error),
        }
    }
}

/// A refused renewal as the ledger records it: a stable code and a message for the device (the
/// CA's own failures are logged here, not shown).
fn refusal(request: &RenewalRequest, error: RenewError) -> RenewalAnswer {
    let message = match &error {
        RenewError::Superseded { .. } => {
            tracing::warn!(device = %request.device, org = %request.org, serial = %request.presented_serial, "renewal with a superseded certificate: suspected clone");
            error.to_string()
        }
        RenewError::Issue(_) => {
            tracing::error!(device = %request.device, org = %request.org, %error, "certificate renewal failed");
            "the certificate could not be issued; try again later".to_owned()
        }
        _ => error.to_string(),
    };
    let retry_after_s = match &error {
        RenewError::TooSoon {
            retry_after_secs, ..
        } => Some(*retry_after_secs),
        _ => None,
    };
    RenewalAnswer::Refused {
        code: error.code().to_owned(),
        message,
        retry_after_s,
    }
}

/// A [`Signer`] serving in the background of this process (tests, a single-machine setup);
/// stops when dropped.
pub struct RunningSigner {
    shutdown: CancellationToken,
}

impl Signer {
    /// Publishes a CRL if the ledger has none, then serves in the background until the returned
    /// handle is dropped.
    pub async fn spawn(self, database_url: String) -> anyhow::Result<RunningSigner> {
        self.refresh_crl_if_due().await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(self.run(database_url, shutdown.clone()));
        Ok(RunningSigner { shutdown })
    }
}

impl Drop for RunningSigner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
