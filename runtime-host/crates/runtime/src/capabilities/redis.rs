//! `fermyon:spin/redis@2.0.0` over the host's Redis.
//!
//! `open(address)` succeeds only for the Redis the host itself uses (same host, port and
//! database number), and only if the component declared it in `allowed_outbound_hosts`. The
//! connection is made with the host's own URL. Command failures come back as the interface's
//! `error`, as Spin reports them; replies are flattened into `redis-result`s the way Spin does
//! (an `HGETALL` is a flat list).
//!
//! A backend grants one [`RedisAccess`]:
//! - [`RedisAccess::ReadOnly`] (the query API): only the read commands of [`READ_COMMANDS`]
//!   run, every other command (`SET`, `DEL`, `PUBLISH`, `SELECT`, `CLIENT`, `KEYS`…) is refused
//!   with an `error`. As no command can change a connection's state, every instance shares one
//!   reconnecting connection, opened on first use: a request costs no TCP handshake.
//! - [`RedisAccess::ReadWrite`]: every command runs, and every `open` gets a connection of its
//!   own, so a guest's `SELECT`, `CLIENT` or `SUBSCRIBE` never reaches another's.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, Value};
use tokio::sync::OnceCell;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::fermyon::spin::redis::{self as wit, Error, RedisParameter, RedisResult};
use super::outbound::{AllowedHosts, Endpoint};

/// How long connecting, and each command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Connections one instance may hold at once.
const MAX_CONNECTIONS: usize = 4;

/// The commands a read-only grant runs: reads of strings, hashes, sets, sorted sets, lists and
/// streams, each bounded by its key (no `KEYS` or `SCAN` walk over the whole database).
pub const READ_COMMANDS: &[&str] = &[
    "GET",
    "MGET",
    "STRLEN",
    "GETRANGE",
    "EXISTS",
    "TYPE",
    "TTL",
    "PTTL",
    "HGET",
    "HMGET",
    "HGETALL",
    "HKEYS",
    "HVALS",
    "HLEN",
    "HEXISTS",
    "HSTRLEN",
    "SMEMBERS",
    "SISMEMBER",
    "SMISMEMBER",
    "SCARD",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANGEBYSCORE",
    "ZSCORE",
    "ZMSCORE",
    "ZCARD",
    "ZCOUNT",
    "ZRANK",
    "ZREVRANK",
    "LRANGE",
    "LLEN",
    "LINDEX",
    "XRANGE",
    "XREVRANGE",
    "XLEN",
    "PING",
];

/// What a component may do with the host's Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisAccess {
    /// Only [`READ_COMMANDS`], over one shared connection.
    ReadOnly,
    /// Every command, over a connection per `open`.
    ReadWrite,
}

/// The host's Redis, as components may reach it.
pub struct RedisBackend {
    client: redis::Client,
    target: RedisTarget,
    access: RedisAccess,
    /// The connection read-only instances share, opened on first use.
    shared: OnceCell<ConnectionManager>,
}

/// What identifies a Redis: its endpoint and database number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RedisTarget {
    endpoint: Endpoint,
    db: i64,
}

impl RedisTarget {
    fn parse(url: &str) -> Result<Self, String> {
        let info = url
            .into_connection_info()
            .map_err(|error| format!("not a Redis URL: {error}"))?;
        let (host, port) = match &info.addr {
            ConnectionAddr::Tcp(host, port) => (host, *port),
            ConnectionAddr::TcpTls { host, port, .. } => (host, *port),
            _ => return Err("only TCP Redis addresses are supported".into()),
        };
        Ok(RedisTarget {
            endpoint: Endpoint::new("redis", host, port),
            db: info.redis.db,
        })
    }
}

