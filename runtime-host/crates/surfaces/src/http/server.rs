//! Accept loops: plain TCP (the API listener, HTTP/1.1 and h2c), server-authenticated TLS (the
//! API listener with a certificate) and mutual TLS (the device listener, where the peer's
//! certificate becomes the request's identity before any byte of HTTP is read). Each
//! connection runs on its own task; a failed connection ends alone. A device connection is cut
//! when its certificate expires, or when a reloaded CRL revokes it (a revocation, or a
//! superseded certificate past its grace): it does not outlive the certificate it proved.
//!
//! When `shutdown` is cancelled a listener stops accepting and drains its connections: idle
//! HTTP/1.1 keep-alive connections are closed, HTTP/2 connections get a GOAWAY, and requests in
//! flight finish (a batch being stored is answered) for up to [`DRAIN_TIMEOUT`]; then the
//! accept loop returns, so that `Host::shutdown` ends once the connections did.

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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weir_pki::{DeviceIdentity, ReloadingServerConfig, identity_from_cert};

use super::Response;
use weir_metrics::Metrics;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping listener waits for its connections' requests in flight. Under
/// Kubernetes' default 30 s termination grace period.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 and HTTP/2 on `io` with `handle` until the connection closes, or closes it
/// gracefully once `watcher`'s listener drains. The body `B` may be a stream
/// ([`super::body::ResponseBody`]): hyper writes each frame as it comes.
async fn serve_connection<I, H, F, B>(io: I, handle: H, watcher: Watcher)
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
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Closes the connections `graceful` watches, waiting at most [`DRAIN_TIMEOUT`] for their
/// requests in flight.
async fn drain(graceful: GracefulShutdown, listener: &'static str) {
    let open = graceful.count();
    if open == 0 {
        return;
    }
    tracing::info!(listener, open, "draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener,
            timeout_s = DRAIN_TIMEOUT.as_secs(),
            "connections still busy after the drain timeout; dropping them"
        );
    }
}

/// Accepts plain connections until `shutdown` is cancelled, then drains them.
pub async fn serve_plain<H, F, B>(listener: TcpListener, handle: H, shutdown: CancellationToken)
where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    while let Some((stream, _)) = next_connection(&listener, &shutdown).await {
        tokio::spawn(serve_connection(stream, handle.clone(), graceful.watcher()));
    }
    drain(graceful, "api").await;
}

/// Accepts TLS connections (no client certificate) until `shutdown` is cancelled, then drains
/// them: the API listener when it has a certificate.
pub async fn serve_https<H, F, B>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handle: H,
    shutdown: CancellationToken,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = next_connection(&listener, &shutdown).await {
        let (acceptor, handle, watcher) = (acceptor.clone(), handle.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, handle, watcher).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
    drain(graceful, "api").await;
}

/// Accepts mutual-TLS connections until `shutdown` is cancelled, then drains them. Only a
/// certificate from the configured CA, valid and not revoked, gets past the handshake; its CN
/// and O become the [`DeviceIdentity`] handed to `handle` with every request on that
/// connection. `crl_reloads` changes whenever `tls` took a new CRL: every open connection then
/// checks its certificate against it.
pub async fn serve_devices<H, F>(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    crl_reloads: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    handle: H,
    shutdown: CancellationToken,
) where
    H: Fn(DeviceIdentity, hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = next_connection(&listener, &shutdown).await {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (handle, metrics, watcher) = (handle.clone(), metrics.clone(), graceful.watcher());
        let (tls, crl_reloads) = (tls.clone(), crl_reloads.clone());
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
            let retired = certificate_retired(&identity, &tls, crl_reloads);
            let served = serve_connection(
                stream,
                {
                    let identity = identity.clone();
                    move |request| handle(identity.clone(), request)
                },
                watcher,
            );
            // Pinned here so that a cut connection closes only after it was counted.
            tokio::pin!(served);
            tokio::select! {
                () = &mut served => {}
                reason = retired => {
                    metrics.device_connection_cut(reason);
                    tracing::info!(%peer, device = %identity.device, org = %identity.org, serial = %identity.serial_hex, reason, "device connection cut");
                }
            }
        });
    }
    drain(graceful, "devices").await;
}

/// Completes when the connection's certificate may no longer be used: `"expired"` at its
/// notAfter, `"revoked"` once a reloaded CRL lists it. Never completes otherwise.
async fn certificate_retired(
    identity: &DeviceIdentity,
    tls: &ReloadingServerConfig,
    mut crl_reloads: watch::Receiver<u64>,
) -> &'static str {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let left = u64::try_from(identity.not_after)
        .unwrap_or(0)
        .saturating_sub(now);
    let expiry = tokio::time::sleep(Duration::from_secs(left));
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            () = &mut expiry => return "expired",
            changed = crl_reloads.changed() => {
                if changed.is_err() {
                    // No more reloads (the host is stopping): only expiry is left.
                    (&mut expiry).await;
                    return "expired";
                }
                if tls.is_revoked(&identity.serial_hex) {
                    return "revoked";
                }
            }
        }
    }
}

/// The next accepted connection (with Nagle off), or `None` once `shutdown` is cancelled.
async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
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
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Accept errors (e.g. out of file descriptors) are transient: log, pause, go on.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
