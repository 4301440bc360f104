//! A running Weir host: builds every part from the configuration (the validator, the query
//! function and its capabilities, storage, the listeners), and runs the background duties
//! (metadata invalidation, following the function registry, Redis repair, partition and batch
//! maintenance, following the PKI ledger, the staleness timer and the webhook deliveries of alerting).
//! `weir serve` and the integration tests start it the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::pki_follower::{self, PkiFollower};
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_config::Config;
use weir_metrics::Metrics;
use weir_pipeline::alerting::Alerting;
use weir_pipeline::ingest::Ingest;
use weir_pipeline::ingest::follow_up::{FollowUps, WorkReport};
use weir_pipeline::ingest::rate_limit::RateLimiter;
use weir_pipeline::registry::{self, FunctionName, FunctionRegistry, VALIDATOR_FILE};
use weir_pki::ReloadingServerConfig;
use weir_runtime::capabilities::{HostCapabilities, PostgresBackend, RedisAccess, RedisBackend};
use weir_runtime::{FunctionEngine, FunctionSlot, HttpFunction, ValidatorFunction};
use weir_storage::{LatestCache, Storage};
use weir_surfaces::api::Api;
use weir_surfaces::api::answer_cache::AnswerCache;
use weir_surfaces::api::auth::Authenticator;
use weir_surfaces::api::event_stream::{EventStreamLimits, EventStreams};
use weir_surfaces::api::events::EventsApi;
use weir_surfaces::api::query::QueryApi;
use weir_surfaces::api::readiness::Readiness;
use weir_surfaces::device_api::shares::DeviceShares;
use weir_surfaces::device_api::{DeviceApi, Renewal};
use weir_surfaces::http::server::{Limits, serve_devices, serve_https, serve_plain};

/// How often the host re-reads the CRL and certificates, and retries Redis repairs.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How often a host works off its region's batch follow-ups.
const FOLLOWUP_INTERVAL: Duration = Duration::from_millis(500);
/// How often the pending follow-ups are counted for `weir_followups_pending`.
const FOLLOWUP_COUNT_INTERVAL: Duration = Duration::from_secs(5);
/// How often partitions are created ahead and old batch records deleted.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// Renewal answers buffered for the requests waiting on this host; a waiter that falls
/// further behind looks its answer up itself.
const RENEWAL_ANSWERS_BUFFER: usize = 1024;
/// How long a request waits for a PostgreSQL connection before the device gets a 503.
const POOL_WAIT: Duration = Duration::from_secs(2);

