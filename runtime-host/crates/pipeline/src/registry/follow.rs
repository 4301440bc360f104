//! Following the registry while serving: [`follow`] swaps what the region's assignments
//! change into the host's function slots and rule book.

use super::prepare::Prepared;
use super::*;

/// The slots a host's registry follower swaps versions into.
#[derive(Clone)]
pub struct Slots {
    /// The validator's slot.
    pub validator: Arc<FunctionSlot<ValidatorFunction>>,
    /// The query function's slot, when the host serves a query API.
    pub query: Option<Arc<FunctionSlot<HttpFunction>>>,
    /// Alerting (its alerter and rule book), when on.
    pub alerting: Option<Arc<Alerting>>,
}

impl Slots {
    /// The digest `name` runs now; `None` when the host has no slot for it.
    pub(super) fn running(&self, name: FunctionName) -> Option<String> {
        match name {
            FunctionName::Validator => Some(self.validator.current().digest().to_owned()),
            FunctionName::Query => Some(self.query.as_ref()?.current().digest().to_owned()),
            FunctionName::Alerter => Some(
                self.alerting
                    .as_ref()?
                    .function
                    .current()
                    .digest()
                    .to_owned(),
            ),
        }
    }

    /// Makes `function` the version new calls use; returns the digest it replaced. A new
    /// alerter must accept the rule sets in force (which it then checks into the book).
    async fn swap(&self, function: CheckedFunction) -> anyhow::Result<Option<String>> {
        Ok(match function {
            CheckedFunction::Validator(validator) => {
                Some(self.validator.replace(validator).digest().to_owned())
            }
            CheckedFunction::Query(function) => self
                .query
                .as_ref()
                .map(|query| query.replace(function).digest().to_owned()),
            CheckedFunction::Alerter(function) => match &self.alerting {
                Some(alerting) => Some(
                    alerting
                        .rules()
                        .switch_alerter(function)
                        .await?
                        .digest()
                        .to_owned(),
                ),
                None => None,
            },
        })
    }
}

/// Keeps the host's functions and rule sets on its region's assigned versions until `shutdown`.
/// Versions staged for the region are prepared by [`prepare_staged`](super::prepare_staged),
/// which this wakes on every change of the region, and taken from `prepared` when assigned.
pub async fn follow(
    registry: FunctionRegistry,
    slots: Slots,
    prepared: Arc<Prepared>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let region = registry.config.region.clone();
    let mut follower = Follower {
        registry,
        slots,
        prepared,
        metrics,
        refused: HashMap::new(),
        refused_rules: HashMap::new(),
        warned: HashSet::new(),
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
                    tracing::warn!(%error, "cannot listen for registry changes yet; checking every few seconds");
                }
            }
        }
        tokio::select! {
            change = next_change(&mut listener) => match change {
                Some(change) if change.concerns(&region) => follower.prepared.wake(),
                Some(_) => continue,
                None => {
                    listener = None;
                    continue;
                }
            },
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
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
    /// Versions prepared ahead of their assignment.
    prepared: Arc<Prepared>,
    metrics: Arc<Metrics>,
    /// The version of each name that failed to load here, not tried again until reassigned.
    refused: HashMap<FunctionName, String>,
    /// The same for the rule set of each organisation.
    refused_rules: HashMap<String, String>,
    /// What the host has no slot for and already said so (`query`, `alerter`, `rules`).
    warned: HashSet<&'static str>,
}

impl Follower {
    /// Loads and swaps in every assigned version that differs from the running one: the
    /// alerter first, then the rule sets (checked by the alerter now running), then the other
    /// functions (so a rule set never waits for a validator to compile).
    async fn catch_up(&mut self) {
        let region = self.registry.config.region.clone();
        let assigned = match self.registry.storage.current_artifacts(&region).await {
            Ok(assigned) => assigned,
            Err(error) => {
                tracing::debug!(%error, "cannot read the registry now; will retry");
                return;
            }
        };
        self.catch_up_function(&region, FunctionName::Alerter, &assigned)
            .await;
        self.catch_up_rules(&region, &assigned).await;
        for name in [FunctionName::Validator, FunctionName::Query] {
            self.catch_up_function(&region, name, &assigned).await;
        }
    }

    async fn catch_up_function(
        &mut self,
        region: &str,
        name: FunctionName,
        assigned: &[CurrentArtifact],
    ) {
        let Some(sha256) = assigned
            .iter()
            .find(|artifact| artifact.name == name.as_str())
            .map(|artifact| artifact.sha256.clone())
        else {
            return;
        };
        let sha256 = sha256.as_str();
        let Some(running) = self.slots.running(name) else {
            if self.warned.insert(name.as_str()) {
                match name {
                    FunctionName::Alerter => {
                        tracing::warn!(%region, function = %name, "a version is assigned, but this host started without alerting; restart it to run one");
                    }
                    _ => {
                        tracing::warn!(%region, function = %name, "a version is assigned, but this host started without a query API; restart it to serve one");
                    }
                }
            }
            return;
        };
        if running == sha256 || self.refused.get(&name).map(String::as_str) == Some(sha256) {
            return;
        }
        let loaded = match self.prepared.take(sha256).await {
            Some(prepared) => prepared.map_err(anyhow::Error::msg),
            None => self.registry.load_version(name, sha256).await,
        };
        let swapped = match loaded {
            Ok(function) => {
                let new = function.digest().to_owned();
                self.slots.swap(function).await.map(|old| (old, new))
            }
            Err(error) => Err(error),
        };
        match swapped {
            Ok((old, new)) => {
                self.refused.remove(&name);
                self.metrics.function_registry_load("swapped");
                tracing::info!(%region, function = %name, old = ?old, %new, "switched to the registry's version");
            }
            Err(error) => {
                self.refused.insert(name, sha256.to_owned());
                self.metrics.function_registry_load("refused");
                tracing::error!(%region, function = %name, version = %sha256, error = format!("{error:#}"), "the registry's version does not load here; the running one stays");
            }
        }
    }

    /// Checks and puts in force every assigned rule set that differs from the one in force;
    /// one refused here is logged and counted, and the organisation's rules in force stay.
    async fn catch_up_rules(&mut self, region: &str, assigned: &[CurrentArtifact]) {
        let sets: Vec<(String, String)> = assigned
            .iter()
            .filter_map(|a| Some((rules_org(&a.name)?.to_owned(), a.sha256.clone())))
            .collect();
        if sets.is_empty() {
            return;
        }
        let Some(alerting) = &self.slots.alerting else {
            if self.warned.insert("rules") {
                tracing::warn!(%region, "alert rule sets are assigned, but this host started without alerting (no alerter); restart it with one");
            }
            return;
        };
        let in_force = alerting.rules().registry_versions().await;
        for (org, sha256) in sets {
            if in_force.get(&org) == Some(&sha256) || self.refused_rules.get(&org) == Some(&sha256)
            {
                continue;
            }
            let applied = async {
                let source = self.registry.rule_source(&org, &sha256).await?;
                alerting.rules().apply_registry(source).await
            };
            match applied.await {
                Ok(()) => {
                    self.metrics.function_registry_load("swapped");
                    tracing::info!(%region, %org, old = ?in_force.get(&org), new = %sha256, "switched to the registry's rule set");
                    self.refused_rules.remove(&org);
                }
                Err(error) => {
                    self.metrics.function_registry_load("refused");
                    tracing::error!(%region, %org, version = %sha256, error = format!("{error:#}"), "the registry's rule set is refused here; the rules in force stay");
                    self.refused_rules.insert(org, sha256);
                }
            }
        }
    }
}
