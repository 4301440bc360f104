//! The one wasmtime `Engine` of a process and everything shared by its function calls: the
//! pooling allocator, the epoch ticker behind call deadlines, the artifact cache, the linkers
//! (one per kind of function: validators get WASI, HTTP functions get `wasi:http/types` and the
//! Spin capabilities), and the budgets that bound live instances: one for the ingest path
//! (validators), one for HTTP (query) functions, so neither can starve the other.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use super::artifacts::{ArtifactCache, CacheOutcome};
use super::error::{CallError, LoadError};
use super::instance::InstanceState;
use super::limits::Limits;
use super::signature::PublicKey;
use crate::capabilities::CapabilityState;

/// Granularity of call deadlines: the epoch advances this often.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Shared runtime for every function of the host; cheap to clone.
#[derive(Clone)]
pub struct FunctionEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<InstanceState>,
    http_linker: Linker<InstanceState>,
    limits: Limits,
    ingest_instances: InstanceBudget,
    http_instances: InstanceBudget,
    artifacts: Option<ArtifactCache>,
    /// When set, only components signed for this key load.
    signing_key: Option<PublicKey>,
    _ticker: EpochTicker,
}

impl FunctionEngine {
    /// Builds the engine. With `artifact_dir`, compiled components are cached there.
    pub fn new(limits: Limits, artifact_dir: Option<&Path>) -> anyhow::Result<Self> {
        Self::with_signing_key(limits, artifact_dir, None)
    }