impl RedisBackend {
    /// The Redis at `url` (the host's `redis_url`), with `access`. Nothing is connected until
    /// a guest opens.
    pub fn new(url: &str, access: RedisAccess) -> anyhow::Result<Self> {
        let target = RedisTarget::parse(url).map_err(anyhow::Error::msg)?;
        let client = redis::Client::open(url)?;
        Ok(RedisBackend {
            client,
            target,
            access,
            shared: OnceCell::new(),
        })
    }

    /// A connection for one `open`: the shared one when read-only, a new one otherwise.
    async fn connect(&self) -> redis::RedisResult<GuestConnection> {
        match self.access {
            RedisAccess::ReadOnly => {
                let shared = self
                    .shared
                    .get_or_try_init(|| {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(REDIS_TIMEOUT)
                            .set_response_timeout(REDIS_TIMEOUT)
                            .set_number_of_retries(0)
                            .set_max_delay(500);
                        ConnectionManager::new_with_config(self.client.clone(), config)
                    })
                    .await?;
                Ok(GuestConnection::Shared(shared.clone()))
            }
            RedisAccess::ReadWrite => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT);
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(GuestConnection::Own(connection))
            }
        }
    }

    /// `Err` with the reason when this backend's access does not run `command`.
    fn check(&self, command: &str) -> Result<(), Error> {
        match self.access {
            RedisAccess::ReadWrite => Ok(()),
            RedisAccess::ReadOnly if is_read_command(command) => Ok(()),
            RedisAccess::ReadOnly => Err(Error::Other(format!(
                "`{command}` is not allowed: this component has read-only access to Redis"
            ))),
        }
    }

    /// The `allowed_outbound_hosts` entry that grants this Redis.
    pub fn allowed_host(&self) -> String {
        self.target.endpoint.as_allowed_host()
    }
}

/// Whether `command` is one of [`READ_COMMANDS`] (any case).
fn is_read_command(command: &str) -> bool {
    READ_COMMANDS
        .iter()
        .any(|read| read.eq_ignore_ascii_case(command))
}

/// A guest's open Redis connection.
pub struct RedisConnection {
    connection: GuestConnection,
}

/// The connection behind a guest's handle.
#[derive(Clone)]
enum GuestConnection {
    /// The read-only connection every instance shares.
    Shared(ConnectionManager),
    /// A connection of this handle's own.
    Own(MultiplexedConnection),
}

impl GuestConnection {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let value = match self {
            GuestConnection::Shared(connection) => connection.req_packed_command(command).await?,
            GuestConnection::Own(connection) => connection.req_packed_command(command).await?,
        };
        redis::from_owned_redis_value(value)
    }
}

/// Per-instance state: the backend if granted, the component's allowed hosts, and how many
/// connections are open.
#[derive(Default)]
pub(crate) struct RedisState {
    backend: Option<std::sync::Arc<RedisBackend>>,
    allowed: AllowedHosts,
    open: usize,
}

impl RedisState {
    pub(crate) fn new(
        backend: Option<std::sync::Arc<RedisBackend>>,
        allowed: AllowedHosts,
    ) -> Self {
        RedisState {
            backend,
            allowed,
            open: 0,
        }
    }
}

/// What the Redis host functions work on: the instance's state and its resource table.
pub(crate) struct RedisView<'a> {
    pub(crate) state: &'a mut RedisState,
    pub(crate) table: &'a mut ResourceTable,
}

impl RedisView<'_> {
    /// Runs `command` on the connection behind `handle`, if the grant allows it.
    async fn run<T: redis::FromRedisValue>(
        &mut self,
        handle: &Resource<RedisConnection>,
        command: &redis::Cmd,
    ) -> wasmtime::Result<Result<T, Error>> {
        // A handle the guest does not own is misuse: that traps.
        let mut connection = self.table.get(handle)?.connection.clone();
        if let Some(backend) = &self.state.backend
            && let Err(refused) = backend.check(&command_name(command))
        {
            return Ok(Err(refused));
        }
        Ok(
            match tokio::time::timeout(REDIS_TIMEOUT, connection.query::<T>(command)).await {
                Ok(reply) => reply.map_err(command_error),
                Err(_) => Err(Error::Other(format!(
                    "Redis did not answer within {REDIS_TIMEOUT:?}"
                ))),
            },
        )
    }
}

