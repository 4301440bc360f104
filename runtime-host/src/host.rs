//! A running Weir host: builds every part from the configuration (the validator, the query
//! function and its capabilities, storage, the listeners), and runs the background duties
//! (metadata invalidation, following the function registry, Redis repair, partition and batch
//! maintenance, CRL reloads, the staleness timer and the webhook deliveries of alerting).
//! `weir serve` and the integration tests start it the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use weir_pki::ReloadingServerConfig;
use weir_storage::{LatestCache, MetadataChange, Storage};

use crate::alerting::Alerting;
use crate::api::Api;
use crate::api::event_stream::EventStreams;
use crate::api::query::QueryApi;
use crate::capabilities::{HostCapabilities, PostgresBackend, RedisAccess, RedisBackend};
use crate::config::Config;
use crate::device_api::{DeviceApi, Renewal};
use crate::functions::{FunctionEngine, FunctionSlot, HttpFunction, ValidatorFunction};
use crate::http::server::{serve_devices, serve_https, serve_plain};
use crate::ingest::Ingest;
use crate::ingest::rate_limit::RateLimiter;
use crate::metrics::Metrics;
use crate::registry::{self, FunctionName, FunctionRegistry};

/// File name of the default validator inside the functions directory.
pub const VALIDATOR_FILE: &str = "validate.wasm";

/// How often the host re-reads the CRL and certificates, and retries Redis repairs.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How often partitions are created ahead and old batch records deleted.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long a request waits for a PostgreSQL connection before the device gets a 503.
const POOL_WAIT: Duration = Duration::from_secs(2);

