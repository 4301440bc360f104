//! A whole Weir stack on this machine for tests and benchmarks: throw-away PostgreSQL and
//! Redis, a PKI directory of its own with its issuing service, the real validator component,
//! and a host with its device and API listeners on free ports. The host's PKI directory holds
//! what an edge host holds: the CA certificate and its server key pair, no CA key. Dropping it
//! stops the host before the servers it uses.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use weir::Config;
use weir::ca::{RunningSigner, Signer};
use weir::endpoints::{Endpoint, SelectionPolicy};
use weir::host::Host;
use weir::simulate::{SimulationConfig, SimulationReport, run};

use weir_storage::Storage;

use crate::{PostgresServer, RedisServer, functions_dir};

/// The name the device listener's certificate is issued for.
pub const SERVER_NAME: &str = "localhost";

/// A running host with its own servers and PKI.
pub struct Stack {
    // Fields drop in order: the host stops before the servers it uses.
    /// The host.
    pub host: Host,
    /// The issuing service (`weir ca serve`, in this process).
    pub signer: RunningSigner,
    /// Its PostgreSQL.
    pub postgres: PostgresServer,
    /// Its Redis.
    pub redis: RedisServer,
    /// The CA directory, key included: where devices are enrolled.
    pub pki_dir: PathBuf,
    /// The host's `tls.pki_dir`: `ca.pem`, `server.pem`, `server-key.pem`.
    pub edge_tls_dir: PathBuf,
    /// The directory holding the PKI and the host's state.
    pub dir: TempDir,
    /// The configuration the host was started with.
    pub config: Config,
}

impl Stack {
    /// Starts servers, a PKI and a host whose configuration `tweak` adjusts.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Stack> {
        let postgres = tokio::task::spawn_blocking(PostgresServer::start_temporary);
        let redis = tokio::task::spawn_blocking(RedisServer::start_temporary);
        let postgres = postgres.await??;
        let redis = redis.await??;

        let dir = tempfile::Builder::new().prefix("weir-stack-").tempdir()?;
        let pki_dir = dir.path().join("pki");
        weir_pki::init_ca(&pki_dir, "Weir Test CA")?;
        weir_pki::issue_server(&pki_dir, &[SERVER_NAME.into(), "127.0.0.1".into()], 30)?;
        let edge_tls_dir = dir.path().join("edge-tls");
        std::fs::create_dir_all(&edge_tls_dir)?;
        for file in ["ca.pem", "server.pem", "server-key.pem"] {
            std::fs::copy(pki_dir.join(file), edge_tls_dir.join(file))?;
        }

        let mut config = Config {
            region: "test".into(),
            functions_dir: functions_dir(),
            state_dir: dir.path().join("state"),
            database_url: postgres.url(),
            redis_url: redis.url(),
            device_listen: "127.0.0.1:0".into(),
            api_listen: "127.0.0.1:0".into(),
            ..Config::default()
        };
        config.tls.pki_dir = Some(edge_tls_dir.clone());
        tweak(&mut config);
        let signer = start_signer(&config, &pki_dir).await?;
        let host = Host::start(config.clone()).await?;
        Ok(Stack {
            host,
            signer,
            edge_tls_dir,
            postgres,
            redis,
            pki_dir,
            dir,
            config,
        })
    }

    /// Runs the simulator against this stack's host as fast as it goes: `devices` devices of
    /// organisation `bench`, each uploading `points_per_device` points in batches of
    /// `batch_points`.
    pub async fn simulate(
        &self,
        devices: usize,
        points_per_device: u64,
        batch_points: usize,
    ) -> anyhow::Result<SimulationReport> {
        run(SimulationConfig {
            endpoints: vec![Endpoint::parse(&self.host.device_addr().to_string())],
            selection: SelectionPolicy::default(),
            request_timeout: Duration::from_secs(30),
            server_name: SERVER_NAME.into(),
            pki_dir: self.pki_dir.clone(),
            devices,
            org: "bench".into(),
            device_prefix: "bench".into(),
            rate: None,
            batch_points,
            duration: None,
            points_per_device: Some(points_per_device),
            drain_timeout: Duration::from_secs(600),
            progress: false,
        })
        .await
    }

    /// The PKI ledger (this stack's PostgreSQL), for enrolling and revoking devices.
    pub async fn ledger(&self) -> anyhow::Result<Storage> {
        ledger(&self.config).await
    }

    /// Another host of the same region: same PostgreSQL, Redis and PKI, its own listeners.
    pub async fn another_host(&self) -> anyhow::Result<Host> {
        Host::start(self.config.clone()).await
    }
}

/// The PKI ledger of `config`'s database, migrated.
async fn ledger(config: &Config) -> anyhow::Result<Storage> {
    let storage = Storage::connect(&config.database_url, 4, Duration::from_secs(10)).await?;
    storage.migrate().await?;
    Ok(storage)
}

/// The issuing service for the CA in `pki_dir`, with `config`'s renewal policy; it publishes
/// the first CRL before it returns.
async fn start_signer(config: &Config, pki_dir: &std::path::Path) -> anyhow::Result<RunningSigner> {
    Signer::new(
        ledger(config).await?,
        weir_pki::Ca::load(pki_dir)?,
        config.tls.renew_days,
        Duration::from_secs(config.tls.renew_min_interval_s),
        Duration::from_secs(config.tls.crl_refresh_minutes * 60),
    )?
    .spawn(config.database_url.clone())
    .await
}