/// The command's name: its first argument.
fn command_name(command: &redis::Cmd) -> String {
    match command.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
        _ => String::new(),
    }
}

fn command_error(error: redis::RedisError) -> Error {
    match error.kind() {
        redis::ErrorKind::TypeError => Error::TypeError,
        _ => Error::Other(error.to_string()),
    }
}

impl wit::Host for RedisView<'_> {}

impl wit::HostConnection for RedisView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, Error>> {
        let Ok(asked) = RedisTarget::parse(&address) else {
            return Ok(Err(Error::InvalidAddress));
        };
        let Some(backend) = self.state.backend.clone() else {
            return Ok(Err(Error::InvalidAddress));
        };
        // Spin answers `invalid-address` for an address the component may not reach.
        if !self.state.allowed.allows(&asked.endpoint) || asked != backend.target {
            return Ok(Err(Error::InvalidAddress));
        }
        if self.state.open >= MAX_CONNECTIONS {
            return Ok(Err(Error::TooManyConnections));
        }
        // Bounded here as well: a reconnecting connection may otherwise wait out its backoff.
        let connection = match tokio::time::timeout(REDIS_TIMEOUT, backend.connect()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                return Ok(Err(Error::Other(format!("Redis unavailable: {error}"))));
            }
            Err(_) => {
                let message = format!("Redis unavailable: no connection within {REDIS_TIMEOUT:?}");
                return Ok(Err(Error::Other(message)));
            }
        };
        let handle = self.table.push(RedisConnection { connection })?;
        self.state.open += 1;
        Ok(Ok(handle))
    }

    async fn publish(
        &mut self,
        handle: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let command = redis::cmd("PUBLISH").arg(channel).arg(payload).clone();
        Ok(self.run::<i64>(&handle, &command).await?.map(drop))
    }

    async fn get(
        &mut self,
        handle: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        self.run(&handle, redis::cmd("GET").arg(key)).await
    }

    async fn set(
        &mut self,
        handle: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.run(&handle, redis::cmd("SET").arg(key).arg(value))
            .await
    }

    async fn incr(
        &mut self,
        handle: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        self.run(&handle, redis::cmd("INCR").arg(key)).await
    }

    async fn del(
        &mut self,
        handle: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        self.run(&handle, redis::cmd("DEL").arg(keys)).await
    }

    async fn sadd(
        &mut self,
        handle: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        self.run(&handle, redis::cmd("SADD").arg(key).arg(values))
            .await
    }

    async fn smembers(
        &mut self,
        handle: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        self.run(&handle, redis::cmd("SMEMBERS").arg(key)).await
    }

    async fn srem(
        &mut self,
        handle: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        self.run(&handle, redis::cmd("SREM").arg(key).arg(values))
            .await
    }

    async fn execute(
        &mut self,
        handle: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(value) => cmd.arg(value),
                RedisParameter::Binary(value) => cmd.arg(value),
            };
        }
        let reply = match self.run::<Value>(&handle, &cmd).await? {
            Ok(reply) => reply,
            Err(error) => return Ok(Err(error)),
        };
        let mut results = Vec::new();
        Ok(flatten(reply, &mut results).map(|()| results))
    }

    async fn drop(&mut self, handle: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.state.open = self.state.open.saturating_sub(1);
        Ok(())
    }
}