    /// Like [`new`](Self::new); with `signing_key`, it refuses to load any component that is not
    /// signed with that key's private half (see [`signature`](super::signature)).
    pub fn with_signing_key(
        limits: Limits,
        artifact_dir: Option<&Path>,
        signing_key: Option<PublicKey>,
    ) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(&limits))
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;
        let mut linker = Linker::new(&engine);
        // Rust guests import wasi:cli and wasi:io through std even when they never print; the
        // context they get grants no files, sockets or environment.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        let mut http_linker = Linker::new(&engine);
        super::http_handler::add_to_linker(&mut http_linker)
            .map_err(anyhow::Error::from)
            .context("linking the HTTP function interfaces")?;
        let artifacts = artifact_dir
            .map(|dir| {
                ArtifactCache::open(dir, &engine)
                    .with_context(|| format!("opening artifact cache {}", dir.display()))
            })
            .transpose()?;
        Ok(FunctionEngine {
            inner: Arc::new(EngineInner {
                _ticker: EpochTicker::start(engine.clone()),
                engine,
                linker,
                http_linker,
                limits,
                ingest_instances: InstanceBudget::new(ingest_share(&limits)),
                http_instances: InstanceBudget::new(http_share(&limits)),
                artifacts,
                signing_key,
            }),
        })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Compiles `bytes` (through the artifact cache) and links it with the validator linker
    /// (WASI only). Export checks are left to the caller, which knows the world.
    pub(crate) fn prepare(
        &self,
        function: &str,
        bytes: &[u8],
    ) -> Result<PreparedComponent, LoadError> {
        self.prepare_with(&self.inner.linker, function, bytes)
    }

    /// Like [`prepare`](Self::prepare), with the HTTP function linker: WASI's stdio, clocks and
    /// random, `wasi:http/types`, and the Spin capabilities; no files, sockets or outgoing HTTP.
    pub(crate) fn prepare_http(
        &self,
        function: &str,
        bytes: &[u8],
    ) -> Result<PreparedComponent, LoadError> {
        self.prepare_with(&self.inner.http_linker, function, bytes)
    }

    fn prepare_with(
        &self,
        linker: &Linker<InstanceState>,
        function: &str,
        bytes: &[u8],
    ) -> Result<PreparedComponent, LoadError> {
        if let Some(key) = &self.inner.signing_key {
            key.verify(bytes).map_err(|error| LoadError::Unsigned {
                function: function.to_string(),
                reason: error.to_string(),
            })?;
        }
        let digest = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        let (component, outcome) = match &self.inner.artifacts {
            Some(cache) => cache.load_or_compile(&self.inner.engine, bytes, &digest),
            None => Component::new(&self.inner.engine, bytes).map(|c| (c, CacheOutcome::Compiled)),
        }
        .map_err(|error| LoadError::Invalid {
            function: function.to_string(),
            reason: format!("{error:#}"),
        })?;
        let instance_pre =
            linker
                .instantiate_pre(&component)
                .map_err(|error| LoadError::WorldMismatch {
                    function: function.to_string(),
                    world: "host capabilities",
                    reason: format!("{error:#}"),
                })?;
        tracing::info!(
            function,
            digest = %&digest[..12],
            cached = outcome == CacheOutcome::Hit,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "component prepared"
        );
        Ok(PreparedComponent {
            digest,
            from_cache: outcome == CacheOutcome::Hit,
            instance_pre,
        })
    }

    /// Reserves an ingest-path instance slot (validators) and a fresh store for one call.
    /// Waits at most one deadline for a slot, then gives up with [`CallError::Busy`] so
    /// overload pushes back instead of queueing without bound.
    pub(crate) async fn begin_call(&self) -> Result<Call, CallError> {
        self.begin_call_within(self.inner.limits.deadline).await
    }

    /// Like [`begin_call`](Self::begin_call) with a deadline of the caller's (alerters run on
    /// the ingest path's budget, under a deadline of their own).
    pub(crate) async fn begin_call_within(&self, deadline: Duration) -> Result<Call, CallError> {
        self.begin(
            &self.inner.ingest_instances,
            deadline,
            CapabilityState::default(),
        )
        .await
    }

    /// Like [`begin_call`](Self::begin_call) for an HTTP (query) function: a slot from the HTTP
    /// budget, a deadline of its own, and the per-instance state of the capabilities the
    /// component was granted. HTTP functions have their own share of the pool, so a flood of
    /// queries can never take the slots device batches need.
    pub(crate) async fn begin_http_call(
        &self,
        deadline: Duration,
        capabilities: CapabilityState,
    ) -> Result<Call, CallError> {
        self.begin(&self.inner.http_instances, deadline, capabilities)
            .await
    }

    async fn begin(
        &self,
        budget: &InstanceBudget,
        deadline: Duration,
        capabilities: CapabilityState,
    ) -> Result<Call, CallError> {
        let limits = self.inner.limits;
        let permit = tokio::time::timeout(deadline, budget.permits.clone().acquire_owned())
            .await
            .map_err(|_| CallError::Busy {
                capacity: budget.capacity,
                waited: deadline,
            })?
            .expect("the instance semaphore is never closed");
        let state = InstanceState::with_capabilities(limits.memory_bytes, capabilities);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.memory);
        // At every epoch tick the call yields to the executor, so that a long or looping call
        // never holds a worker thread (and the tasks queued on it) for its whole deadline; once
        // the deadline's ticks are spent it is interrupted (`Trap::Interrupt`).
        let mut ticks_left = deadline_ticks(deadline);
        store.epoch_deadline_callback(move |_| {
            ticks_left = ticks_left.saturating_sub(1);
            Ok(if ticks_left == 0 {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        Ok(Call {
            store,
            limits,
            deadline,
            _permit: permit,
            _engine: self.clone(),
        })
    }
}

/// A share of the instance pool: at most `capacity` calls of one kind run at once.
struct InstanceBudget {
    permits: Arc<Semaphore>,
    capacity: u32,
}

impl InstanceBudget {
    fn new(capacity: u32) -> Self {
        InstanceBudget {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }
}

/// Instances reserved for HTTP (query) functions: a quarter of the pool, at least one.
fn http_share(limits: &Limits) -> u32 {
    (limits.max_instances / 4).max(1)
}

/// Instances for the ingest path (validators): the rest of the pool, at least one.
fn ingest_share(limits: &Limits) -> u32 {
    limits
        .max_instances
        .saturating_sub(http_share(limits))
        .max(1)
}

/// Reads a component file for loading; the function is named after the file (`default_name`
/// when the path has no file stem).
pub(crate) fn read_component_file(
    path: &std::path::Path,
    default_name: &str,
) -> Result<(String, Vec<u8>), LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| default_name.to_string());
    Ok((name, bytes))
}

/// A compiled, linked component, not yet checked against a world's exports.
pub(crate) struct PreparedComponent {
    /// SHA-256 of the component bytes, hex.
    pub(crate) digest: String,
    /// Whether the compiled artifact came from the cache.
    pub(crate) from_cache: bool,
    pub(crate) instance_pre: InstancePre<InstanceState>,
}

/// One call in progress: its store and its instance slot.
pub(crate) struct Call {
    pub(crate) store: Store<InstanceState>,
    limits: Limits,
    deadline: Duration,
    _permit: OwnedSemaphorePermit,
    /// Keeps the epoch ticker running while the guest runs: a call still looping when every
    /// other handle of the engine is gone (a host shutting down) must still hit its deadline,
    /// or it would spin on its thread forever.
    _engine: FunctionEngine,
}

impl Call {
    /// Turns the outcome of running the guest into the call's result, naming why it failed.
    pub(crate) fn finish<R>(
        self,
        function: &str,
        outcome: wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let function = function.to_string();
        let state = self.store.data();
        if state.memory.exceeded() {
            return Err(CallError::MemoryExhausted {
                function,
                limit_bytes: self.limits.memory_bytes,
            });
        }
        if matches!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            return Err(CallError::DeadlineExceeded {
                function,
                deadline: self.deadline,
            });
        }
        let stderr = state.stderr_text();
        let message = if stderr.is_empty() {
            format!("{error:#}")
        } else {
            format!("{error:#}; guest stderr: {stderr}")
        };
        Err(CallError::Trapped { function, message })
    }
}

fn engine_config(limits: &Limits) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    // Room for both budgets at once, so a budget's permit always finds a pool slot.
    let instances = ingest_share(limits) + http_share(limits);
    pool.total_component_instances(instances);
    // A Rust component holds a handful of core instances (the program and small shims).
    pool.total_core_instances(instances * 8);
    pool.total_memories(instances * 2);
    pool.total_tables(instances * 4);
    pool.total_stacks(instances);
    pool.max_memory_size(limits.memory_bytes);
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

fn deadline_ticks(deadline: Duration) -> u64 {
    deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1) as u64
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own; stops on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
