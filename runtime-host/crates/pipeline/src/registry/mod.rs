//! The host's side of the function registry (`weir_storage::registry`): which function versions
//! and alert rule sets a region runs, deploying and rolling them back (`weir functions
//! deploy/list/rollback`, `weir rules apply/list/rollback`), and following the registry while
//! serving.
//!
//! A version is checked the same way everywhere before it may serve: compiled and linked with
//! the host's engine, matched against its world (the validator world for `validator`, the WASI
//! HTTP proxy world for `query`, the alerter world for `alerter`), and for a validator, the
//! self-check of `weir serve`; a new alerter must also accept the region's rule sets. A rule set
//! (registry name `rules:<org>`, one per organisation, its content the rule file's text) is
//! checked by the `check-rules` of the alerter the region runs. A deploy stores nothing that
//! fails these checks; a host that still cannot load an assigned version (say, another
//! wasmtime) logs it, counts it (`weir_function_registry_loads_total{code="refused"}`) and keeps
//! the version it runs.
//!
//! A host of region R starts with R's assigned versions (the files of `functions_dir` for names
//! R has none for; the rules directory's files for organisations R has no rule set for), then
//! [`follow`] keeps it current: it listens on the registry's NOTIFY channel and re-reads R's
//! assignments when R changes (and every [`CHECK_INTERVAL`] besides, in case a notification was
//! lost), loads what changed, and swaps it into the function's slot or the rule book. Calls in
//! flight finish on the version they started with (see [`FunctionSlot`]); a batch keeps the
//! rules it loaded.
//!
//! Function deploys and rollbacks are staged, so that a region switches at once rather than
//! each host after its own compile (seconds for the alerter): the version is announced first,
//! every live host of the region compiles and checks it ahead ([`prepare_staged`], `prepare.rs`)
//! and says so, and the deploy assigns it once all are ready ([`FunctionRegistry::stage`],
//! `rollout.rs`); the follower then swaps in what was prepared. Rule sets need no staging: the
//! running alerter checks them in milliseconds.

mod follow;
mod initial;
mod prepare;
mod rollout;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use weir_storage::{
    ArtifactKind, Assignment, AssignmentRecord, CurrentArtifact, RegistryListener, Storage,
};

use crate::alerting::Alerting;
use crate::alerting::rules::{RuleSet, RuleSource};
use weir_config::Config;
use weir_metrics::Metrics;
use weir_runtime::{
    AlerterFunction, FunctionEngine, FunctionSlot, HttpFunction, ValidatorFunction,
};

pub use follow::{Slots, follow};

/// File name of the default validator inside the functions directory.
pub const VALIDATOR_FILE: &str = "validate.wasm";
pub use initial::{initial_alerter, initial_query, initial_rule_sets, initial_validator};
pub use prepare::{HEARTBEAT_INTERVAL, LIVE_WITHIN, host_id};
pub use prepare::{Prepared, enrol, prepare_staged, stay_enrolled};
pub use rollout::{PREPARE_TIMEOUT, Progress, Readiness};

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
    /// The alerter evaluating accepted batches against the rule sets.
    Alerter,
}

impl FunctionName {
    /// Every name, in listing order.
    pub const ALL: [FunctionName; 3] = [
        FunctionName::Validator,
        FunctionName::Query,
        FunctionName::Alerter,
    ];

    /// The name as the registry and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionName::Validator => "validator",
            FunctionName::Query => "query",
            FunctionName::Alerter => "alerter",
        }
    }

    /// The kind of artifact the name takes.
    pub fn kind(self) -> ArtifactKind {
        match self {
            FunctionName::Validator => ArtifactKind::Validator,
            FunctionName::Query => ArtifactKind::Query,
            FunctionName::Alerter => ArtifactKind::Alerter,
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
            .ok_or_else(|| {
                format!("unknown function {text:?}: expected validator, query or alerter")
            })
    }
}

