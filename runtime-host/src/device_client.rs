//! A device's side of the device API: one mutual-TLS connection speaking HTTP/2 (or HTTP/1.1
//! when that is what ALPN agreed), used by `weir simulate` and by the integration tests.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// One answer of the device API.
#[derive(Debug, Clone)]
pub struct DeviceResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// The protocol the answer came over.
    pub version: Version,
}

impl DeviceResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `Retry-After` header in seconds, when present.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(hyper::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

enum Sender {
    Http2(http2::SendRequest<Full<Bytes>>),
    Http1(http1::SendRequest<Full<Bytes>>),
}

/// A connected device.
pub struct DeviceClient {
    sender: Sender,
    authority: String,
}

impl DeviceClient {
    /// Connects to `addr` (`host:port`), verifying the server as `server_name` with `tls` (which
    /// carries the device's certificate). Fails if the server refuses the handshake.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<DeviceClient> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(server_name.to_string())?;
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        // With TLS 1.3 the server may reject the client certificate only after the client
        // believes the handshake is done; a round trip surfaces that as an error here.
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let _ = tokio::io::AsyncWriteExt::flush(&mut stream).await;
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Sender::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Sender::Http1(sender)
        };
        Ok(DeviceClient {
            sender,
            authority: addr.to_string(),
        })
    }

    /// Whether the connection speaks HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(self.sender, Sender::Http2(_))
    }

    /// Sends a request; `body` is sent as is with the given extra headers.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<DeviceResponse> {
        let uri = format!("https://{}{path}", self.authority);
        let mut builder = Request::builder().method(method).uri(uri);
        if matches!(self.sender, Sender::Http1(_)) {
            builder = builder.header(hyper::header::HOST, self.authority.as_str());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::from(body)))?;
        let response = match &mut self.sender {
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(DeviceResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }

    /// Sends `value` as JSON with `method` to `path`.
    pub async fn send_json(
        &mut self,
        method: Method,
        path: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<DeviceResponse> {
        self.request(
            method,
            path,
            value.to_string().into_bytes(),
            &[(CONTENT_TYPE.as_str(), "application/json")],
        )
        .await
    }

    /// `POST /v1/submit` with a JSON batch.
    pub async fn submit(&mut self, batch: &serde_json::Value) -> anyhow::Result<DeviceResponse> {
        self.send_json(Method::POST, "/v1/submit", batch).await
    }
}
