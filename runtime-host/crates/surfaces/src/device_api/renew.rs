//! `POST /v1/renew`: the "phone home" renewal. A device presents its still-valid certificate
//! (the connection proves it) and a CSR for a new key, `{"csr": "<PEM>"}`, and gets a fresh
//! short-lived certificate for the same identity. The CSR's subject is ignored; a revoked or
//! unknown certificate is refused.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;
use weir_pki::{Ca, DeviceIdentity, RenewError};

use crate::http::{ApiError, Response, json_response};

/// Signs renewals with the CA of a PKI directory.
pub struct Renewal {
    dir: PathBuf,
    ca: Arc<Ca>,
    days: u32,
}

impl Renewal {
    /// Loads the CA of `dir`; renewed certificates are valid for `days`.
    pub fn load(dir: PathBuf, days: u32) -> anyhow::Result<Self> {
        let ca = Ca::load(&dir)?;
        Ok(Renewal {
            dir,
            ca: Arc::new(ca),
            days,
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
        let (dir, ca, days, identity) = (
            self.dir.clone(),
            self.ca.clone(),
            self.days,
            identity.clone(),
        );
        // Signing and the index update touch files under a lock: keep them off the reactor.
        let signed = tokio::task::spawn_blocking(move || {
            weir_pki::renew_recorded(&dir, &ca, &identity, &csr, days)
        })
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "renewal_failed",
                error.to_string(),
            )
        })?
        .map_err(renew_error)?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "certificate": signed.cert_pem,
                "serial": signed.serial_hex,
                "not_after": signed.not_after.unix_timestamp(),
            }),
        ))
    }
}

fn renew_error(error: RenewError) -> ApiError {
    let status = match &error {
        RenewError::InvalidCsr(_) => StatusCode::BAD_REQUEST,
        RenewError::DeviceRevoked { .. } | RenewError::UnknownCertificate { .. } => {
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.code(), error.to_string())
}
