//! The host's side of the function registry (`weir_storage::registry`): which function versions
//! a region runs, deploying and rolling them back (`weir functions deploy/list/rollback`), and
//! following the registry while serving.
//!
//! A version is checked the same way everywhere before it may serve: compiled and linked with
//! the host's engine, matched against its world (the validator world for `validator`, the WASI
//! HTTP proxy world for `query`), and for a validator, the self-check of `weir serve`. A deploy
//! stores nothing that fails these checks; a host that still cannot load an assigned version
//! (say, another wasmtime) logs it, counts it (`weir_function_registry_loads_total{code="refused"}`)
//! and keeps the version it runs.
//!
//! A host of region R starts with R's assigned versions (the files of `functions_dir` for names
//! R has none for), then [`follow`] keeps it current: it listens on the registry's NOTIFY channel
//! and re-reads R's assignments when R changes (and every [`CHECK_INTERVAL`] besides, in case a
//! notification was lost), loads what changed, and swaps it into the function's slot. Calls in
//! flight finish on the version they started with (see [`FunctionSlot`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use weir_storage::{ArtifactKind, Assignment, AssignmentRecord, RegistryListener, Storage};

use crate::api::query::QueryApi;
use crate::config::Config;
use crate::functions::{FunctionEngine, FunctionSlot, HttpFunction, ValidatorFunction};
use crate::metrics::Metrics;

/// How often a host re-reads its region's assignments without being notified: the safety net
/// under LISTEN/NOTIFY.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// The names a region assigns versions under; each name takes one kind of artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionName {
    /// The validator of every device batch.
    Validator,
    /// The query API's HTTP handler.
    Query,
}

impl FunctionName {
    /// Every name, in listing order.
    pub const ALL: [FunctionName; 2] = [FunctionName::Validator, FunctionName::Query];

    /// The name as the registry and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionName::Validator => "validator",
            FunctionName::Query => "query",
        }
    }

    /// The kind of artifact the name takes.
    pub fn kind(self) -> ArtifactKind {
        match self {
            FunctionName::Validator => ArtifactKind::Validator,
            FunctionName::Query => ArtifactKind::Query,
        }
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FunctionName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        FunctionName::ALL
            .into_iter()
            .find(|name| name.as_str() == text)
            .ok_or_else(|| format!("unknown function {text:?}: expected validator or query"))
    }
}

/// A version that passed every check, ready to be swapped in.
pub enum CheckedFunction {
    /// A validator that matched its world and passed the self-check.
    Validator(ValidatorFunction),
    /// An HTTP function that matched the proxy world, with the configured deadline.
    Query(HttpFunction),
}

impl CheckedFunction {
    /// SHA-256 of the component, hex.
    pub fn digest(&self) -> &str {
        match self {
            CheckedFunction::Validator(function) => function.digest(),
            CheckedFunction::Query(function) => function.digest(),
        }
    }
}

/// Compiles and links `bytes` as `name` and checks it against its world (and, for a validator,
/// runs the self-check): what a deploy refuses and what a host refuses before it swaps.
pub async fn check(
    engine: &FunctionEngine,
    config: &Config,
    name: FunctionName,
    bytes: Vec<u8>,
) -> anyhow::Result<CheckedFunction> {
    let engine = engine.clone();
    // Compiling takes CPU for a while: keep it off the threads serving requests.
    let checked = tokio::task::spawn_blocking(move || match name {
        FunctionName::Validator => {
            ValidatorFunction::load(&engine, name.as_str(), &bytes).map(CheckedFunction::Validator)
        }
        FunctionName::Query => {
            HttpFunction::load(&engine, name.as_str(), &bytes).map(CheckedFunction::Query)
        }
    })
    .await
    .context("the compiling task failed")??;
    Ok(match checked {
        CheckedFunction::Validator(validator) => {
            crate::serve::self_check(&validator, config).await?;
            CheckedFunction::Validator(validator)
        }
        CheckedFunction::Query(function) => {
            CheckedFunction::Query(function.with_deadline(config.query_deadline()))
        }
    })
}

/// The registry as the host and the command line use it: storage plus an engine configured
/// like the host's, so what it accepts, hosts can load.
#[derive(Clone)]
pub struct FunctionRegistry {
    storage: Storage,
    engine: FunctionEngine,
    config: Arc<Config>,
}

impl FunctionRegistry {
    /// A registry over `storage`, checking versions with `engine` under `config`.
    pub fn new(storage: Storage, engine: FunctionEngine, config: Arc<Config>) -> Self {
        FunctionRegistry {
            storage,
            engine,
            config,
        }
    }

