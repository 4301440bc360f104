//! [`Storage`], the handle to PostgreSQL (tier one): its connection pool, readiness and
//! migrations. The operations live next to their subject (`batches`, `metadata`, `partitions`,
//! `reads`, `maintenance`, `tokens`) as further `impl Storage` blocks.
//!
//! The pool is bounded, and so is the wait for a free connection: when every connection stays
//! busy for `wait_timeout`, a call fails with [`StorageError::Unavailable`] instead of queueing
//! for ever, so overload pushes back on devices (they keep their points and retry) rather than
//! piling up requests in memory.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::{Result, StorageError};
use crate::model::KeyLimits;
use crate::partitions::KnownPartitions;
use crate::schema;
use crate::series::SeriesIds;
use crate::timestamp::{Month, now_ms};

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long checking a pooled connection before reuse may take.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle TCP time before keepalive probes, so a vanished server is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// The statement timeout of [`Storage::connect`]'s pools (the host sets its own,
/// `ingest.statement_timeout_ms`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL storage: a connection pool plus the in-memory knowledge that keeps DDL and
/// series look-ups off the hot path. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Storage {
    pub(crate) inner: Arc<Inner>,
    /// The region this host serves, once set with [`Storage::in_region`]: batches then record
    /// where each device writes, and announce a device's move between regions.
    pub(crate) region: Option<Arc<str>>,
    /// How many keys a device and an organisation may have ([`Storage::with_key_limits`]).
    pub(crate) key_limits: KeyLimits,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) partitions: KnownPartitions,
    pub(crate) series: SeriesIds,
}

/// A snapshot of the connection pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// Connections open now (idle or in use).
    pub size: usize,
    /// Idle connections ready for use.
    pub available: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl Storage {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) with a pool of at most
    /// `pool_size` connections; a call that finds no free connection within `wait_timeout` fails
    /// with [`StorageError::Unavailable`].
    ///
    /// One connection is opened now, so an unreachable server fails here (as `Unavailable`).
    /// Connections are plain TCP (no TLS): tier one is reached over a trusted network. Every
    /// statement is cancelled after [`DEFAULT_STATEMENT_TIMEOUT`].
    pub async fn connect(url: &str, pool_size: usize, wait_timeout: Duration) -> Result<Storage> {
        Self::connect_with_timeout(url, pool_size, wait_timeout, DEFAULT_STATEMENT_TIMEOUT).await
    }

    /// [`Storage::connect`] with every statement cancelled after `statement_timeout` (then it
    /// fails as `Unavailable`: a stalled database costs a request its slot for that long at
    /// most). Migrations lift it for their own transactions.
    pub async fn connect_with_timeout(
        url: &str,
        pool_size: usize,
        wait_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Storage> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|err| StorageError::Config(format!("invalid PostgreSQL URL: {err}")))?;
        let timeout = format!(
            "-c statement_timeout={}",
            statement_timeout.as_millis().max(1)
        );
        let options = match config.get_options() {
            Some(options) => format!("{options} {timeout}"),
            None => timeout,
        };
        config.options(&options);
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("weir");
        }
        // Fast recycling drops connections whose socket has closed (a server restart closes
        // them) without a round trip per checkout; the rare connection that dies between the
        // check and its use fails that one batch with `Unavailable`, and the device resends it.
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(wait_timeout))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|err| {
                StorageError::Config(format!("cannot build the PostgreSQL pool: {err}"))
            })?;
        let storage = Storage {
            inner: Arc::new(Inner {
                pool,
                partitions: KnownPartitions::default(),
                series: SeriesIds::default(),
            }),
            region: None,
            key_limits: KeyLimits::default(),
        };
        drop(storage.client().await?);
        Ok(storage)
    }

    /// This storage, recording that batches arrive through `region` (see
    /// [`BatchWrite::Stored::moved_from`](crate::BatchWrite::Stored)).
    pub fn in_region(mut self, region: &str) -> Storage {
        self.region = Some(Arc::from(region));
        self
    }

    /// This storage, refusing the new keys of a batch beyond `limits`.
    pub fn with_key_limits(mut self, limits: KeyLimits) -> Storage {
        self.key_limits = limits;
        self
    }

    /// A pooled connection, or `Unavailable` when none is free in time or the server is down.
    pub(crate) async fn client(&self) -> Result<Client> {
        Ok(self.inner.pool.get().await?)
    }

    /// The connection pool itself (a cheap clone), for callers outside this crate that run
    /// their own statements under the same bounds: the host's Postgres capability for query
    /// functions. Such a caller must not return a connection in an unknown state to the pool.
    pub fn pool(&self) -> Pool {
        self.inner.pool.clone()
    }

    /// The pool's current size and use.
    pub fn pool_status(&self) -> PoolStatus {
        let status = self.inner.pool.status();
        PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        }
    }

    /// Checks that the database answers a query (readiness).
    pub async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT 1").await?;
        client.query_one(&statement, &[]).await?;
        Ok(())
    }

    /// Brings the schema up to date, then creates the `points` partitions from last month to
    /// three months ahead. Safe to run on every start, from several hosts at once; returns how
    /// many migrations ran (0 when the schema was current).
    pub async fn migrate(&self) -> Result<usize> {
        let mut client = self.client().await?;
        let applied = schema::migrate(&mut client).await?;
        drop(client);
        self.ensure_partitions_around_now().await?;
        Ok(applied)
    }

    /// Sets the login password of `role` when this connection's user may alter roles (a
    /// superuser or `CREATEROLE`); returns whether it did. The statement is built by the server
    /// (`format` with `%I`/`%L`), never from text spliced here.
    pub async fn set_role_password(&self, role: &str, password: &str) -> Result<bool> {
        let client = self.client().await?;
        let may = client
            .query_one(
                "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await?
            .is_some();
        if !may.try_get::<_, bool>(0)? || !exists {
            return Ok(false);
        }
        let statement: String = client
            .query_one(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                &[&role, &password],
            )
            .await?
            .try_get(0)?;
        client.batch_execute(&statement).await?;
        Ok(true)
    }

    /// Creates the partitions from last month to three months ahead ("created ahead", so the
    /// write path rarely does DDL).
    pub(crate) async fn ensure_partitions_around_now(&self) -> Result<()> {
        let this_month = Month::of_ms(now_ms());
        self.ensure_partitions(
            this_month.plus(-1).start_ms(),
            this_month.plus(4).start_ms() - 1,
        )
        .await
    }
}
