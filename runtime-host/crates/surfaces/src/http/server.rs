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
use hyper_util::rt::TokioTimer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_pki::{DeviceIdentity, ReloadingServerConfig, identity_from_cert};

use super::Response;
use weir_metrics::Metrics;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest TLS record a ClientHello may come in (RFC 8446: 2^14 bytes plus the header).
const MAX_HELLO_RECORD: usize = 5 + (1 << 14);
/// How long a stopping listener waits for its connections' requests in flight. Under
/// Kubernetes' default 30 s termination grace period.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's timeouts and caps (the `server.*` settings; see `weir_config::ServerConfig`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The listener's name in metrics and logs (`devices`, `api`).
    pub listener: &'static str,
    /// Time to send a request's headers, and the longest idle time between HTTP/1.1 requests.
    pub header_read_timeout: Duration,
    /// Interval of HTTP/2 PINGs to a quiet peer (and how long it has to answer).
    pub keepalive_interval: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// Open connections.
    pub max_connections: usize,
    /// TLS handshakes in progress.
    pub max_handshakes: usize,
    /// How long a connection may live (device connections), if bounded.
    pub max_connection_age: Option<Duration>,
}

impl Limits {
    /// The device listener's limits from the configuration.
    pub fn devices(config: &weir_config::ServerConfig) -> Self {
        Limits {
            listener: "devices",
            max_streams: config.device_max_streams,
            max_connection_age: Some(Duration::from_secs(config.device_connection_max_age_s)),
            ..Self::api(config)
        }
    }

    /// The API listener's limits from the configuration.
    pub fn api(config: &weir_config::ServerConfig) -> Self {
        Limits {
            listener: "api",
            header_read_timeout: Duration::from_secs(config.header_read_timeout_s),
            keepalive_interval: Duration::from_secs(config.keepalive_interval_s),
            max_streams: API_MAX_STREAMS,
            max_connections: config.max_connections,
            max_handshakes: config.max_handshakes,
            max_connection_age: None,
        }
    }
}

/// Concurrent HTTP/2 streams per API connection (hyper's default is 200).
const API_MAX_STREAMS: u32 = 100;

/// A listener's connection and handshake caps, counted in `metrics` when they bite.
#[derive(Clone)]
struct Gate {
    listener: &'static str,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Gate {
    fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Gate {
            listener: limits.listener,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            metrics,
        }
    }

    /// A place for one more connection, or `None` (counted) when the listener is full.
    fn admit(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        self.permit(&self.connections, "max_connections", peer)
    }

    /// A place for one more TLS handshake, or `None` (counted) when too many are under way.
    fn handshake(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        self.permit(&self.handshakes, "max_handshakes", peer)
    }

    fn permit(
        &self,
        semaphore: &Arc<Semaphore>,
        reason: &'static str,
        peer: SocketAddr,
    ) -> Option<OwnedSemaphorePermit> {
        let permit = semaphore.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics.limit_hit(self.listener, reason);
            tracing::debug!(listener = self.listener, %peer, reason, "connection refused by a limit");
        }
        permit
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Told by the first bytes (plain connections: HTTP/1.1 or h2c).
    Detect,
    /// HTTP/1.1 (TLS without ALPN `h2`).
    Http1,
    /// HTTP/2 (TLS with ALPN `h2`).
    Http2,
}

impl Protocol {
    /// What a TLS connection negotiated.
    fn of_tls<I>(stream: &tokio_rustls::server::TlsStream<I>) -> Self {
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }
}