    /// What the command line uses: the configured database (migrated) and an engine built like
    /// the host's, sharing its compiled-artifact cache.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let storage = Storage::connect(&config.database_url, 2, Duration::from_secs(10))
            .await
            .context("connecting to PostgreSQL")?;
        storage.migrate().await.context("migrating the database")?;
        let engine = FunctionEngine::new(config.limits(), Some(&config.artifact_dir()))?;
        Ok(FunctionRegistry::new(storage, engine, Arc::new(config)))
    }

    /// Checks `bytes` as `name` (see [`check`]) and, only if it passes, stores it and makes it
    /// the current version in `region`; the region's hosts switch to it within a second.
    pub async fn deploy(
        &self,
        name: FunctionName,
        bytes: &[u8],
        region: &str,
    ) -> anyhow::Result<Assignment> {
        check_region(region)?;
        check(&self.engine, &self.config, name, bytes.to_vec())
            .await
            .with_context(|| format!("refused: this is not a working {name} function"))?;
        Ok(self
            .storage
            .deploy_artifact(region, name.as_str(), name.kind(), bytes)
            .await?)
    }

    /// Makes the version `region` ran under `name` before the current one current again.
    pub async fn rollback(&self, name: FunctionName, region: &str) -> anyhow::Result<Assignment> {
        check_region(region)?;
        self.storage
            .roll_back_artifact(region, name.as_str())
            .await?
            .with_context(|| {
                format!("{name} has no earlier version in region {region:?} to roll back to")
            })
    }

    /// The assignment history of `region` (or every region), current versions marked.
    pub async fn list(&self, region: Option<&str>) -> anyhow::Result<Vec<AssignmentRecord>> {
        Ok(self.storage.artifact_history(region).await?)
    }

    /// The version (SHA-256) `region` runs under `name`; `None` when unassigned.
    pub async fn assigned_version(
        &self,
        region: &str,
        name: FunctionName,
    ) -> anyhow::Result<Option<String>> {
        let assigned = self.storage.current_artifacts(region).await?;
        Ok(assigned
            .into_iter()
            .find(|artifact| artifact.name == name.as_str())
            .map(|artifact| artifact.sha256))
    }

    /// The version `region` runs under `name`, loaded and checked; `None` when unassigned.
    pub async fn load_assigned(
        &self,
        region: &str,
        name: FunctionName,
    ) -> anyhow::Result<Option<CheckedFunction>> {
        match self.assigned_version(region, name).await? {
            Some(sha256) => self.load_version(name, &sha256).await.map(Some),
            None => Ok(None),
        }
    }

    async fn load_version(
        &self,
        name: FunctionName,
        sha256: &str,
    ) -> anyhow::Result<CheckedFunction> {
        let bytes = self
            .storage
            .artifact_bytes(sha256)
            .await?
            .with_context(|| format!("version {sha256} is not in the registry"))?;
        check(&self.engine, &self.config, name, bytes)
            .await
            .with_context(|| format!("{name} version {}", &sha256[..12]))
    }
}

/// A region is a short name: letters, digits, `.`, `_`, `-`.
fn check_region(region: &str) -> anyhow::Result<()> {
    let valid = !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    anyhow::ensure!(
        valid,
        "invalid region {region:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
    );
    Ok(())
}

/// The validator a host starts with: its region's assigned version, else `validate.wasm` of the
/// functions directory (also when the assigned version does not load here).
pub(crate) async fn initial_validator(
    registry: &FunctionRegistry,
    metrics: &Metrics,
) -> anyhow::Result<ValidatorFunction> {
    let config = &registry.config;
    if let Some(CheckedFunction::Validator(validator)) =
        initial_assigned(registry, metrics, FunctionName::Validator).await
    {
        return Ok(validator);
    }
    let path = config.functions_dir.join(crate::host::VALIDATOR_FILE);
    let validator = ValidatorFunction::load_file(&registry.engine, &path).with_context(|| {
        format!(
            "loading the default validator (build it with `cargo xtask components`, or set \
             WEIR_FUNCTIONS_DIR to the directory holding {})",
            crate::host::VALIDATOR_FILE
        )
    })?;
    crate::serve::self_check(&validator, config).await?;
    Ok(validator)
}

/// The query function a host starts with: its region's assigned version, else the configured
/// file if it exists; `None` (no query API) without either.
pub(crate) async fn initial_query(
    registry: &FunctionRegistry,
    metrics: &Metrics,
) -> anyhow::Result<Option<HttpFunction>> {
    let config = &registry.config;
    if let Some(CheckedFunction::Query(function)) =
        initial_assigned(registry, metrics, FunctionName::Query).await
    {
        return Ok(Some(function));
    }
    let path = config.query_component();
    if !path.exists() {
        tracing::info!(path = %path.display(), "no query component: /v1/ answers 404");
        return Ok(None);
    }
    let function = HttpFunction::load_file(&registry.engine, &path)
        .with_context(|| format!("loading the query component {}", path.display()))?
        .with_deadline(config.query_deadline());
    Ok(Some(function))
}

/// The region's assigned version of `name`, if there is one and it loads (logged either way).
async fn initial_assigned(
    registry: &FunctionRegistry,
    metrics: &Metrics,
    name: FunctionName,
) -> Option<CheckedFunction> {
    let region = &registry.config.region;
    match registry.load_assigned(region, name).await {
        Ok(Some(function)) => {
            tracing::info!(%region, function = %name, digest = %function.digest(), "running the registry's version");
            metrics.function_registry_load("swapped");
            Some(function)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%region, function = %name, error = format!("{error:#}"), "the registry's version does not load here; starting with the file");
            metrics.function_registry_load("refused");
            None
        }
    }
}

