//! `POST /v1/renew`: the "phone home" renewal. A device presents its still-valid certificate
//! (the connection proves it) and a CSR for a new key, `{"csr": "<PEM>"}`, and gets a fresh
//! short-lived certificate for the same identity. The CSR's subject is ignored; a revoked or
//! unknown certificate is refused.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;
use weir_metrics::Metrics;
use weir_pki::{Ca, DeviceIdentity, RenewError};

use crate::http::{ApiError, Response, json_response};

/// Signs renewals with the CA of a PKI directory.
pub struct Renewal {
    dir: PathBuf,
    ca: Arc<Ca>,
    days: u32,
    min_interval: time::Duration,
    metrics: Arc<Metrics>,
}

impl Renewal {
    /// Loads the CA of `dir`; renewed certificates are valid for `days`, and a device may renew
    /// once per `min_interval`.
    pub fn load(
        dir: PathBuf,
        days: u32,
        min_interval: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let ca = Ca::load(&dir)?;
        Ok(Renewal {
            dir,
            ca: Arc::new(ca),
            days,
            min_interval: time::Duration::try_from(min_interval)?,
            metrics,
        })
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
            .ok_or_else(|| ApiError::bad_request("invalid_field", "csr must be a PEM string"))?
            .to_string();
        let (dir, ca, days, min_interval, presented) = (
            self.dir.clone(),
            self.ca.clone(),
            self.days,
            self.min_interval,
            identity.clone(),
        );
        // Signing and the index update touch files under a lock: keep them off the reactor.
        let signed = tokio::task::spawn_blocking(move || {
            weir_pki::renew_recorded(&dir, &ca, &presented, &csr, days, min_interval)
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "certificate renewal task failed");
            issue_failed()
        })?
        .map_err(|error| self.refused(identity, error))?;
        tracing::info!(device = %identity.device, org = %identity.org, old = %identity.serial_hex, new = %signed.serial_hex, "certificate renewed");
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "certificate": signed.cert_pem,
                "serial": signed.serial_hex,
                "not_after": signed.not_after.unix_timestamp(),
            }),
        ))
    }

    /// The answer to a refused renewal, counted by code; a superseded certificate is logged as
    /// a suspected clone, and the CA's own failures are logged but not shown to the device.
    fn refused(&self, identity: &DeviceIdentity, error: RenewError) -> ApiError {
        self.metrics.renewal_refused(error.code());
        let status = match &error {
            RenewError::InvalidCsr(_) => StatusCode::BAD_REQUEST,
            RenewError::DeviceRevoked { .. }
            | RenewError::UnknownCertificate { .. }
            | RenewError::Superseded { .. } => StatusCode::FORBIDDEN,
            RenewError::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
            _ => {
                tracing::error!(device = %identity.device, org = %identity.org, %error, "certificate renewal failed");
                return issue_failed();
            }
        };
        if let RenewError::Superseded { .. } = &error {
            tracing::warn!(device = %identity.device, org = %identity.org, serial = %identity.serial_hex, "renewal with a superseded certificate: suspected clone");
        }
        let api_error = ApiError::new(status, error.code(), error.to_string());
        match error {
            RenewError::TooSoon {
                retry_after_secs, ..
            } => api_error.retry_after(retry_after_secs),
            _ => api_error,
        }
    }
}

/// What a device hears when the CA could not sign: no paths or internals.
fn issue_failed() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "renewal_failed",
        "the certificate could not be issued; try again later",
    )
}