/// A host that is up and serving.
pub struct Host {
    device_addr: SocketAddr,
    api_addr: SocketAddr,
    engine: FunctionEngine,
    registry: FunctionRegistry,
    validator: Arc<FunctionSlot<ValidatorFunction>>,
    alerting: Option<Arc<Alerting>>,
    query: Option<Arc<QueryApi>>,
    latest: LatestCache,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Host {
    /// Starts everything the configuration describes; fails with a message naming the part
    /// that could not start.
    pub async fn start(config: Config) -> anyhow::Result<Host> {
        let config = Arc::new(config);
        let engine = config.function_engine()?;
        let storage = Storage::connect_with_timeout(
            &config.database_url,
            config.ingest.database_pool,
            POOL_WAIT,
            Duration::from_millis(config.ingest.statement_timeout_ms),
        )
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {}",
                weir_config::redact_url(&config.database_url)
            )
        })?;
        let applied = storage.migrate().await.context("migrating the database")?;
        if let Some(password) = config.query_database_password()? {
            let set = storage
                .set_role_password(weir_config::QUERY_ROLE, &password)
                .await
                .context("setting the query role's password")?;
            if !set {
                tracing::warn!(
                    role = weir_config::QUERY_ROLE,
                    "the query role's password was not set: the database user may not alter roles (an administrator sets it)"
                );
            }
        }
        let storage = storage
            .in_region(&config.region)
            .with_key_limits(weir_storage::KeyLimits {
                per_device: config.ingest.max_keys_per_device,
                per_org: config.ingest.max_keys_per_org,
            });
        tracing::info!(applied, "database schema up to date");
        let metrics = Arc::new(Metrics::new());
        let registry = FunctionRegistry::new(storage.clone(), engine.clone(), config.clone());
        let validator = registry::initial_validator(&registry, &metrics).await?;
        let validator = Arc::new(FunctionSlot::new(validator));
        let query_function = registry::initial_query(&registry, &metrics).await?;

        let latest = LatestCache::connect(&config.redis_url)
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {}",
                    weir_config::redact_url(&config.redis_url)
                )
            })?;
        let alerter = registry::initial_alerter(&registry, &metrics).await?;
        let rule_sets = registry::initial_rule_sets(&registry, alerter.as_ref(), &metrics).await;
        let alerting = Alerting::start(&config, alerter, rule_sets, &storage, &metrics).await?;
        let answers = Arc::new(AnswerCache::new(config.query.answer_cache_entries));
        let ingest = Arc::new(
            Ingest::new(
                config.clone(),
                validator.clone(),
                storage.clone(),
                latest.clone(),
                metrics.clone(),
            )
            .with_alerting(alerting.clone())
            .with_observer(answers.clone()),
        );
        let query = match query_function {
            Some(function) => Some(Arc::new(query_api(
                &config,
                function,
                answers,
                metrics.clone(),
            )?)),
            None => None,
        };

        let tls_files = config.device_tls_files()?;
        let tls = Arc::new(
            ReloadingServerConfig::new(tls_files, Some(pki_follower::ledger_crl(&storage).await?))
                .context("building the device TLS config")?,
        );
        let (crl_installed, crl_installs) = tokio::sync::watch::channel(0u64);
        let (renewals_answered, _) = tokio::sync::broadcast::channel(RENEWAL_ANSWERS_BUFFER);
        let pki_follower = PkiFollower::new(
            storage.clone(),
            tls.clone(),
            crl_installed.clone(),
            renewals_answered.clone(),
            metrics.clone(),
        );
        let renewal = Renewal::new(
            storage.clone(),
            renewals_answered,
            Duration::from_secs(config.tls.renew_wait_s),
            metrics.clone(),
        );
        let device_api = Arc::new(DeviceApi {
            ingest: ingest.clone(),
            limiter: RateLimiter::new(
                config.ingest.device_rate_per_second,
                config.ingest.device_burst,
            ),
            shares: DeviceShares::new(
                config.server.device_max_connections,
                config.server.device_max_requests,
                metrics.clone(),
            ),
            renewal,
            max_body_bytes: config.ingest.max_body_bytes,
            body_timeout: Duration::from_secs(config.server.body_read_timeout_s),
            metrics: metrics.clone(),
        });
        let event_streams =
            EventStreams::new(metrics.clone(), EventStreamLimits::of(&config.server));
        let auth = Arc::new(Authenticator::new(
            storage.clone(),
            Duration::from_secs(config.server.token_cache_s),
            config.server.max_token_lookups,
            metrics.clone(),
        ));
        let api = Arc::new(Api {
            storage: storage.clone(),
            auth: auth.clone(),
            readiness: Readiness::new(storage.clone(), latest.clone()),
            metrics: metrics.clone(),
            events: EventsApi {
                storage: storage.clone(),
                alerting: alerting.clone(),
                auth,
            },
            query: query.clone(),
            event_streams: event_streams.clone(),
        });

        let device_listener = TcpListener::bind(&config.device_listen)
            .await
            .with_context(|| format!("binding the device listener to {}", config.device_listen))?;
        let api_listener = TcpListener::bind(&config.api_listen)
            .await
            .with_context(|| format!("binding the API listener to {}", config.api_listen))?;
        let device_addr = device_listener.local_addr()?;
        let api_addr = api_listener.local_addr()?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(serve_devices(
            device_listener,
            tls.clone(),
            crl_installs,
            Limits::devices(&config.server),
            metrics.clone(),
            {
                let device_api = device_api.clone();
                move |identity| {
                    let connection = Arc::new(device_api.connect(identity));
                    let closer = connection.closer();
                    (move |request| connection.clone().handle(request), closer)
                }
            },
            shutdown.clone(),
        ));
        let handle_api = move |request| api.clone().handle(request);
        match (&config.tls.api_cert, &config.tls.api_key) {
            (Some(cert), Some(key)) => {
                let api_tls = weir_pki::api_server_config(cert, key)
                    .context("building the API listener's TLS config")?;
                tasks.spawn(serve_https(
                    api_listener,
                    api_tls,
                    Limits::api(&config.server),
                    metrics.clone(),
                    handle_api,
                    shutdown.clone(),
                ));
            }
            _ => {
                tasks.spawn(serve_plain(
                    api_listener,
                    Limits::api(&config.server),
                    metrics.clone(),
                    handle_api,
                    shutdown.clone(),
                ));
            }
        }
        tasks.spawn(event_streams.run(config.redis_url.clone(), shutdown.clone()));
        tasks.spawn(watch_files(tls, crl_installed, shutdown.clone()));
        tasks.spawn(work_off_followups(
            ingest.follow_ups().clone(),
            shutdown.clone(),
        ));
        tasks.spawn(pki_follower.run(config.database_url.clone(), shutdown.clone()));
        tasks.spawn(maintain(storage.clone(), config.clone(), shutdown.clone()));
        tasks.spawn(forget_idle_devices(device_api, shutdown.clone()));
        let slots = registry::Slots {
            validator: validator.clone(),
            query: query.as_ref().map(|query| query.function.clone()),
            alerting: alerting.clone(),
        };
        let prepared = Arc::new(registry::Prepared::default());
        let host_id = registry::host_id();
        registry::enrol(&registry, &host_id).await?;
        tasks.spawn(registry::stay_enrolled(
            registry.clone(),
            host_id.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(registry::prepare_staged(
            registry.clone(),
            slots.clone(),
            prepared.clone(),
            host_id.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(registry::follow(
            registry.clone(),
            slots,
            prepared,
            metrics.clone(),
            shutdown.clone(),
        ));
        if let Some(alerting) = &alerting {
            tasks.spawn(weir_pipeline::alerting::stale::run(
                alerting.clone(),
                shutdown.clone(),
            ));
            let webhooks =
                weir_webhooks::WebhookWorker::new(&config, storage.clone(), metrics.clone())?;
            tasks.spawn(webhooks.run(shutdown.clone()));
        }
        tasks.spawn(follow_metadata_changes(
            ingest.clone(),
            config.database_url.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(follow_device_moves(
            ingest,
            config.database_url.clone(),
            shutdown.clone(),
        ));
        tasks.close();
        tracing::info!(%device_addr, %api_addr, region = %config.region, %host_id, "weir host started");
        Ok(Host {
            device_addr,
            api_addr,
            engine,
            registry,
            validator,
            alerting,
            query,
            latest,
            metrics,
            config,
            shutdown,
            tasks,
        })
    }

    /// Where devices connect (mutual TLS).
    pub fn device_addr(&self) -> SocketAddr {
        self.device_addr
    }

    /// Where the API listener is.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The validator's slot (the version new batches are judged by).
    pub fn validator(&self) -> &Arc<FunctionSlot<ValidatorFunction>> {
        &self.validator
    }

    /// Alerting, when on.
    pub fn alerting(&self) -> Option<&Arc<Alerting>> {
        self.alerting.as_ref()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Redis latest values this host writes.
    pub fn latest(&self) -> &LatestCache {
        &self.latest
    }

    /// The function registry this host follows (for deploys from the host's process, and tests).
    pub fn registry(&self) -> &FunctionRegistry {
        &self.registry
    }

    /// Reloads the validator from the functions directory; the old one stays on failure. When
    /// the registry assigns the region a validator, that one stays and the file is ignored.
    pub async fn reload_validator(&self) -> anyhow::Result<()> {
        if self.assigned_by_registry(FunctionName::Validator).await? {
            return Ok(());
        }
        let path = self.config.functions_dir.join(VALIDATOR_FILE);
        let candidate = ValidatorFunction::load_file(&self.engine, &path)?;
        weir_pipeline::self_check::self_check(&candidate, &self.config).await?;
        let old = self.validator.replace(candidate);
        tracing::info!(old = %old.digest(), new = %self.validator.current().digest(), "validator swapped");
        Ok(())
    }

    /// The query API, when a query component was loaded.
    pub fn query(&self) -> Option<&Arc<QueryApi>> {
        self.query.as_ref()
    }

    /// Reloads the alert rules from the rules directory; the old rules stay if a file is refused.
    /// Without alerting there is nothing to reload.
    pub async fn reload_alert_rules(&self) -> anyhow::Result<()> {
        match &self.alerting {
            Some(alerting) => alerting.reload_rules().await,
            None => Ok(()),
        }
    }

    /// Reloads the query function from its file; the old one stays on failure. Without a query
    /// API (no component at start), or when the registry assigns the region a query function,
    /// there is nothing to reload.
    pub async fn reload_query(&self) -> anyhow::Result<()> {
        let Some(query) = &self.query else {
            return Ok(());
        };
        if self.assigned_by_registry(FunctionName::Query).await? {
            return Ok(());
        }
        let candidate = HttpFunction::load_file(&self.engine, &self.config.query_component())?
            .with_deadline(self.config.query_deadline());
        let old = query.function.replace(candidate);
        tracing::info!(old = %old.digest(), new = %query.function.current().digest(), "query function swapped");
        Ok(())
    }

    /// Whether the registry assigns this host's region a version of `name` (which then wins over
    /// the file).
    async fn assigned_by_registry(&self, name: FunctionName) -> anyhow::Result<bool> {
        let assigned = self
            .registry
            .assigned_version(&self.config.region, name)
            .await?
            .is_some();
        if assigned {
            tracing::info!(function = %name, region = %self.config.region, "the function registry assigns this function; its file is not reloaded");
        }
        Ok(assigned)
    }

    /// Stops accepting connections, drains them and ends the background tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
    }
}

/// The query API over the host's database and Redis, with the configured grants.
fn query_api(
    config: &Config,
    function: HttpFunction,
    answers: Arc<AnswerCache>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<QueryApi> {
    // A store the capabilities cannot address (a Unix socket, TLS Redis) is left out: the
    // component then gets errors from `open`, and the rest of the query API still works.
    let password = config.query_database_password()?;
    let postgres = PostgresBackend::read_only(
        &config.query_database_url(),
        password.as_deref(),
        config.query.database_connections,
        config.query_deadline(),
    )
    .inspect_err(|error| tracing::warn!(%error, "query functions get no PostgreSQL"))
    .ok();
    let redis = RedisBackend::new(&config.redis_url, RedisAccess::ReadOnly)
        .inspect_err(|error| tracing::warn!(%error, "query functions get no Redis"))
        .ok();
    let host_endpoints = postgres
        .iter()
        .map(PostgresBackend::allowed_host)
        .chain(redis.iter().map(RedisBackend::allowed_host))
        .collect();
    let grants = config.query_grants(host_endpoints);
    let granted = HostCapabilities::new(postgres, redis)
        .grant(&grants)
        .context("the [query] configuration")?;
    tracing::info!(
        function = function.name(),
        digest = %&function.digest()[..12],
        allowed_outbound_hosts = ?grants.allowed_outbound_hosts,
        "query API enabled"
    );
    Ok(QueryApi {
        function: Arc::new(FunctionSlot::new(function)),
        granted,
        answers,
        metrics,
        openapi: Default::default(),
    })
}

/// Reloads the device TLS files when they change (a new server certificate).
async fn watch_files(
    tls: Arc<ReloadingServerConfig>,
    crl_reloaded: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match tls.reload_if_changed() {
            Ok(true) => {
                tracing::info!("device TLS files changed; new connections use them");
                // A new CA bundle: open connections check their certificate again.
                crl_reloaded.send_modify(|generation| *generation += 1);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "cannot reload device TLS files; keeping the old ones");
            }
        }
    }
}

/// Works off the region's batch follow-ups every [`FOLLOWUP_INTERVAL`] (retries, and the
/// batches of hosts that died after their commit); at shutdown, waits for those in progress
/// and deletes the completed rows.
async fn work_off_followups(follow_ups: Arc<FollowUps>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FOLLOWUP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counted = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        match follow_ups.work_off().await {
            Ok(report) if report != WorkReport::default() => {
                tracing::info!(?report, "batch follow-ups worked off");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "batch follow-ups postponed"),
        }
        if counted.elapsed() >= FOLLOWUP_COUNT_INTERVAL {
            counted = tokio::time::Instant::now();
            if let Err(error) = follow_ups.count_pending().await {
                tracing::debug!(%error, "batch follow-ups not counted");
            }
        }
    }
    follow_ups.drain().await;
    if let Err(error) = follow_ups.flush_done().await {
        tracing::warn!(%error, "completed follow-ups not deleted; another host redoes their latest values");
    }
}

async fn maintain(storage: Storage, config: Arc<Config>, shutdown: CancellationToken) {
    let retention = Duration::from_secs(config.ingest.batch_retention_hours * 3600);
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match storage.maintain(retention).await {
            Ok(report) => tracing::info!(?report, "storage maintenance done"),
            Err(error) => tracing::warn!(%error, "storage maintenance failed; will retry"),
        }
    }
}

/// Keeps this region's latest values right when devices move between regions (PostgreSQL
/// LISTEN/NOTIFY on `weir_device_moved`).
async fn follow_device_moves(
    ingest: Arc<Ingest>,
    database_url: String,
    shutdown: CancellationToken,
) {
    let listen = || weir_storage::listen_device_moves(&database_url);
    let Some(mut listener) =
        crate::listening::listen_until_stopped("device moves", WATCH_INTERVAL, &shutdown, listen)
            .await
    else {
        return;
    };
    loop {
        tokio::select! {
            change = listener.next_move() => match change {
                Some(change) => ingest.device_moved(&change).await,
                None => return,
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Drops cached metadata when any host changes it (PostgreSQL LISTEN/NOTIFY).
async fn follow_metadata_changes(
    ingest: Arc<Ingest>,
    database_url: String,
    shutdown: CancellationToken,
) {
    let listen = || weir_storage::listen_metadata_changes(&database_url);
    let Some(mut listener) = crate::listening::listen_until_stopped(
        "metadata changes",
        WATCH_INTERVAL,
        &shutdown,
        listen,
    )
    .await
    else {
        return;
    };
    loop {
        tokio::select! {
            change = listener.next_change() => match change {
                Some(change) => ingest.metadata_changed(&change),
                None => return,
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Drops the rate-limit state of devices back at a full burst, every
/// [`FORGET_IDLE_EVERY`](weir_pipeline::ingest::rate_limit::FORGET_IDLE_EVERY), until `shutdown`.
async fn forget_idle_devices(device_api: Arc<DeviceApi>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(weir_pipeline::ingest::rate_limit::FORGET_IDLE_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => device_api.limiter.forget_idle(),
            () = shutdown.cancelled() => return,
        }
    }
}
