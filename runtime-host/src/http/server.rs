//! Accept loops: plain TCP (the API listener, HTTP/1.1 and h2c), server-authenticated TLS (the
//! API listener with a certificate) and mutual TLS (the device listener, where the peer's
//! certificate becomes the request's identity before any byte of HTTP is read). Each
//! connection runs on its own task; a failed connection ends alone.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weir_pki::{DeviceIdentity, ReloadingServerConfig, identity_from_cert};

use super::Response;
use crate::metrics::Metrics;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 and HTTP/2 on `io` with `handle` until the connection closes. The body `B`
/// may be a stream ([`super::body::ResponseBody`]): hyper writes each frame as it comes.
async fn serve_connection<I, H, F, B>(io: I, handle: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let service = service_fn(move |request| {
        let handle = handle.clone();
        async move { Ok::<_, Infallible>(handle(request).await) }
    });
    if let Err(error) = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepts plain connections until `shutdown` turns true.
pub async fn serve_plain<H, F, B>(
    listener: TcpListener,
    handle: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    while let Some((stream, _)) = next_connection(&listener, &mut shutdown).await {
        tokio::spawn(serve_connection(stream, handle.clone()));
    }
}

/// Accepts TLS connections (no client certificate) until `shutdown` turns true: the API
/// listener when it has a certificate.
pub async fn serve_https<H, F, B>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handle: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Some((stream, peer)) = next_connection(&listener, &mut shutdown).await {
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, handle).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
}

/// Accepts mutual-TLS connections until `shutdown` turns true. Only a certificate from the
/// configured CA, valid and not revoked, gets past the handshake; its CN and O become the
/// [`DeviceIdentity`] handed to `handle` with every request on that connection.
pub async fn serve_devices<H, F>(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    metrics: Arc<Metrics>,
    handle: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(DeviceIdentity, hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    while let Some((stream, peer)) = next_connection(&listener, &mut shutdown).await {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (handle, metrics) = (handle.clone(), metrics.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        metrics.handshakes_refused.inc();
                        tracing::info!(%peer, %error, "device TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        metrics.handshakes_refused.inc();
                        tracing::info!(%peer, "device TLS handshake timed out");
                        return;
                    }
                };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first());
            let identity = match certificate.map(|der| identity_from_cert(der)) {
                Some(Ok(identity)) => identity,
                Some(Err(error)) => {
                    tracing::warn!(%peer, %error, "device certificate has no usable identity");
                    return;
                }
                None => return,
            };
            tracing::debug!(%peer, device = %identity.device, org = %identity.org, "device connected");
            serve_connection(stream, move |request| handle(identity.clone(), request)).await;
        });
    }
}

/// The next accepted connection (with Nagle off), or `None` once `shutdown` turns true.
async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(error) => accept_failed(error).await,
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// Accept errors (e.g. out of file descriptors) are transient: log, pause, go on.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
