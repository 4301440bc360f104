//! The host's side of staged deploys: its entry in the roll of hosts a deploy waits for
//! ([`enrol`], refreshed every [`HEARTBEAT_INTERVAL`], removed at shutdown), and
//! [`prepare_staged`], which compiles and checks every version staged for the host's region
//! ahead of its assignment, keeps it in [`Prepared`] and records the outcome; the follower then
//! swaps the prepared version in when it is assigned, instead of compiling it then.

use std::collections::HashSet;
use std::hash::BuildHasher as _;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;
use weir_storage::PrepareOutcome;

use super::follow::Slots;
use super::*;

/// How often a host refreshes its entry in the roll of hosts.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A host not seen for this long is not waited for by deploys (it died without saying so).
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);
/// Stages older than this are ignored: a deploy that gave up (or died) before assigning.
const STAGE_TTL: Duration = Duration::from_secs(600);
/// A prepared version no longer staged is kept this long for its assignment, then dropped.
const KEEP_UNSTAGED: Duration = Duration::from_secs(60);
/// Hosts silent this long are removed from the roll.
const FORGET_SILENT: Duration = Duration::from_secs(24 * 3600);

/// A name for this host process no other has: the machine's host name (the pod's name under
/// Kubernetes), the process id and a random suffix.
pub fn host_id() -> String {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "weir".to_owned());
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    format!("{name}-{}-{:08x}", std::process::id(), random as u32)
}

/// Versions compiled ahead of their assignment, by SHA-256.
#[derive(Default)]
pub struct Prepared {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Wakes [`prepare_staged`]: the region's registry changed.
    wake: Notify,
}

struct Entry {
    /// `None` until prepared, and again once taken; locked while preparing.
    function: tokio::sync::Mutex<Option<Result<CheckedFunction, String>>>,
    /// When the version was last seen staged.
    staged_seen: Mutex<Instant>,
}

impl Prepared {
    /// Asks [`prepare_staged`] to look at the region's stages again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Takes the prepared version `sha256` (waiting for a preparation in progress); `None` when
    /// it was not prepared here. An `Err` is why it was refused here.
    pub async fn take(&self, sha256: &str) -> Option<Result<CheckedFunction, String>> {
        let entry = self.lock().get(sha256).cloned()?;
        let function = entry.function.lock().await.take();
        self.lock().remove(sha256);
        function
    }