/// Spin's reading of a reply: arrays and sets are flattened, `OK` is a status, doubles and big
/// numbers travel as their text, booleans as 0/1; maps and other RESP3 shapes are refused.
fn flatten(value: Value, into: &mut Vec<RedisResult>) -> Result<(), Error> {
    match value {
        Value::Nil => into.push(RedisResult::Nil),
        Value::Int(value) => into.push(RedisResult::Int64(value)),
        Value::BulkString(bytes) => into.push(RedisResult::Binary(bytes)),
        Value::SimpleString(status) => into.push(RedisResult::Status(status)),
        Value::Okay => into.push(RedisResult::Status("OK".into())),
        Value::Double(value) => into.push(RedisResult::Binary(value.to_string().into_bytes())),
        Value::Boolean(value) => into.push(RedisResult::Int64(value.into())),
        Value::Array(values) | Value::Set(values) => {
            for value in values {
                flatten(value, into)?;
            }
        }
        Value::ServerError(error) => return Err(Error::Other(format!("{error:?}"))),
        other => {
            return Err(Error::Other(format!(
                "a Redis reply of this shape is not supported: {other:?}"
            )));
        }
    }
    Ok(())
}

struct Redis;

impl HasData for Redis {
    type Data<'a> = RedisView<'a>;
}

pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> RedisView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Redis>(linker, get)
}

#[cfg(test)]
mod tests {
    use weir_services::RedisServer;

    use super::wit::HostConnection as _;
    use super::*;

    #[test]
    fn targets_compare_host_port_and_database() {
        let host = RedisTarget::parse("redis://127.0.0.1:6379/").unwrap();
        assert_eq!(RedisTarget::parse("redis://127.0.0.1").unwrap(), host);
        assert_eq!(
            RedisTarget::parse("redis://:pw@127.0.0.1:6379/0").unwrap(),
            host
        );
        assert_ne!(
            RedisTarget::parse("redis://127.0.0.1:6379/1").unwrap(),
            host
        );
        assert_ne!(RedisTarget::parse("redis://localhost:6379").unwrap(), host);
        assert!(RedisTarget::parse("http://x").is_err());
    }

