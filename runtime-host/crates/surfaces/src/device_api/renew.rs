//! `POST /v1/renew`: the "phone home" renewal. A device presents its still-valid certificate
//! (the connection proves it) and a CSR for a new key, `{"csr": "<PEM>"}`, and gets a fresh
//! short-lived certificate for the same identity. The CSR's subject is ignored.
//!
//! An edge host holds no CA key: it checks the CSR, queues the request in the PKI ledger and
//! waits (at most the configured time) for the issuing service's answer, a certificate or a
//! refusal with a stable code (revoked, superseded: a suspected clone, unknown, too soon).

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use weir_metrics::Metrics;
use weir_pki::DeviceIdentity;
use weir_storage::{RenewalOutcome, Storage};

use crate::http::{ApiError, Response, json_response};

/// How often a waiting request looks its answer up without being told.
const LOOKUP_INTERVAL: Duration = Duration::from_millis(500);
/// Seconds a device is told to wait when the issuing service did not answer.
const UNAVAILABLE_RETRY_S: u64 = 30;

/// Passes renewals to the issuing service through the PKI ledger.
pub struct Renewal {
    storage: Storage,
    answered: broadcast::Sender<i64>,
    wait: Duration,
    metrics: Arc<Metrics>,
}

impl Renewal {
    /// Renewals queued in `storage`'s ledger; `answered` carries the ids of answered requests
    /// (from the host's ledger follower), and a device waits at most `wait` for its answer.
    pub fn new(
        storage: Storage,
        answered: broadcast::Sender<i64>,
        wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Renewal {
            storage,
            answered,
            wait,
            metrics,
        }
    }

    /// Answers a renewal request of `identity`.
    pub async fn renew(
        &self,
        identity: &DeviceIdentity,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let request: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {error}"),
            )
        })?;
        let csr = request["csr"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("invalid_field", "csr must be a PEM string"))?;
        if let Err(error) = weir_pki::check_csr(csr) {
            self.metrics.renewal_refused(error.code());
            return Err(ApiError::bad_request(error.code(), error.to_string()));
        }
        // Subscribed before queueing, so the answer cannot pass unseen.
        let answers = self.answered.subscribe();
        let id = self
            .storage
            .request_renewal(&identity.org, &identity.device, &identity.serial_hex, csr)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot queue a certificate renewal");
                unavailable()
            })?;
        match self.wait_for(id, answers).await {
            Some(RenewalOutcome::Issued {
                certificate,
                serial,
                not_after,
            }) => {
                tracing::info!(device = %identity.device, org = %identity.org, old = %identity.serial_hex, new = %serial, "certificate renewed");
                let not_after = time::OffsetDateTime::from(not_after).unix_timestamp();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "certificate": certificate, "serial": serial, "not_after": not_after }),
                ))
            }
            Some(RenewalOutcome::Refused {
                code,
                message,
                retry_after_s,
            }) => Err(self.refused(identity, &code, message, retry_after_s)),
            None => {
                self.metrics.renewal_refused("renewal_unavailable");
                tracing::warn!(device = %identity.device, org = %identity.org, request = id, "the issuing service did not answer a renewal in time");
                Err(unavailable())
            }
        }
    }

    /// The answer to request `id`, or `None` if none came within the wait.
    async fn wait_for(
        &self,
        id: i64,
        mut answers: broadcast::Receiver<i64>,
    ) -> Option<RenewalOutcome> {
        let deadline = tokio::time::sleep(self.wait);
        tokio::pin!(deadline);
        let mut lookup = tokio::time::interval(LOOKUP_INTERVAL);
        lookup.tick().await;
        loop {
            tokio::select! {
                answered = answers.recv() => match answered {
                    Ok(answered) if answered != id => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                },
                _ = lookup.tick() => {}
                () = &mut deadline => return None,
            }
            match self.storage.renewal_outcome(id).await {
                Ok(Some(outcome)) => return Some(outcome),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, request = id, "cannot read a renewal answer now");
                }
            }
        }
    }

    /// The answer to a refused renewal, counted by code; a superseded certificate is logged as
    /// a suspected clone.
    fn refused(
        &self,
        identity: &DeviceIdentity,
        code: &str,
        message: String,
        retry_after_s: Option<u64>,
    ) -> ApiError {
        self.metrics.renewal_refused(code);
        let status = match code {
            "invalid_csr" => StatusCode::BAD_REQUEST,
            "device_revoked" | "unknown_certificate" | "certificate_superseded" => {
                StatusCode::FORBIDDEN
            }
            "renewal_too_soon" => StatusCode::TOO_MANY_REQUESTS,
            _ => return issue_failed(),
        };
        if code == "certificate_superseded" {
            tracing::warn!(device = %identity.device, org = %identity.org, serial = %identity.serial_hex, "renewal with a superseded certificate: suspected clone");
        }
        let error = ApiError::new(status, code_of(code), message);
        match retry_after_s {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    }
}

/// The refusal codes the issuing service gives, as the static codes API errors carry.
fn code_of(code: &str) -> &'static str {
    match code {
        "invalid_csr" => "invalid_csr",
        "device_revoked" => "device_revoked",
        "unknown_certificate" => "unknown_certificate",
        "certificate_superseded" => "certificate_superseded",
        "renewal_too_soon" => "renewal_too_soon",
        _ => "renewal_failed",
    }
}

/// What a device hears when the issuing service is out of reach: try again later.
fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "renewal_unavailable",
        "the certificate service did not answer; try again later",
    )
    .retry_after(UNAVAILABLE_RETRY_S)
}

/// What a device hears when the CA could not sign: no paths or internals.
fn issue_failed() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "renewal_failed",
        "the certificate could not be issued; try again later",
    )
}