    fn entry(&self, sha256: &str) -> Arc<Entry> {
        let entry = self
            .lock()
            .entry(sha256.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    function: tokio::sync::Mutex::new(None),
                    staged_seen: Mutex::new(Instant::now()),
                })
            })
            .clone();
        *entry
            .staged_seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Instant::now();
        entry
    }

    /// Notes that `sha256` is still staged, so that [`prune`](Self::prune) keeps it.
    fn still_staged(&self, sha256: &str) {
        if let Some(entry) = self.lock().get(sha256) {
            *entry
                .staged_seen
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()) = Instant::now();
        }
    }

    /// Drops what was prepared for stages gone for [`KEEP_UNSTAGED`].
    fn prune(&self, staged: &HashSet<&str>) {
        self.lock().retain(|sha256, entry| {
            let seen = *entry
                .staged_seen
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            staged.contains(sha256.as_str()) || seen.elapsed() < KEEP_UNSTAGED
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Enrols `host_id` in the roll of `registry`'s region now (so a deploy right after the host
/// started waits for it), forgetting hosts silent for a day.
pub async fn enrol(registry: &FunctionRegistry, host_id: &str) -> anyhow::Result<()> {
    registry
        .storage
        .host_seen(host_id, &registry.config.region)
        .await
        .context("enrolling the host in the function registry's roll of hosts")?;
    match registry.storage.forget_silent_hosts(FORGET_SILENT).await {
        Ok(0) => {}
        Ok(forgotten) => tracing::info!(forgotten, "forgot hosts silent for a day"),
        Err(error) => tracing::debug!(%error, "cannot forget silent hosts now"),
    }
    Ok(())
}

/// Refreshes `host_id`'s entry in the roll every [`HEARTBEAT_INTERVAL`] until `shutdown`, then
/// removes it, so that deploys stop waiting for this host.
pub async fn stay_enrolled(
    registry: FunctionRegistry,
    host_id: String,
    shutdown: CancellationToken,
) {
    let region = registry.config.region.clone();
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = registry.storage.host_seen(&host_id, &region).await {
                    tracing::debug!(%error, "cannot refresh this host in the registry's roll now");
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    if let Err(error) = registry.storage.host_gone(&host_id).await {
        tracing::warn!(%error, "cannot remove this host from the registry's roll; deploys skip it once it has been silent for 10 s");
    }
}

/// Prepares every function version staged for the host's region (woken by the follower, and
/// every [`CHECK_INTERVAL`]) until `shutdown`.
pub async fn prepare_staged(
    registry: FunctionRegistry,
    slots: Slots,
    prepared: Arc<Prepared>,
    host_id: String,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut preparer = Preparer {
        registry,
        slots,
        prepared,
        host_id,
        metrics,
        handled: HashSet::new(),
    };
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = preparer.prepared.wake.notified() => {}
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        preparer.pass().await;
    }
}

struct Preparer {
    registry: FunctionRegistry,
    slots: Slots,
    prepared: Arc<Prepared>,
    host_id: String,
    metrics: Arc<Metrics>,
    /// The stages (version, staged at) already answered.
    handled: HashSet<(String, i64)>,
}

impl Preparer {
    async fn pass(&mut self) {
        let region = self.registry.config.region.clone();
        let staged = match self
            .registry
            .storage
            .staged_artifacts(&region, STAGE_TTL)
            .await
        {
            Ok(staged) => staged,
            Err(error) => {
                tracing::debug!(%error, "cannot read the staged versions now; will retry");
                return;
            }
        };
        for stage in &staged {
            let key = (stage.sha256.clone(), stage.staged_at_ms);
            if self.handled.contains(&key) {
                self.prepared.still_staged(&stage.sha256);
                continue;
            }
            let Ok(name) = stage.name.parse::<FunctionName>() else {
                continue;
            };
            let (outcome, detail) = self.prepare(name, &stage.sha256).await;
            let recorded = self
                .registry
                .storage
                .record_prepared(
                    &self.host_id,
                    &region,
                    &stage.sha256,
                    outcome,
                    detail.as_deref(),
                )
                .await;
            match recorded {
                Ok(()) => {
                    self.handled.insert(key);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot record a prepared version now; will retry");
                }
            }
        }
        let staged: HashSet<&str> = staged.iter().map(|stage| stage.sha256.as_str()).collect();
        self.handled
            .retain(|(sha256, _)| staged.contains(sha256.as_str()));
        self.prepared.prune(&staged);
    }

    /// Compiles and checks version `sha256` of `name` into [`Prepared`] (unless it runs
    /// already, or the host runs nothing under `name`).
    async fn prepare(&self, name: FunctionName, sha256: &str) -> (PrepareOutcome, Option<String>) {
        let region = &self.registry.config.region;
        let Some(running) = self.slots.running(name) else {
            return (PrepareOutcome::Skipped, None);
        };
        if running == sha256 {
            return (PrepareOutcome::Ready, None);
        }
        let entry = self.prepared.entry(sha256);
        let mut function = entry.function.lock().await;
        if function.is_none() {
            let started = Instant::now();
            let loaded = self.registry.load_version(name, sha256).await;
            match &loaded {
                Ok(_) => {
                    self.metrics.function_registry_load("prepared");
                    tracing::info!(%region, function = %name, version = %sha256, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "prepared a staged version");
                }
                Err(error) => {
                    self.metrics.function_registry_load("refused");
                    tracing::error!(%region, function = %name, version = %sha256, error = format!("{error:#}"), "a staged version does not load here");
                }
            }
            *function = Some(loaded.map_err(|error| format!("{error:#}")));
        }
        match function.as_ref() {
            Some(Err(reason)) => (PrepareOutcome::Refused, Some(reason.clone())),
            _ => (PrepareOutcome::Ready, None),
        }
    }
}