/// A version that passed every check, ready to be swapped in.
pub enum CheckedFunction {
    /// A validator that matched its world and passed the self-check.
    Validator(ValidatorFunction),
    /// An HTTP function that matched the proxy world, with the configured deadline.
    Query(HttpFunction),
    /// An alerter that matched its world, with the configured deadline.
    Alerter(AlerterFunction),
}

impl CheckedFunction {
    /// SHA-256 of the component, hex.
    pub fn digest(&self) -> &str {
        match self {
            CheckedFunction::Validator(function) => function.digest(),
            CheckedFunction::Query(function) => function.digest(),
            CheckedFunction::Alerter(function) => function.digest(),
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
        FunctionName::Alerter => {
            AlerterFunction::load(&engine, name.as_str(), &bytes).map(CheckedFunction::Alerter)
        }
    })
    .await
    .context("the compiling task failed")??;
    Ok(match checked {
        CheckedFunction::Validator(validator) => {
            crate::self_check::self_check(&validator, config).await?;
            CheckedFunction::Validator(validator)
        }
        CheckedFunction::Query(function) => {
            CheckedFunction::Query(function.with_deadline(config.query_deadline()))
        }
        CheckedFunction::Alerter(function) => {
            CheckedFunction::Alerter(function.with_deadline(config.alert_deadline()))
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
    /// How long a deploy waits for the region's hosts to prepare a version.
    prepare_timeout: Duration,
}

impl FunctionRegistry {
    /// A registry over `storage`, checking versions with `engine` under `config`.
    pub fn new(storage: Storage, engine: FunctionEngine, config: Arc<Config>) -> Self {
        FunctionRegistry {
            storage,
            engine,
            config,
            prepare_timeout: PREPARE_TIMEOUT,
        }
    }

    /// The same registry, its deploys waiting at most `timeout` for the hosts to prepare.
    pub fn with_prepare_timeout(mut self, timeout: Duration) -> Self {
        self.prepare_timeout = timeout;
        self
    }

    /// What the command line uses: the configured database (migrated) and an engine built like
    /// the host's, sharing its compiled-artifact cache.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let storage = Storage::connect(&config.database_url, 2, Duration::from_secs(10))
            .await
            .context("connecting to PostgreSQL")?;
        storage.migrate().await.context("migrating the database")?;
        let engine = config.function_engine()?;
        Ok(FunctionRegistry::new(storage, engine, Arc::new(config)))
    }

    /// Checks `bytes` as `name` (see [`check`]; a new alerter must also accept every rule set
    /// of the region) and, only if it passes, stores it, has the region's hosts prepare it
    /// (see [`stage`](Self::stage)) and makes it the current version in `region`: the hosts
    /// swap it in within a second of the assignment.
    pub async fn deploy(
        &self,
        name: FunctionName,
        bytes: &[u8],
        region: &str,
    ) -> anyhow::Result<Assignment> {
        self.deploy_reporting(name, bytes, region, &mut |_| {})
            .await
    }

    /// [`deploy`](Self::deploy), reporting the hosts' preparation to `progress`.
    pub async fn deploy_reporting(
        &self,
        name: FunctionName,
        bytes: &[u8],
        region: &str,
        progress: Progress<'_>,
    ) -> anyhow::Result<Assignment> {
        check_region(region)?;
        let checked = check(&self.engine, &self.config, name, bytes.to_vec())
            .await
            .with_context(|| format!("refused: this is not a working {name} function"))?;
        if let CheckedFunction::Alerter(alerter) = &checked {
            for (org, sha256) in self.rule_set_versions(region).await? {
                let source = self.rule_source(&org, &sha256).await?;
                RuleSet::check(source, alerter).await.with_context(|| {
                    format!("refused: this alerter does not accept the rules of {org} in region {region}")
                })?;
            }
        }
        // Checked: free its compiled code now rather than after waiting for the hosts.
        drop(checked);
        let sha256 = self.storage.store_artifact(name.kind(), bytes).await?;
        let current = self.storage.current_artifact(region, name.as_str()).await?;
        if current.as_deref() != Some(sha256.as_str()) {
            self.stage(region, name, &sha256, progress).await?;
        }
        Ok(self
            .storage
            .assign_artifact(region, name.as_str(), &sha256)
            .await?)
    }

    /// Makes the version `region` ran under `name` before the current one current again,
    /// prepared by the region's hosts first like a deploy.
    pub async fn rollback(&self, name: FunctionName, region: &str) -> anyhow::Result<Assignment> {
        self.rollback_reporting(name, region, &mut |_| {}).await
    }

    /// [`rollback`](Self::rollback), reporting the hosts' preparation to `progress`.
    pub async fn rollback_reporting(
        &self,
        name: FunctionName,
        region: &str,
        progress: Progress<'_>,
    ) -> anyhow::Result<Assignment> {
        check_region(region)?;
        let no_earlier =
            || format!("{name} has no earlier version in region {region:?} to roll back to");
        let target = self
            .storage
            .rollback_target(region, name.as_str())
            .await?
            .with_context(no_earlier)?;
        self.stage(region, name, &target, progress).await?;
        self.storage
            .roll_back_artifact(region, name.as_str())
            .await?
            .with_context(no_earlier)
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

    /// Checks `text` (a rule file, TOML or JSON) as the rules of `org` with the alerter
    /// `region` runs (its assigned one, else the configured file) and, only if it passes,
    /// stores it as `rules:<org>` and makes it current in `region`; the region's hosts evaluate
    /// with it within a second. Refused, the error carries the alerter's message (naming the
    /// rule and field at fault) and nothing is stored.
    pub async fn apply_rules(
        &self,
        org: &str,
        text: &str,
        region: &str,
    ) -> anyhow::Result<AppliedRules> {
        check_region(region)?;
        check_org(org)?;
        let alerter = self.region_alerter(region).await?;
        let summaries = alerter
            .check_rules(text)
            .await
            .context("checking the rules")?
            .map_err(|message| anyhow::anyhow!("refused: the rules of {org}: {message}"))?;
        let assignment = self
            .storage
            .deploy_artifact(
                region,
                &rules_name(org),
                ArtifactKind::Rules,
                text.as_bytes(),
            )
            .await?;
        Ok(AppliedRules {
            assignment,
            rules: summaries.into_iter().map(|s| (s.id, s.version)).collect(),
        })
    }

    /// Makes the rule set `region` had for `org` before the current one current again.
    pub async fn rollback_rules(&self, org: &str, region: &str) -> anyhow::Result<Assignment> {
        check_region(region)?;
        check_org(org)?;
        self.storage
            .roll_back_artifact(region, &rules_name(org))
            .await?
            .with_context(|| {
                format!("{org} has no earlier rule set in region {region:?} to roll back to")
            })
    }

    /// The rule set history of `region` (or every region), by region and organisation, newest
    /// first, current ones marked; with the id and version of each rule, as the region's alerter
    /// reads them (`None` when there is no alerter to read them with, or it refuses them).
    pub async fn list_rules(&self, region: Option<&str>) -> anyhow::Result<Vec<RuleSetRecord>> {
        let mut alerters: HashMap<String, Option<AlerterFunction>> = HashMap::new();
        let mut records = Vec::new();
        for record in self.storage.artifact_history(region).await? {
            let Some(org) = rules_org(&record.name).map(str::to_owned) else {
                continue;
            };
            if !alerters.contains_key(&record.region) {
                let alerter = self.region_alerter(&record.region).await.ok();
                alerters.insert(record.region.clone(), alerter);
            }
            let rules = match &alerters[&record.region] {
                Some(alerter) => match self.rule_source(&org, &record.sha256).await {
                    Ok(source) => match alerter.check_rules(&source.text).await {
                        Ok(Ok(summaries)) => {
                            Some(summaries.into_iter().map(|s| (s.id, s.version)).collect())
                        }
                        _ => None,
                    },
                    Err(_) => None,
                },
                None => None,
            };
            records.push(RuleSetRecord { org, record, rules });
        }
        Ok(records)
    }

    /// The alerter `region` runs: its assigned version, else the configured component file.
    pub async fn region_alerter(&self, region: &str) -> anyhow::Result<AlerterFunction> {
        if let Some(CheckedFunction::Alerter(alerter)) =
            self.load_assigned(region, FunctionName::Alerter).await?
        {
            return Ok(alerter);
        }
        let path = self.config.alert_component();
        let engine = self.engine.clone();
        let region = region.to_owned();
        let alerter = tokio::task::spawn_blocking(move || {
            AlerterFunction::load_file(&engine, &path).with_context(|| {
                format!(
                    "no alerter to check rules with: region {region:?} has none deployed \
                     (`weir functions deploy alerter`), and {} does not load (build it with \
                     `cargo xtask components`, or set WEIR_FUNCTIONS_DIR)",
                    path.display()
                )
            })
        });
        Ok(alerter
            .await
            .context("the compiling task failed")??
            .with_deadline(self.config.alert_deadline()))
    }

    /// The versions (SHA-256) of `region`'s current rule sets, by organisation.
    async fn rule_set_versions(&self, region: &str) -> anyhow::Result<Vec<(String, String)>> {
        let assigned = self.storage.current_artifacts(region).await?;
        Ok(assigned
            .into_iter()
            .filter_map(|artifact| Some((rules_org(&artifact.name)?.to_owned(), artifact.sha256)))
            .collect())
    }

    /// The rule set version `sha256` of `org`, read from the registry.
    async fn rule_source(&self, org: &str, sha256: &str) -> anyhow::Result<RuleSource> {
        let bytes = self
            .storage
            .artifact_bytes(sha256)
            .await?
            .with_context(|| format!("rule set {sha256} is not in the registry"))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("rule set {sha256} of {org} is not UTF-8"))?;
        Ok(RuleSource {
            org: org.to_owned(),
            origin: format!("{} {} (registry)", rules_name(org), &sha256[..12]),
            text,
        })
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

/// What [`FunctionRegistry::apply_rules`] did.
#[derive(Debug, Clone)]
pub struct AppliedRules {
    /// The assignment of `rules:<org>` in the region.
    pub assignment: Assignment,
    /// The id and version of every rule of the set, in file order.
    pub rules: Vec<(String, u32)>,
}

/// One assignment of a rule set, for `weir rules list`.
#[derive(Debug, Clone)]
pub struct RuleSetRecord {
    /// The organisation.
    pub org: String,
    /// The assignment (`name` is `rules:<org>`).
    pub record: AssignmentRecord,
    /// The id and version of every rule, when the region's alerter could read them.
    pub rules: Option<Vec<(String, u32)>>,
}

/// Prefix of the registry names of rule sets: `rules:<org>`.
const RULES_PREFIX: &str = "rules:";

/// The registry name of `org`'s rule set.
pub fn rules_name(org: &str) -> String {
    format!("{RULES_PREFIX}{org}")
}

/// The organisation whose rule set `name` is, if it is one.
pub fn rules_org(name: &str) -> Option<&str> {
    name.strip_prefix(RULES_PREFIX)
}

/// An organisation is what device certificates carry in O: any 1 to 255 bytes but control
/// characters.
fn check_org(org: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !org.is_empty() && org.len() <= 255 && !org.chars().any(char::is_control),
        "invalid organisation {org:?}: use 1 to 255 bytes, no control characters"
    );
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_map_to_their_kind() {
        for name in FunctionName::ALL {
            assert_eq!(name.as_str().parse::<FunctionName>().unwrap(), name);
        }
        assert_eq!(FunctionName::Query.kind(), ArtifactKind::Query);
        assert_eq!(FunctionName::Alerter.kind(), ArtifactKind::Alerter);
        assert!("rules".parse::<FunctionName>().is_err());
    }

    #[test]
    fn rule_sets_are_named_after_their_organisation() {
        assert_eq!(rules_name("acme"), "rules:acme");
        assert_eq!(rules_org("rules:acme"), Some("acme"));
        assert_eq!(rules_org("validator"), None);
        assert!(check_org("Acme Corp").is_ok());
        assert!(check_org("").is_err());
        assert!(check_org("a\nb").is_err());
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
