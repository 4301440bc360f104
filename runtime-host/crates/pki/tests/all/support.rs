//! The test bench: a PKI directory with a CA and a server certificate, CRLs signed by that CA
//! (standing in for the ones the issuing service publishes from the PKI ledger), a mutual-TLS
//! server on 127.0.0.1:0 that accepts with the current [`ReloadingServerConfig`] and reports
//! what each handshake gave, and a client that tells whether the server let it in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, pki_types::ServerName};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weir_pki::{
    Ca, ClientAlpn, DeviceFiles, DeviceIdentity, DeviceTlsFiles, InstalledCrl,
    ReloadingServerConfig, identity_from_cert,
};

/// Bounds every network step, so a broken handshake fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(10);
/// What the server writes once a connection is accepted.
const GREETING: &[u8] = b"welcome\n";

/// A PKI directory with a CA ("Weir Test CA") and a server certificate for localhost and
/// 127.0.0.1.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        weir_pki::init_ca(dir.path(), "Weir Test CA").expect("init CA");
        weir_pki::issue_server(
            dir.path(),
            &[
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ],
            30,
        )
        .expect("issue server certificate");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.path().join("ca.pem")
    }

    pub fn ca(&self) -> Ca {
        Ca::load(self.path()).expect("load CA")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_pem_path()).expect("read ca.pem")
    }

    /// A client config for device `id` of `org`, enrolled through the directory.
    pub fn enrolled_client(&self, id: &str, org: &str) -> Arc<ClientConfig> {
        self.enrolled(id, org).1
    }

    /// Enrols device `id` of `org` through the directory: its files (and serial), and a client
    /// config presenting its certificate.
    pub fn enrolled(&self, id: &str, org: &str) -> (DeviceFiles, Arc<ClientConfig>) {
        let files = weir_pki::issue_device(self.path(), id, org, 7).expect("issue device");
        let client = weir_pki::device_client_config(
            &self.ca_pem_path(),
            &files.cert,
            &files.key,
            ClientAlpn::H2,
        )
        .expect("client config");
        (files, client)
    }

    /// CRL number `number`, signed now by this directory's CA, revoking `serials` (hex).
    pub fn publish_crl(&self, number: u64, serials: &[&str]) -> InstalledCrl {
        self.crl_signed_at(number, serials, weir_pki::ca::now())
    }

    /// CRL number `number` signed by this directory's CA as if at `at` (its thisUpdate; its
    /// nextUpdate is seven days later), revoking `serials` (hex) as of `at`.
    pub fn crl_signed_at(&self, number: u64, serials: &[&str], at: OffsetDateTime) -> InstalledCrl {
        crl_signed_by(&self.ca(), number, serials, at)
    }

    /// A client config with a certificate from `ca` valid between the given times.
    pub fn client_with_cert_from(
        &self,
        ca: &Ca,
        id: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Arc<ClientConfig> {
        let issued = ca
            .issue_device_cert(id, "acme", not_before, not_after)
            .expect("issue device certificate");
        weir_pki::device_client_config_from_pem(
            &self.ca_pem(),
            &issued.cert_pem,
            &issued.key_pem,
            ClientAlpn::H2,
        )
        .expect("client config")
    }

    /// Starts a device endpoint on this directory's files, enforcing an empty CRL #1.
    pub async fn serve(&self) -> Server {
        let config = ReloadingServerConfig::new(
            DeviceTlsFiles::in_pki_dir(self.path()),
            Some(self.publish_crl(1, &[])),
        )
        .expect("device server config");
        Server::start(Arc::new(config)).await
    }
}

/// CRL number `number` signed by `ca` at `at`, revoking `serials` (hex) as of `at`.
pub fn crl_signed_by(ca: &Ca, number: u64, serials: &[&str], at: OffsetDateTime) -> InstalledCrl {
    let signed =
        weir_pki::sign_crl(ca, number, serials.iter().map(|s| (*s, at)), at).expect("sign CRL");
    assert_eq!((signed.this_update, signed.next_update), (at, at + days(7)));
    InstalledCrl::from_pem(signed.pem.as_bytes(), &format!("test CRL #{number}"))
        .expect("parse CRL")
}

