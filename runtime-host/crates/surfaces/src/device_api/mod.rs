//! The device surface (its own listener, mutual TLS always): `POST /v1/submit`,
//! `PUT`/`GET /v1/metadata`, `POST /v1/renew`. The caller's identity is the certificate's
//! CN (device) and O (org), fixed by the connection; no request body can claim another.
//! Each connection is a [`DeviceConnection`]: its device's place in the per-device caps
//! ([`shares`]), then the per-device rate limit, then the route.

mod renew;
pub mod shares;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use weir_metrics::Metrics;
use weir_pki::DeviceIdentity;
use weir_storage::DeviceRef;

use crate::http::body::read_body;
use crate::http::{ApiError, Response, json_response};
pub use renew::Renewal;
use shares::{ConnectionShare, DeviceShares};
use weir_pipeline::ingest::Ingest;
use weir_pipeline::ingest::metadata::parse_metadata;
use weir_pipeline::ingest::rate_limit::RateLimiter;

/// The device API's shared state.
pub struct DeviceApi {
    /// The ingest pipeline.
    pub ingest: Arc<Ingest>,
    /// Per-device request rates.
    pub limiter: RateLimiter,
    /// Per-device connections and requests in progress.
    pub shares: Arc<DeviceShares>,
    /// Certificate renewal, through the PKI ledger.
    pub renewal: Renewal,
    /// Largest accepted body in bytes.
    pub max_body_bytes: usize,
    /// How long a body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Where refusals by the limits are counted.
    pub metrics: Arc<Metrics>,
}

/// One authenticated device connection: its identity and its place in the device's count.
pub struct DeviceConnection {
    api: Arc<DeviceApi>,
    identity: DeviceIdentity,
    share: ConnectionShare,
    close: CancellationToken,
}

impl DeviceConnection {
    /// Cancelled when this connection should be closed (after its last answer).
    pub fn closer(&self) -> CancellationToken {
        self.close.clone()
    }

    /// Answers one request on this connection.
    /// A connection over its device's cap is closed once its refusal is sent, so that a
    /// flood of connections costs the sender a TLS handshake per request.
    pub async fn handle(self: Arc<Self>, request: hyper::Request<Incoming>) -> Response {
        let device = self.share.device();
        let answer = match self.share.admit() {
            Ok(_request_share) => self.api.route(&self.identity, device, request).await,
            Err(refused) => {
                if refused.code == shares::TOO_MANY_CONNECTIONS {
                    self.close.cancel();
                }
                Err(refused)
            }
        };
        match answer {
            Ok(response) => response,
            Err(error) => {
                if error.status.is_server_error() {
                    tracing::warn!(%device, code = error.code, message = %error.message, "device request failed");
                }
                error.into_response()
            }
        }
    }
}

impl DeviceApi {
    /// A newly authenticated connection of `identity`, counted against its device until
    /// dropped.
    pub fn connect(self: &Arc<Self>, identity: DeviceIdentity) -> DeviceConnection {
        let device = DeviceRef::new(identity.org.clone(), identity.device.clone());
        DeviceConnection {
            api: self.clone(),
            share: self.shares.connect(device),
            identity,
            close: CancellationToken::new(),
        }
    }

    async fn route(
        &self,
        identity: &DeviceIdentity,
        device: &DeviceRef,
        request: hyper::Request<Incoming>,
    ) -> Result<Response, ApiError> {
        if let Err(wait) = self.limiter.check(device) {
            self.metrics.limit_hit("devices", "device_rate");
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("{device} is over its request rate; retry in {seconds} s"),
            )
            .retry_after(seconds));
        }
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        match (method.clone(), path.as_str()) {
            (Method::POST, "/v1/submit") => {
                let body = self.body(request).await?;
                let receipt = self.ingest.submit(device, &body).await?;
                Ok(json_response(StatusCode::OK, &receipt))
            }
            (Method::PUT, "/v1/metadata") => {
                let body = self.body(request).await?;
                self.put_metadata(device, &body).await
            }
            (Method::GET, "/v1/metadata") => self.get_metadata(device).await,
            (Method::POST, "/v1/renew") => {
                let body = self.body(request).await?;
                self.renewal.renew(identity, &body).await
            }
            (_, "/v1/submit" | "/v1/metadata" | "/v1/renew") => {
                Err(ApiError::method_not_allowed(&method, &path))
            }
            _ => Err(ApiError::not_found(&path)),
        }
    }

    /// The request's body within the size and time limits (a timeout is counted).
    async fn body(&self, request: hyper::Request<Incoming>) -> Result<bytes::Bytes, ApiError> {
        let body = read_body(request, self.max_body_bytes, self.body_timeout).await;
        if let Err(error) = &body
            && error.code == "body_timeout"
        {
            self.metrics.limit_hit("devices", "body_timeout");
        }
        body
    }

    async fn put_metadata(&self, device: &DeviceRef, body: &[u8]) -> Result<Response, ApiError> {
        let parsed = parse_metadata(body)?;
        self.ingest.put_metadata(device, &parsed.records).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"stored": parsed.records.len(), "rejected": parsed.rejected}),
        ))
    }

    async fn get_metadata(&self, device: &DeviceRef) -> Result<Response, ApiError> {
        let records = self.ingest.device_metadata(device).await?;
        let body: Vec<_> = records
            .iter()
            .map(|r| {
                let mut entry = json!({"key": r.key, "type": r.data_type});
                let fields = [
                    ("name", r.name.as_ref().map(|v| json!(v))),
                    ("unit", r.unit.as_ref().map(|v| json!(v))),
                    ("description", r.description.as_ref().map(|v| json!(v))),
                    ("min", r.min.map(|v| json!(v))),
                    ("max", r.max.map(|v| json!(v))),
                ];
                for (name, value) in fields {
                    if let Some(value) = value {
                        entry[name] = value;
                    }
                }
                if !r.value_map.is_empty() {
                    let map: serde_json::Map<_, _> = r
                        .value_map
                        .iter()
                        .map(|(code, label)| (code.to_string(), json!(label)))
                        .collect();
                    entry["value_map"] = serde_json::Value::Object(map);
                }
                entry
            })
            .collect();
        Ok(json_response(StatusCode::OK, &json!(body)))
    }
}