    #[test]
    fn replies_flatten_like_spin() {
        let reply = Value::Array(vec![
            Value::BulkString(b"k".to_vec()),
            Value::Array(vec![Value::Int(3), Value::Nil]),
            Value::Okay,
        ]);
        let mut results = Vec::new();
        flatten(reply, &mut results).unwrap();
        assert_eq!(
            results,
            [
                RedisResult::Binary(b"k".to_vec()),
                RedisResult::Int64(3),
                RedisResult::Nil,
                RedisResult::Status("OK".into()),
            ]
        );
        assert!(flatten(Value::Map(vec![]), &mut Vec::new()).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_hosts_redis_answers_and_nothing_else_is_reached() {
        let server = tokio::task::spawn_blocking(RedisServer::start_temporary)
            .await
            .unwrap()
            .expect("starting Redis");
        let url = server.url();
        let backend = RedisBackend::new(&url, RedisAccess::ReadWrite).unwrap();
        let allowed = AllowedHosts::parse(&[backend.allowed_host()]).unwrap();
        let mut state = RedisState::new(Some(std::sync::Arc::new(backend)), allowed);
        let mut table = ResourceTable::new();
        let mut redis = RedisView {
            state: &mut state,
            table: &mut table,
        };
        let other_db = format!("{}3", url);
        assert!(matches!(
            redis.open(other_db).await.unwrap(),
            Err(Error::InvalidAddress)
        ));
        assert!(matches!(
            redis.open("redis://10.0.0.1:6379".into()).await.unwrap(),
            Err(Error::InvalidAddress)
        ));
        let handle = redis
            .open(url)
            .await
            .unwrap()
            .expect("the host's Redis opens");
        let borrow = || Resource::<RedisConnection>::new_borrow(handle.rep());
        assert_eq!(
            redis
                .set(borrow(), "k".into(), b"v".to_vec())
                .await
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            redis.get(borrow(), "k".into()).await.unwrap(),
            Ok(Some(b"v".to_vec()))
        );
        assert_eq!(redis.get(borrow(), "none".into()).await.unwrap(), Ok(None));
        assert_eq!(redis.incr(borrow(), "n".into()).await.unwrap(), Ok(1));
        assert_eq!(
            redis
                .incr(borrow(), "k".into())
                .await
                .unwrap()
                .map_err(|_| ()),
            Err(())
        );
        let hash = vec![
            RedisParameter::Binary(b"h".to_vec()),
            RedisParameter::Binary(b"f".to_vec()),
            RedisParameter::Int64(7),
        ];
        assert_eq!(
            redis.execute(borrow(), "HSET".into(), hash).await.unwrap(),
            Ok(vec![RedisResult::Int64(1)])
        );
        assert_eq!(
            redis
                .execute(
                    borrow(),
                    "HGETALL".into(),
                    vec![RedisParameter::Binary(b"h".to_vec())]
                )
                .await
                .unwrap(),
            Ok(vec![
                RedisResult::Binary(b"f".to_vec()),
                RedisResult::Binary(b"7".to_vec())
            ])
        );
        assert!(matches!(
            redis
                .execute(borrow(), "NOSUCHCOMMAND".into(), vec![])
                .await
                .unwrap(),
            Err(Error::Other(_))
        ));
        redis.drop(handle).await.unwrap();
        assert!(
            redis
                .get(Resource::new_borrow(0), "k".into())
                .await
                .is_err(),
            "misuse traps"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_only_grant_reads_and_is_refused_every_write() {
        let server = tokio::task::spawn_blocking(RedisServer::start_temporary)
            .await
            .unwrap()
            .expect("starting Redis");
        let url = server.url();
        let mut writer = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let () = redis::cmd("HSET")
            .arg("h")
            .arg("f")
            .arg("v")
            .query_async(&mut writer)
            .await
            .unwrap();
        let backend = RedisBackend::new(&url, RedisAccess::ReadOnly).unwrap();
        let allowed = AllowedHosts::parse(&[backend.allowed_host()]).unwrap();
        let mut state = RedisState::new(Some(std::sync::Arc::new(backend)), allowed);
        let mut table = ResourceTable::new();
        let mut redis = RedisView {
            state: &mut state,
            table: &mut table,
        };
        let handle = redis.open(url).await.unwrap().expect("opens");
        let borrow = || Resource::<RedisConnection>::new_borrow(handle.rep());
        let key = |k: &[u8]| vec![RedisParameter::Binary(k.to_vec())];
        assert_eq!(
            redis
                .execute(borrow(), "hgetall".into(), key(b"h"))
                .await
                .unwrap(),
            Ok(vec![
                RedisResult::Binary(b"f".to_vec()),
                RedisResult::Binary(b"v".to_vec())
            ])
        );
        assert_eq!(redis.get(borrow(), "none".into()).await.unwrap(), Ok(None));
        fn refused<T>(result: Result<T, Error>) -> bool {
            matches!(result, Err(Error::Other(message)) if message.contains("read-only"))
        }
        assert!(refused(
            redis
                .set(borrow(), "k".into(), b"v".to_vec())
                .await
                .unwrap()
        ));
        assert!(refused(
            redis.del(borrow(), vec!["h".into()]).await.unwrap()
        ));
        assert!(refused(redis.incr(borrow(), "n".into()).await.unwrap()));
        assert!(refused(
            redis
                .publish(borrow(), "c".into(), b"x".to_vec())
                .await
                .unwrap()
        ));
        for command in [
            "FLUSHALL", "SELECT", "CLIENT", "KEYS", "CONFIG", "EVAL", "HSET",
        ] {
            assert!(
                refused(
                    redis
                        .execute(borrow(), command.into(), key(b"h"))
                        .await
                        .unwrap()
                ),
                "{command} is refused"
            );
        }
        let exists: i64 = redis::cmd("EXISTS")
            .arg("h")
            .query_async(&mut writer)
            .await
            .unwrap();
        assert_eq!(exists, 1, "nothing was written or deleted");
    }
}