/// The slots a host's registry follower swaps versions into.
pub(crate) struct Slots {
    pub(crate) validator: Arc<FunctionSlot<ValidatorFunction>>,
    pub(crate) query: Option<Arc<QueryApi>>,
}

impl Slots {
    /// The digest `name` runs now; `None` when the host has no slot for it.
    fn running(&self, name: FunctionName) -> Option<String> {
        match name {
            FunctionName::Validator => Some(self.validator.current().digest().to_owned()),
            FunctionName::Query => {
                Some(self.query.as_ref()?.function.current().digest().to_owned())
            }
        }
    }

    /// Makes `function` the version new calls use; returns the digest it replaced.
    fn swap(&self, function: CheckedFunction) -> Option<String> {
        match function {
            CheckedFunction::Validator(validator) => {
                Some(self.validator.replace(validator).digest().to_owned())
            }
            CheckedFunction::Query(function) => Some(
                self.query
                    .as_ref()?
                    .function
                    .replace(function)
                    .digest()
                    .to_owned(),
            ),
        }
    }
}

/// Keeps the host's functions on its region's assigned versions until `shutdown`.
pub(crate) async fn follow(
    registry: FunctionRegistry,
    slots: Slots,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let region = registry.config.region.clone();
    let mut follower = Follower {
        registry,
        slots,
        metrics,
        refused: HashMap::new(),
        warned_no_query: false,
    };
    let mut listener: Option<RegistryListener> = None;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        if listener.is_none() {
            match weir_storage::listen_registry_changes(&follower.registry.config.database_url)
                .await
            {
                // Its first change is `All`: whatever changed before it listened is caught up.
                Ok(started) => listener = Some(started),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for registry changes yet; checking every few seconds")
                }
            }
        }
        tokio::select! {
            change = next_change(&mut listener) => match change {
                Some(change) if change.concerns(&region) => {}
                Some(_) => continue,
                None => {
                    listener = None;
                    continue;
                }
            },
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        follower.catch_up().await;
    }
}

async fn next_change(
    listener: &mut Option<RegistryListener>,
) -> Option<weir_storage::RegistryChange> {
    match listener {
        Some(listener) => listener.next_change().await,
        None => std::future::pending().await,
    }
}

struct Follower {
    registry: FunctionRegistry,
    slots: Slots,
    metrics: Arc<Metrics>,
    /// The version of each name that failed to load here, not tried again until reassigned.
    refused: HashMap<FunctionName, String>,
    warned_no_query: bool,
}

impl Follower {
    /// Loads and swaps in every assigned version that differs from the running one.
    async fn catch_up(&mut self) {
        let region = &self.registry.config.region;
        let assigned = match self.registry.storage.current_artifacts(region).await {
            Ok(assigned) => assigned,
            Err(error) => {
                tracing::debug!(%error, "cannot read the registry now; will retry");
                return;
            }
        };
        for artifact in assigned {
            // Names this host does not run yet (alerter, rules) are left to later versions.
            let Ok(name) = artifact.name.parse::<FunctionName>() else {
                continue;
            };
            let Some(running) = self.slots.running(name) else {
                if !self.warned_no_query {
                    tracing::warn!(%region, function = %name, "a version is assigned, but this host started without a query API; restart it to serve one");
                    self.warned_no_query = true;
                }
                continue;
            };
            if running == artifact.sha256 || self.refused.get(&name) == Some(&artifact.sha256) {
                continue;
            }
            match self.registry.load_version(name, &artifact.sha256).await {
                Ok(function) => {
                    let new = function.digest().to_owned();
                    let old = self.slots.swap(function);
                    self.refused.remove(&name);
                    self.metrics.function_registry_load("swapped");
                    tracing::info!(%region, function = %name, old = ?old, %new, "switched to the registry's version");
                }
                Err(error) => {
                    self.refused.insert(name, artifact.sha256.clone());
                    self.metrics.function_registry_load("refused");
                    tracing::error!(%region, function = %name, version = %artifact.sha256, error = format!("{error:#}"), "the registry's version does not load here; the running one stays");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_map_to_their_kind() {
        for name in FunctionName::ALL {
            assert_eq!(name.as_str().parse::<FunctionName>().unwrap(), name);
        }
        assert_eq!(FunctionName::Query.kind(), ArtifactKind::Query);
        assert!("alerter".parse::<FunctionName>().is_err());
    }

    #[test]
    fn regions_are_short_names() {
        assert!(check_region("eu-north-1").is_ok());
        assert!(check_region("").is_err());
        assert!(check_region("*").is_err());
        assert!(check_region("a b").is_err());
        assert!(check_region(&"x".repeat(65)).is_err());
    }
}
