//! Host capabilities of HTTP functions, one module per capability in the way Spin's "factors"
//! are built: each links its WIT bindings into the `Linker`, holds the host-wide state it needs
//! (a pool, a client) and builds the per-instance state of every call (its open connections).
//!
//! - [`postgres`]: `spin:postgres/postgres@4.0.0` over a read-only pool of the host's database;
//! - [`redis`]: `fermyon:spin/redis@2.0.0` over the host's Redis, read-only for query functions;
//! - [`variables`]: `fermyon:spin/variables@2.0.0` from the component's configured variables.
//!
//! What a component may reach is its [`ComponentGrants`]: the outbound hosts it declared and its
//! variables, like a `spin.toml` component. A capability answers a request the grants do not
//! cover with the interface's own error variant, never with a trap; only a guest misusing a
//! resource handle traps. The WIT files are vendored, unchanged, in `wit/spin/`.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::Linker;

pub mod outbound;
pub mod postgres;
pub mod redis;
pub mod variables;

pub use outbound::AllowedHosts;
pub use postgres::{PgConnection, PostgresBackend};
pub use redis::{RedisAccess, RedisBackend, RedisConnection};

/// Host bindings of the `weir:spin-host/query-host` world: the three Spin interfaces.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../../wit/spin",
        world: "weir:spin-host/query-host",
        // Guests call these synchronously; on the host they wait on pools and sockets, so they
        // are async (a slow query never blocks a tokio worker) and may trap on misuse.
        imports: { default: async | trappable },
        additional_derives: [PartialEq],
        with: {
            "fermyon:spin/redis.connection": super::RedisConnection,
            "spin:postgres/postgres.connection": super::PgConnection,
        },
    });
}

/// What one component may use: the outbound hosts it declared (`spin.toml`'s
/// `allowed_outbound_hosts`, e.g. `postgres://db:5432`) and its variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentGrants {
    /// `scheme://host:port` entries; `*` stands for any scheme, host or port.
    pub allowed_outbound_hosts: Vec<String>,
    /// Values `fermyon:spin/variables.get` answers, by name.
    pub variables: HashMap<String, String>,
}

/// The host's side of every capability: the backends components reach. Cheap to clone.
#[derive(Clone, Default)]
pub struct HostCapabilities {
    postgres: Option<Arc<PostgresBackend>>,
    redis: Option<Arc<RedisBackend>>,
}

impl HostCapabilities {
    /// Capabilities over the host's PostgreSQL and Redis; a backend left `None` is refused to
    /// every component.
    pub fn new(postgres: Option<PostgresBackend>, redis: Option<RedisBackend>) -> Self {
        HostCapabilities {
            postgres: postgres.map(Arc::new),
            redis: redis.map(Arc::new),
        }
    }

    /// Checks `grants` and binds them to these backends, once per component version.
    pub fn grant(&self, grants: &ComponentGrants) -> anyhow::Result<Granted> {
        let allowed = AllowedHosts::parse(&grants.allowed_outbound_hosts)
            .map_err(|reason| anyhow::anyhow!("invalid allowed_outbound_hosts entry {reason}"))?;
        for name in grants.variables.keys() {
            variables::check_name(name)
                .map_err(|reason| anyhow::anyhow!("invalid variable name `{name}`: {reason}"))?;
        }
        Ok(Granted {
            inner: Arc::new(GrantedInner {
                allowed,
                variables: grants.variables.clone(),
                postgres: self.postgres.clone(),
                redis: self.redis.clone(),
            }),
        })
    }
}

/// A component's grants bound to the host's backends: what its calls may use. Cheap to clone.
#[derive(Clone)]
pub struct Granted {
    inner: Arc<GrantedInner>,
}

struct GrantedInner {
    allowed: AllowedHosts,
    variables: HashMap<String, String>,
    postgres: Option<Arc<PostgresBackend>>,
    redis: Option<Arc<RedisBackend>>,
}

impl Granted {
    /// The per-instance state of one call.
    pub(crate) fn instance_state(&self) -> CapabilityState {
        let inner = &self.inner;
        CapabilityState {
            postgres: postgres::PostgresState::new(inner.postgres.clone(), inner.allowed.clone()),
            redis: redis::RedisState::new(inner.redis.clone(), inner.allowed.clone()),
            variables: variables::VariablesState::new(inner.variables.clone()),
        }
    }
}

/// Per-instance state of every capability; the default grants nothing (validators).
#[derive(Default)]
pub(crate) struct CapabilityState {
    pub(crate) postgres: postgres::PostgresState,
    pub(crate) redis: redis::RedisState,
    pub(crate) variables: variables::VariablesState,
}

/// Store data that can lend each capability its view (its state and the resource table).
pub(crate) trait CapabilityView: Send + 'static {
    fn postgres(&mut self) -> postgres::PostgresView<'_>;
    fn redis(&mut self) -> redis::RedisView<'_>;
    fn variables(&mut self) -> &mut variables::VariablesState;
}

/// Links the three Spin interfaces into `linker`.
pub(crate) fn add_to_linker<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    postgres::add_to_linker(linker, T::postgres)?;
    redis::add_to_linker(linker, T::redis)?;
    variables::add_to_linker(linker, T::variables)?;
    Ok(())
}