/// The HTTP/2 connection preface; a plain connection starting otherwise is HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, without consuming anything, until a plain connection has sent enough to tell its
/// protocol; false if it closes or stays silent (or sends only part of the HTTP/2 preface) for
/// `timeout`. Telling the protocol reads before hyper's header timeout starts, so a client that
/// says nothing is dropped here.
async fn protocol_told(stream: &TcpStream, timeout: Duration) -> bool {
    let told = async {
        let mut start = [0u8; 24];
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            match stream.peek(&mut start).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == start.len() || start[..n] != H2_PREFACE[..n] => return true,
                // Part of the preface: wait for the rest.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(timeout, told).await.unwrap_or(false)
}

/// Waits, without consuming anything, until a TLS client has sent its whole first record (the
/// ClientHello); false if it closes or takes longer than `timeout`. A handshake place is taken
/// only after it, so silent or trickling sockets hold a connection place at most, never one of
/// the few handshake places that new devices need. Bytes that are not a TLS handshake record
/// pass at once: the handshake refuses them.
async fn hello_arrived(stream: &TcpStream, timeout: Duration) -> bool {
    let arrived = async {
        let mut header = [0u8; 5];
        let mut record = Vec::new();
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            let buffer = if record.is_empty() {
                &mut header[..]
            } else {
                &mut record[..]
            };
            let n = match stream.peek(buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if record.is_empty() {
                // A handshake record (22) of TLS 1.x, then its length.
                if header[0] != 22 || (n >= 2 && header[1] != 3) {
                    return true;
                }
                if n == header.len() {
                    let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
                    record = vec![0; (header.len() + length).min(MAX_HELLO_RECORD)];
                    continue;
                }
            } else if n == record.len() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(timeout, arrived)
        .await
        .unwrap_or(false)
}

/// The open connections of one listener, and the signal that closes them gracefully.
#[derive(Clone, Default)]
struct Connections {
    draining: CancellationToken,
    tracker: TaskTracker,
}

impl Connections {
    /// Runs one connection's task, counted until it ends.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Closes every connection gracefully, waiting at most [`DRAIN_TIMEOUT`] for their
    /// requests in flight.
    async fn drain(self, listener: &'static str) {
        self.tracker.close();
        let open = self.tracker.len();
        if open == 0 {
            return;
        }
        tracing::info!(listener, open, "draining connections");
        self.draining.cancel();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
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
}

/// Serves HTTP/1.1 and HTTP/2 on `io` with `handle` until the connection closes, or closes it
/// gracefully once its listener drains or `close` is cancelled: idle HTTP/1.1 connections
/// close, HTTP/2 peers get a GOAWAY (no new streams), and requests in flight are answered. The
/// body `B` may be a stream ([`super::body::ResponseBody`]): hyper writes each frame as it
/// comes. Headers must arrive within the header timeout (which also closes an HTTP/1.1
/// connection idle that long), and an HTTP/2 peer that stops answering PINGs is dropped.
async fn serve_connection<I, H, F, B>(
    io: I,
    protocol: Protocol,
    handle: H,
    draining: &CancellationToken,
    close: &CancellationToken,
    limits: &Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let service = service_fn(move |request| {
        let handle = handle.clone();
        async move { Ok::<_, Infallible>(handle(request).await) }
    });
    let mut builder = match protocol {
        Protocol::Detect => auto::Builder::new(TokioExecutor::new()),
        Protocol::Http1 => auto::Builder::new(TokioExecutor::new()).http1_only(),
        Protocol::Http2 => auto::Builder::new(TokioExecutor::new()).http2_only(),
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_interval)
        .max_concurrent_streams(limits.max_streams);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = close.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepts plain connections until `shutdown` is cancelled, then drains them.
pub async fn serve_plain<H, F, B>(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    handle: H,
    shutdown: CancellationToken,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let gate = Gate::new(&limits, metrics);
    let limits = Arc::new(limits);
    let connections = Connections::default();
    while let Some((stream, peer)) = next_connection(&listener, &shutdown).await {
        let Some(permit) = gate.admit(peer) else {
            continue;
        };
        let (handle, draining, limits) =
            (handle.clone(), connections.draining.clone(), limits.clone());
        let metrics = gate.metrics.clone();
        connections.spawn(async move {
            let _permit = permit;
            // A listener that drains drops connections that have not spoken yet.
            let told = protocol_told(&stream, limits.header_read_timeout);
            match draining.run_until_cancelled(told).await {
                Some(true) => {}
                Some(false) => return metrics.limit_hit(limits.listener, "header_timeout"),
                None => return,
            }
            let never = CancellationToken::new();
            serve_connection(stream, Protocol::Detect, handle, &draining, &never, &limits).await;
        });
    }
    connections.drain("api").await;
}

/// Accepts TLS connections (no client certificate) until `shutdown` is cancelled, then drains
/// them: the API listener when it has a certificate.
pub async fn serve_https<H, F, B>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    metrics: Arc<Metrics>,
    handle: H,
    shutdown: CancellationToken,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let gate = Gate::new(&limits, metrics);
    let limits = Arc::new(limits);
    let connections = Connections::default();
    while let Some((stream, peer)) = next_connection(&listener, &shutdown).await {
        let Some(permit) = gate.admit(peer) else {
            continue;
        };
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        let (gate, limits, draining) = (gate.clone(), limits.clone(), connections.draining.clone());
        connections.spawn(async move {
            let _permit = permit;
            let Some(handshake) = gate.handshake(peer) else {
                return;
            };
            let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(handshake);
            match accepted {
                Ok(Ok(stream)) => {
                    let protocol = Protocol::of_tls(&stream);
                    let never = CancellationToken::new();
                    serve_connection(stream, protocol, handle, &draining, &never, &limits).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
    connections.drain("api").await;
}

/// Accepts mutual-TLS connections until `shutdown` is cancelled, then drains them. Only a
/// certificate from the configured CA, valid and not revoked, gets past the handshake; its CN
/// and O become the [`DeviceIdentity`] handed to `connect`, whose answer (the connection's
/// handler) answers every request on that connection and is dropped when it closes. `crl_reloads` changes whenever `tls` took a new CRL: every open connection then
/// checks its certificate against it.
#[allow(clippy::too_many_arguments)]
pub async fn serve_devices<C, H, F>(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    crl_reloads: watch::Receiver<u64>,
    limits: Limits,
    metrics: Arc<Metrics>,
    connect: C,
    shutdown: CancellationToken,
) where
    C: Fn(DeviceIdentity) -> (H, CancellationToken) + Send + Sync + Clone + 'static,
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let gate = Gate::new(&limits, metrics.clone());
    let limits = Arc::new(limits);
    let connections = Connections::default();
    while let Some((stream, peer)) = next_connection(&listener, &shutdown).await {
        let Some(permit) = gate.admit(peer) else {
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (connect, metrics) = (connect.clone(), metrics.clone());
        let draining = connections.draining.clone();
        let (tls, crl_reloads) = (tls.clone(), crl_reloads.clone());
        let (gate, limits) = (gate.clone(), limits.clone());
        connections.spawn(async move {
            let _permit = permit;
            // A listener that drains drops connections that have not spoken yet.
            let hello = hello_arrived(&stream, limits.header_read_timeout);
            match draining.run_until_cancelled(hello).await {
                Some(true) => {}
                Some(false) => return metrics.limit_hit(limits.listener, "header_timeout"),
                None => return,
            }
            let Some(handshake) = gate.handshake(peer) else {
                return;
            };
            let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(handshake);
            let stream = match accepted {
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
            let retired =
                certificate_retired(&identity, &tls, crl_reloads, limits.max_connection_age);
            let protocol = Protocol::of_tls(&stream);
            let (handler, close) = connect(identity.clone());
            let served = serve_connection(stream, protocol, handler, &draining, &close, &limits);
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
    connections.drain("devices").await;
}

/// Completes when the connection's certificate may no longer be used: `"expired"` at its
/// notAfter, `"revoked"` once a reloaded CRL lists it; or `"max_age"` once the connection is
/// `max_age` old, so that the device proves its certificate again. Never completes otherwise.
async fn certificate_retired(
    identity: &DeviceIdentity,
    tls: &ReloadingServerConfig,
    mut crl_reloads: watch::Receiver<u64>,
    max_age: Option<Duration>,
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
    let old = async {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(old);
    loop {
        tokio::select! {
            () = &mut expiry => return "expired",
            () = &mut old => return "max_age",
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