/// A host that is up and serving.
pub struct Host {
    device_addr: SocketAddr,
    api_addr: SocketAddr,
    engine: FunctionEngine,
    registry: FunctionRegistry,
    ingest: Arc<Ingest>,
    query: Option<Arc<QueryApi>>,
    config: Arc<Config>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Host {
    /// Starts everything the configuration describes; fails with a message naming the part
    /// that could not start.
    pub async fn start(config: Config) -> anyhow::Result<Host> {
        let config = Arc::new(config);
        let engine = config.function_engine()?;
        let storage =
            Storage::connect(&config.database_url, config.ingest.database_pool, POOL_WAIT)
                .await
                .with_context(|| {
                    format!(
                        "connecting to PostgreSQL at {}",
                        redact(&config.database_url)
                    )
                })?;
        let applied = storage.migrate().await.context("migrating the database")?;
        tracing::info!(applied, "database schema up to date");
        let metrics = Arc::new(Metrics::new());
        let registry = FunctionRegistry::new(storage.clone(), engine.clone(), config.clone());
        let validator = registry::initial_validator(&registry, &metrics).await?;
        let validator = Arc::new(FunctionSlot::new(validator));
        let query_function = registry::initial_query(&registry, &metrics).await?;

        let latest = LatestCache::connect(&config.redis_url)
            .await
            .with_context(|| format!("connecting to Redis at {}", config.redis_url))?;
        let alerter = registry::initial_alerter(&registry, &metrics).await?;
        let rule_sets = registry::initial_rule_sets(&registry, alerter.as_ref(), &metrics).await;
        let alerting = Alerting::start(&config, alerter, rule_sets, &storage, &metrics).await?;
        let ingest = Arc::new(
            Ingest::new(config.clone(), validator, storage, latest, metrics.clone())
                .with_alerting(alerting),
        );
        let query = match query_function {
            Some(function) => Some(Arc::new(query_api(&config, function, &ingest)?)),
            None => None,
        };

        let tls_files = config.device_tls_files()?;
        let tls = Arc::new(
            ReloadingServerConfig::new(tls_files).context("building the device TLS config")?,
        );
        let renewal = match &config.tls.pki_dir {
            Some(dir) => Some(Renewal::load(dir.clone(), config.tls.renew_days)?),
            None => None,
        };
        let device_api = Arc::new(DeviceApi {
            ingest: ingest.clone(),
            limiter: RateLimiter::new(
                config.ingest.device_rate_per_second,
                config.ingest.device_burst,
            ),
            renewal,
            max_body_bytes: config.ingest.max_body_bytes,
        });
        let event_streams = EventStreams::new(metrics.clone());
        let api = Arc::new(Api {
            ingest: ingest.clone(),
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

        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_devices(
            device_listener,
            tls.clone(),
            metrics.clone(),
            move |identity, request| device_api.clone().handle(identity, request),
            shutdown.subscribe(),
        ));
        let handle_api = move |request| api.clone().handle(request);
        match (&config.tls.api_cert, &config.tls.api_key) {
            (Some(cert), Some(key)) => {
                let api_tls = weir_pki::api_server_config(cert, key)
                    .context("building the API listener's TLS config")?;
                tasks.spawn(serve_https(
                    api_listener,
                    api_tls,
                    handle_api,
                    shutdown.subscribe(),
                ));
            }
            _ => {
                tasks.spawn(serve_plain(api_listener, handle_api, shutdown.subscribe()));
            }
        }
        tasks.spawn(event_streams.run(config.redis_url.clone(), shutdown.subscribe()));
        tasks.spawn(watch_files_and_repair(
            tls,
            ingest.clone(),
            shutdown.subscribe(),
        ));
        tasks.spawn(maintain(
            ingest.clone(),
            config.clone(),
            shutdown.subscribe(),
        ));
        let slots = registry::Slots {
            validator: ingest.validator.clone(),
            query: query.clone(),
            alerting: ingest.alerting.clone(),
        };
        let prepared = Arc::new(registry::Prepared::default());
        let host_id = registry::host_id();
        registry::enrol(&registry, &host_id).await?;
        tasks.spawn(registry::stay_enrolled(
            registry.clone(),
            host_id.clone(),
            shutdown.subscribe(),
        ));
        tasks.spawn(registry::prepare_staged(
            registry.clone(),
            slots.clone(),
            prepared.clone(),
            host_id.clone(),
            metrics.clone(),
            shutdown.subscribe(),
        ));
        tasks.spawn(registry::follow(
            registry.clone(),
            slots,
            prepared,
            metrics.clone(),
            shutdown.subscribe(),
        ));
        if let Some(alerting) = &ingest.alerting {
            tasks.spawn(crate::alerting::stale::run(
                alerting.clone(),
                shutdown.subscribe(),
            ));
            let webhooks = crate::alerting::webhooks::WebhookWorker::new(
                &config,
                ingest.storage.clone(),
                metrics.clone(),
            )?;
            tasks.spawn(webhooks.run(shutdown.subscribe()));
        }
        tasks.spawn(follow_metadata_changes(
            ingest.clone(),
            config.database_url.clone(),
            shutdown.subscribe(),
        ));
        tracing::info!(%device_addr, %api_addr, region = %config.region, %host_id, "weir host started");
        Ok(Host {
            device_addr,
            api_addr,
            engine,
            registry,
            ingest,
            query,
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

    /// The ingest pipeline (for hot-swapping the validator and for tests).
    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
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
        crate::serve::self_check(&candidate, &self.config).await?;
        let old = self.ingest.validator.replace(candidate);
        tracing::info!(old = %old.digest(), new = %self.ingest.validator.current().digest(), "validator swapped");
        Ok(())
    }

    /// The query API, when a query component was loaded.
    pub fn query(&self) -> Option<&Arc<QueryApi>> {
        self.query.as_ref()
    }

    /// Reloads the alert rules from the rules directory; the old rules stay if a file is refused.
    /// Without alerting there is nothing to reload.
    pub async fn reload_alert_rules(&self) -> anyhow::Result<()> {
        match &self.ingest.alerting {
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

    /// Stops accepting connections and ends the background tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The query API over the host's database and Redis, with the configured grants.
fn query_api(config: &Config, function: HttpFunction, ingest: &Ingest) -> anyhow::Result<QueryApi> {
    // A store the capabilities cannot address (a Unix socket, TLS Redis) is left out: the
    // component then gets errors from `open`, and the rest of the query API still works.
    let postgres = PostgresBackend::read_only(
        &config.query_database_url(),
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
        answers: ingest.answers.clone(),
        metrics: ingest.metrics.clone(),
    })
}

/// Reloads TLS files when they change (a revocation takes effect for new connections) and
/// repairs Redis latest values after an outage.
async fn watch_files_and_repair(
    tls: Arc<ReloadingServerConfig>,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match tls.reload_if_changed() {
            Ok(true) => tracing::info!("device TLS files changed; new connections use them"),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "cannot reload device TLS files; keeping the old ones")
            }
        }
        if ingest.repair.pending() > 0 {
            match ingest
                .repair
                .repair_pending(&ingest.storage, &ingest.latest)
                .await
            {
                Ok(report) => tracing::info!(?report, "Redis latest values repaired"),
                Err(error) => tracing::debug!(%error, "Redis repair postponed"),
            }
        }
    }
}

/// Creates partitions ahead and forgets old batch ids, hourly.
async fn maintain(ingest: Arc<Ingest>, config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    let retention = Duration::from_secs(config.ingest.batch_retention_hours * 3600);
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match ingest.storage.maintain(retention).await {
            Ok(report) => tracing::info!(?report, "storage maintenance done"),
            Err(error) => tracing::warn!(%error, "storage maintenance failed; will retry"),
        }
    }
}

/// Drops cached metadata when any host changes it (PostgreSQL LISTEN/NOTIFY).
async fn follow_metadata_changes(
    ingest: Arc<Ingest>,
    database_url: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = loop {
        match weir_storage::listen_metadata_changes(&database_url).await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for metadata changes yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    loop {
        tokio::select! {
            change = listener.next_change() => match change {
                Some(MetadataChange::Device(device)) => ingest.metadata.invalidate(&device),
                Some(MetadataChange::All) => ingest.metadata.invalidate_all(),
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