/// What the server saw of one accepted handshake.
#[derive(Debug)]
pub struct Accepted {
    pub identity: DeviceIdentity,
    pub alpn: Option<Vec<u8>>,
}

/// A device endpoint accepting connections until dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub config: Arc<ReloadingServerConfig>,
    results: mpsc::UnboundedReceiver<Result<Accepted, rustls::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(config: Arc<ReloadingServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, results) = mpsc::unbounded_channel();
        let accepting = config.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // Like the host: every new connection gets the config current at accept time.
                let acceptor = TlsAcceptor::from(accepting.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(STEP, acceptor.accept(tcp)).await {
                        Err(_) => Err(rustls::Error::General("handshake timed out".into())),
                        Ok(Err(e)) => Err(rustls_error(e)),
                        Ok(Ok(mut tls)) => {
                            let (_, conn) = tls.get_ref();
                            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                            let cert = conn
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .expect("verified client sent a certificate")
                                .clone();
                            let identity = identity_from_cert(&cert).expect("identity");
                            let _ = tls.write_all(GREETING).await;
                            let _ = tls.shutdown().await;
                            Ok(Accepted { identity, alpn })
                        }
                    };
                    let _ = tx.send(result);
                });
            }
        });
        Self {
            addr,
            config,
            results,
            task,
        }
    }

    /// The server's verdict on the next handshake.
    pub async fn next_result(&mut self) -> Result<Accepted, rustls::Error> {
        tokio::time::timeout(STEP, self.results.recv())
            .await
            .expect("server reported within the time limit")
            .expect("server task alive")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the client saw.
#[derive(Debug)]
pub enum Outcome {
    /// Handshake done and the server's greeting received.
    Admitted { alpn: Option<Vec<u8>> },
    /// The handshake failed, or the server closed the connection without a greeting (with
    /// TLS 1.3 the client finishes before the server has checked its certificate).
    Refused(String),
}

impl Outcome {
    pub fn is_admitted(&self) -> bool {
        matches!(self, Self::Admitted { .. })
    }
}

/// Connects to `addr` as `server_name` with `config` and reports whether it was let in.
pub async fn connect(addr: SocketAddr, server_name: &str, config: Arc<ClientConfig>) -> Outcome {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connecting = TlsConnector::from(config).connect(name, tcp);
    let mut tls = match tokio::time::timeout(STEP, connecting).await {
        Err(_) => return Outcome::Refused("handshake timed out".into()),
        Ok(Err(e)) => return Outcome::Refused(e.to_string()),
        Ok(Ok(tls)) => tls,
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut received = Vec::new();
    match tokio::time::timeout(STEP, tls.read_to_end(&mut received)).await {
        Err(_) => Outcome::Refused("no greeting in time".into()),
        Ok(Err(e)) => Outcome::Refused(e.to_string()),
        Ok(Ok(_)) if received == GREETING => Outcome::Admitted { alpn },
        Ok(Ok(_)) => Outcome::Refused(format!("closed after {received:?}")),
    }
}

/// Connects as a device and returns both sides' views.
pub async fn handshake(
    server: &mut Server,
    config: Arc<ClientConfig>,
) -> (Outcome, Result<Accepted, rustls::Error>) {
    let outcome = connect(server.addr, "localhost", config).await;
    let result = server.next_result().await;
    (outcome, result)
}

/// The rustls error inside tokio-rustls' io::Error.
fn rustls_error(e: std::io::Error) -> rustls::Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(inner) => inner.clone(),
        None => rustls::Error::General(e.to_string()),
    }
}

pub fn now() -> OffsetDateTime {
    weir_pki::ca::now()
}

pub fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}
