//! `spin:postgres/postgres@4.0.0` over a read-only pool of the host's database.
//!
//! `open(address)` succeeds only for the database the host itself holds (same host, port and
//! database; a user name, if the address has one, must be the pool's) and only if the component
//! declared that host in `allowed_outbound_hosts`. The connection is then a connection of the
//! backend's own pool, with the backend's credentials: a password in the address is not used.
//! An instance holds at most [`MAX_CONNECTIONS`] at once.
//!
//! The pool is not the ingest path's: it logs in as a role that may only read (`weir_query`,
//! created by the schema migrations, `SELECT` on `series` and `points`), every session starts
//! with `default_transaction_read_only` and a `statement_timeout`, and a connection goes back to
//! the pool only after `ROLLBACK; RESET ALL` (a guest may have left a transaction open or
//! changed settings). A connection dropped while a query runs (an instance torn down at its
//! deadline) is detached from the pool and its query cancelled. Values are converted in
//! [`values`], following Spin's mapping.

mod values;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, NoTls};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::spin::postgres::postgres::{
    self as wit, DbError, Error, ParameterValue, QueryError, RowSet,
};
use super::outbound::{AllowedHosts, Endpoint};

/// Connections one instance may hold at once.
pub const MAX_CONNECTIONS: usize = 2;

/// The host's database, as components may reach it.
pub struct PostgresBackend {
    pool: Pool,
    target: PostgresTarget,
}

/// What identifies a database: endpoint, database name and user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PostgresTarget {
    endpoint: Endpoint,
    dbname: String,
    user: Option<String>,
}

impl PostgresTarget {
    /// Parses a connection string (URL or `key=value` form) with one TCP host.
    fn parse(address: &str) -> Result<Self, String> {
        let config: tokio_postgres::Config = address
            .parse()
            .map_err(|error| format!("not a PostgreSQL address: {error}"))?;
        let host = match config.get_hosts() {
            [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
            [] => "localhost".to_owned(),
            _ => return Err("only one TCP host is supported".into()),
        };
        let port = match config.get_ports() {
            [] => 5432,
            [port] => *port,
            _ => return Err("only one port is supported".into()),
        };
        let user = config.get_user().map(str::to_owned);
        // PostgreSQL's default database is the user's name.
        let dbname = config
            .get_dbname()
            .map(str::to_owned)
            .or_else(|| user.clone())
            .unwrap_or_default();
        Ok(PostgresTarget {
            endpoint: Endpoint::new("postgres", &host, port),
            dbname,
            user,
        })
    }

    /// Whether a guest asking for `asked` means this database.
    fn admits(&self, asked: &PostgresTarget) -> bool {
        asked.endpoint == self.endpoint
            && asked.dbname == self.dbname
            && (asked.user.is_none() || asked.user == self.user)
    }
}

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection runs before it goes back to the pool.
const RESET_SESSION: &str = "ROLLBACK; RESET ALL";

impl PostgresBackend {
    /// The database at `url` (the host's database, with the read-only role's user and
    /// `password`, if any), through a pool of at most `max_size` connections whose statements
    /// stop after `statement_timeout`. Nothing is connected until a guest opens.
    pub fn read_only(
        url: &str,
        password: Option<&str>,
        max_size: usize,
        statement_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let target = PostgresTarget::parse(url).map_err(anyhow::Error::msg)?;
        let mut config: tokio_postgres::Config = url.parse()?;
        if let Some(password) = password {
            config.password(password);
        }
        let options = format!(
            "{} -c default_transaction_read_only=on -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            statement_timeout.as_millis().max(1)
        );
        config
            .options(options.trim_start())
            .application_name("weir-query")
            .connect_timeout(CONNECT_TIMEOUT);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Custom(RESET_SESSION.to_owned()),
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(PostgresBackend { pool, target })
    }

    /// The `allowed_outbound_hosts` entry that grants this database.
    pub fn allowed_host(&self) -> String {
        self.target.endpoint.as_allowed_host()
    }
}

/// A guest's open connection: a connection of the backend's pool, given back when the guest
/// drops it, or detached and cancelled if a query was still running (see the module
/// documentation).
pub struct PgConnection {
    client: Option<Object>,
    cancel: CancelToken,
    /// Set while a statement runs; still set at drop when the call was torn down mid-query.
    in_flight: AtomicBool,
}

impl PgConnection {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a connection holds its client until dropped")
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && self.in_flight.load(Ordering::Acquire)
        {
            drop(Object::take(client));
            // The instance may be torn down mid-query (deadline): stop the server's work too.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let cancel = self.cancel.clone();
                runtime.spawn(async move {
                    let _ = cancel.cancel_query(NoTls).await;
                });
            }
        }
    }
}

/// Per-instance state: the backend if granted, the component's allowed hosts, and how many
/// connections are open.
#[derive(Default)]
pub(crate) struct PostgresState {
    backend: Option<Arc<PostgresBackend>>,
    allowed: AllowedHosts,
    open: usize,
}

impl PostgresState {
    pub(crate) fn new(backend: Option<Arc<PostgresBackend>>, allowed: AllowedHosts) -> Self {
        PostgresState {
            backend,
            allowed,
            open: 0,
        }
    }
}

/// What the Postgres host functions work on: the instance's state and its resource table.
pub(crate) struct PostgresView<'a> {
    pub(crate) state: &'a mut PostgresState,
    pub(crate) table: &'a mut ResourceTable,
}

fn query_error(error: tokio_postgres::Error) -> Error {
    let Some(db) = error.as_db_error() else {
        return Error::QueryFailed(QueryError::Text(error.to_string()));
    };
    Error::QueryFailed(QueryError::DbError(DbError {
        as_text: error.to_string(),
        severity: db.severity().to_owned(),
        code: db.code().code().to_owned(),
        message: db.message().to_owned(),
        detail: db.detail().map(str::to_owned),
        extras: [
            ("hint", db.hint()),
            ("schema", db.schema()),
            ("table", db.table()),
            ("column", db.column()),
            ("constraint", db.constraint()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned())))
        .collect(),
    }))
}

/// The parameters bound for tokio-postgres; `Err` is the `bad-parameter` message.
fn bind(params: Vec<ParameterValue>) -> Result<Vec<values::Param>, String> {
    params
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            values::Param::new(value).map_err(|reason| format!("parameter {}: {reason}", index + 1))
        })
        .collect()
}

fn refs(params: &[values::Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl wit::Host for PostgresView<'_> {}

impl wit::HostConnection for PostgresView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, Error>> {
        let asked = match PostgresTarget::parse(&address) {
            Ok(asked) => asked,
            Err(reason) => return Ok(Err(Error::ConnectionFailed(reason))),
        };
        let backend = match &self.state.backend {
            Some(backend)
                if self.state.allowed.allows(&asked.endpoint) && backend.target.admits(&asked) =>
            {
                backend.clone()
            }
            _ => {
                return Ok(Err(Error::ConnectionFailed(format!(
                    "{} (database `{}`) is not permitted: a component reaches only the host's \
                     database, and only if its allowed_outbound_hosts names it",
                    asked.endpoint, asked.dbname
                ))));
            }
        };
        if self.state.open >= MAX_CONNECTIONS {
            return Ok(Err(Error::ConnectionFailed(format!(
                "too many connections: an instance may hold {MAX_CONNECTIONS}"
            ))));
        }
        let client = match backend.pool.get().await {
            Ok(client) => client,
            Err(error) => {
                return Ok(Err(Error::ConnectionFailed(format!(
                    "PostgreSQL unavailable: {error}"
                ))));
            }
        };
        let cancel = client.cancel_token();
        let handle = self.table.push(PgConnection {
            client: Some(client),
            cancel,
            in_flight: AtomicBool::new(false),
        })?;
        self.state.open += 1;
        Ok(Ok(handle))
    }

    async fn query(
        &mut self,
        handle: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let params = match bind(params) {
            Ok(params) => params,
            Err(reason) => return Ok(Err(Error::BadParameter(reason))),
        };
        // A handle the guest does not own is misuse: that traps.
        let connection = self.table.get(&handle)?;
        let client = connection.client();
        connection.in_flight.store(true, Ordering::Release);
        let prepared = match client.prepare(&statement).await {
            Ok(prepared) => prepared,
            Err(error) => {
                connection.in_flight.store(false, Ordering::Release);
                return Ok(Err(query_error(error)));
            }
        };
        let rows = client.query(&prepared, &refs(&params)).await;
        connection.in_flight.store(false, Ordering::Release);
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => return Ok(Err(query_error(error))),
        };
        let rows = rows
            .iter()
            .map(values::row_values)
            .collect::<Result<Vec<_>, _>>();
        Ok(rows
            .map(|rows| RowSet {
                columns: values::columns(prepared.columns()),
                rows,
            })
            .map_err(Error::ValueConversionFailed))
    }

    async fn execute(
        &mut self,
        handle: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let params = match bind(params) {
            Ok(params) => params,
            Err(reason) => return Ok(Err(Error::BadParameter(reason))),
        };
        let connection = self.table.get(&handle)?;
        connection.in_flight.store(true, Ordering::Release);
        let result = connection
            .client()
            .execute(statement.as_str(), &refs(&params))
            .await;
        connection.in_flight.store(false, Ordering::Release);
        Ok(result.map_err(query_error))
    }

    async fn drop(&mut self, handle: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.state.open = self.state.open.saturating_sub(1);
        Ok(())
    }
}

struct Postgres;

impl HasData for Postgres {
    type Data<'a> = PostgresView<'a>;
}

pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> PostgresView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Postgres>(linker, get)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_services::PostgresServer;

    use super::wit::HostConnection as _;
    use super::*;
    use crate::capabilities::bindings::spin::postgres::postgres::{
        DbDataType, DbValue, Interval, RangeBoundKind,
    };

    #[test]
    fn only_the_hosts_database_is_admitted() {
        let host = PostgresTarget::parse("postgres://weir@127.0.0.1:5432/weir").unwrap();
        let admits = |address: &str| host.admits(&PostgresTarget::parse(address).unwrap());
        assert!(admits("postgres://weir@127.0.0.1:5432/weir"));
        assert!(admits("postgresql://127.0.0.1/weir"));
        assert!(admits("postgres://weir:ignored@127.0.0.1:5432/weir"));
        assert!(admits("host=127.0.0.1 port=5432 dbname=weir"));
        assert!(!admits("postgres://weir@127.0.0.1:5432/postgres"));
        assert!(!admits("postgres://admin@127.0.0.1:5432/weir"));
        assert!(!admits("postgres://weir@localhost:5432/weir"));
        assert!(!admits("postgres://weir@127.0.0.1:5433/weir"));
        assert!(PostgresTarget::parse("not an address").is_err());
    }

    struct Fixture {
        _server: PostgresServer,
        /// The read-only role's address, as the host grants it.
        url: String,
        /// The host's own storage (superuser), to check what the guest could not do.
        storage: weir_storage::Storage,
        state: PostgresState,
        table: ResourceTable,
    }

    impl Fixture {
        async fn start() -> Fixture {
            let server = tokio::task::spawn_blocking(PostgresServer::start_temporary)
                .await
                .unwrap()
                .expect("starting PostgreSQL");
            let storage = weir_storage::Storage::connect(&server.url(), 4, Duration::from_secs(5))
                .await
                .unwrap();
            storage
                .migrate()
                .await
                .expect("migrating (creates weir_query)");
            let url = server.url().replacen("postgres@", "weir_query@", 1);
            assert!(url.contains("weir_query@"), "{url}");
            let backend =
                PostgresBackend::read_only(&url, None, 2, Duration::from_secs(5)).unwrap();
            let allowed = AllowedHosts::parse(&[backend.allowed_host()]).unwrap();
            Fixture {
                _server: server,
                url,
                storage,
                state: PostgresState::new(Some(Arc::new(backend)), allowed),
                table: ResourceTable::new(),
            }
        }

        fn view(&mut self) -> PostgresView<'_> {
            PostgresView {
                state: &mut self.state,
                table: &mut self.table,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn values_round_trip_through_postgres_as_spin_maps_them() {
        let mut fixture = Fixture::start().await;
        let url = fixture.url.clone();
        let mut pg = fixture.view();
        let handle = pg
            .open(url)
            .await
            .unwrap()
            .expect("the host's database opens");
        use ParameterValue as P;
        let interval = Interval {
            micros: 1_000_001,
            days: 2,
            months: 3,
        };
        let params = vec![
            P::Boolean(true),
            P::Int16(-2),
            P::Int32(-3),
            P::Int64(i64::MIN),
            P::Floating32(1.5),
            P::Floating64(-0.1),
            P::Str("a|b".into()),
            P::Binary(vec![0, 255]),
            P::Date((1999, 12, 31)),
            P::Time((23, 59, 58, 123_456_000)),
            P::Datetime((2026, 11, 26, 8, 30, 0, 1000)),
            P::Timestamp(946_684_801),
            P::Uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into()),
            P::Jsonb(br#"{"a": [1, 2]}"#.to_vec()),
            P::Decimal("18446744073709551615.50".into()),
            P::RangeInt32((
                Some((1, RangeBoundKind::Inclusive)),
                Some((6, RangeBoundKind::Exclusive)),
            )),
            P::RangeInt64((None, Some((7, RangeBoundKind::Exclusive)))),
            P::RangeDecimal((Some(("1.5".into(), RangeBoundKind::Exclusive)), None)),
            P::ArrayInt32(vec![Some(1), None]),
            P::ArrayInt64(vec![Some(i64::MAX)]),
            P::ArrayDecimal(vec![Some("-0.001".into()), None]),
            P::ArrayStr(vec![None, Some("x".into())]),
            P::Interval(interval),
            P::DbNull,
        ];
        let statement = "SELECT $1::bool, $2::int2, $3::int4, $4::int8, $5::float4, $6::float8, \
            $7::text, $8::bytea, $9::date, $10::time, $11::timestamp, $12::timestamptz, \
            $13::uuid, $14::jsonb, $15::numeric, $16::int4range, $17::int8range, $18::numrange, \
            $19::int4[], $20::int8[], $21::numeric[], $22::text[], $23::interval, \
            $24::text AS nothing";
        let rows = pg
            .query(Resource::new_borrow(handle.rep()), statement.into(), params)
            .await
            .unwrap()
            .expect("the query runs");
        assert_eq!(rows.columns.len(), 24);
        assert_eq!(rows.columns[23].name, "nothing");
        assert_eq!(rows.columns[11].data_type, DbDataType::Datetime);
        assert_eq!(rows.columns[14].data_type, DbDataType::Decimal);
        assert_eq!(
            rows.rows,
            [vec![
                DbValue::Boolean(true),
                DbValue::Int16(-2),
                DbValue::Int32(-3),
                DbValue::Int64(i64::MIN),
                DbValue::Floating32(1.5),
                DbValue::Floating64(-0.1),
                DbValue::Str("a|b".into()),
                DbValue::Binary(vec![0, 255]),
                DbValue::Date((1999, 12, 31)),
                DbValue::Time((23, 59, 58, 123_456_000)),
                DbValue::Datetime((2026, 11, 26, 8, 30, 0, 1000)),
                DbValue::Datetime((2000, 1, 1, 0, 0, 1, 0)),
                DbValue::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
                DbValue::Jsonb(br#"{"a":[1,2]}"#.to_vec()),
                DbValue::Decimal("18446744073709551615.50".into()),
                DbValue::RangeInt32((
                    Some((1, RangeBoundKind::Inclusive)),
                    Some((6, RangeBoundKind::Exclusive))
                )),
                DbValue::RangeInt64((None, Some((7, RangeBoundKind::Exclusive)))),
                DbValue::RangeDecimal((Some(("1.5".into(), RangeBoundKind::Exclusive)), None)),
                DbValue::ArrayInt32(vec![Some(1), None]),
                DbValue::ArrayInt64(vec![Some(i64::MAX)]),
                DbValue::ArrayDecimal(vec![Some("-0.001".into()), None]),
                DbValue::ArrayStr(vec![None, Some("x".into())]),
                DbValue::Interval(interval),
                DbValue::DbNull,
            ]]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refusals_and_failures_are_error_variants_and_misuse_traps() {
        let mut fixture = Fixture::start().await;
        let url = fixture.url.clone();
        let other_db = url.rsplit_once('/').unwrap().0.to_string() + "/postgres";
        let storage = fixture.storage.clone();
        let mut pg = fixture.view();
        assert!(matches!(
            pg.open(other_db).await.unwrap(),
            Err(Error::ConnectionFailed(_))
        ));
        let first = pg.open(url.clone()).await.unwrap().unwrap();
        let second = pg.open(url.clone()).await.unwrap().unwrap();
        let Err(Error::ConnectionFailed(message)) = pg.open(url.clone()).await.unwrap() else {
            panic!("a third connection is refused");
        };
        assert!(message.contains("too many"), "{message}");

        let borrow = |handle: &Resource<PgConnection>| Resource::new_borrow(handle.rep());
        let Err(Error::QueryFailed(QueryError::DbError(db))) = pg
            .query(borrow(&first), "SELEC 1".into(), vec![])
            .await
            .unwrap()
        else {
            panic!("a syntax error is a db-error");
        };
        assert_eq!(db.code, "42601");
        assert!(matches!(
            pg.query(
                borrow(&first),
                "SELECT $1::int8".into(),
                vec![ParameterValue::Str("1".into())]
            )
            .await
            .unwrap(),
            Err(Error::QueryFailed(QueryError::Text(_)))
        ));
        assert!(matches!(
            pg.execute(
                borrow(&first),
                "SELECT $1::uuid".into(),
                vec![ParameterValue::Uuid("x".into())]
            )
            .await
            .unwrap(),
            Err(Error::BadParameter(_))
        ));
        // The role reads and cannot write, whatever the guest sets.
        let count = "SELECT count(*) FROM series";
        assert!(
            pg.query(borrow(&first), count.into(), vec![])
                .await
                .unwrap()
                .is_ok()
        );
        for write in [
            "INSERT INTO series (org, device, key) VALUES ('o', 'd', 'k')",
            "CREATE TABLE t (x int)",
            "DELETE FROM api_tokens",
        ] {
            let Err(Error::QueryFailed(QueryError::DbError(db))) = pg
                .execute(borrow(&first), write.into(), vec![])
                .await
                .unwrap()
            else {
                panic!("`{write}` is refused");
            };
            // 25006: read-only transaction; 42501: insufficient privilege.
            assert!(
                ["25006", "42501"].contains(&db.code.as_str()),
                "{write}: {db:?}"
            );
        }
        for statement in ["SET default_transaction_read_only = off", "BEGIN"] {
            pg.execute(borrow(&second), statement.into(), vec![])
                .await
                .unwrap()
                .unwrap();
        }
        let Err(Error::QueryFailed(QueryError::DbError(db))) = pg
            .execute(
                borrow(&second),
                "UPDATE series SET unit = 'x'".into(),
                vec![],
            )
            .await
            .unwrap()
        else {
            panic!("without the read-only setting, the role still may not write");
        };
        assert_eq!(db.code, "42501");
        // Given back: the next user finds no transaction and the read-only default again.
        pg.drop(second).await.unwrap();
        let again = pg.open(url.clone()).await.unwrap().unwrap();
        let rows = pg
            .query(
                borrow(&again),
                "SELECT current_setting('default_transaction_read_only'), \
                 now() = statement_timestamp()"
                    .into(),
                vec![],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            rows.rows,
            [vec![DbValue::Str("on".into()), DbValue::Boolean(false)]],
            "read-only again, and not inside the transaction left open"
        );
        pg.drop(again).await.unwrap();
        let tokens = storage.list_tokens(None).await.unwrap();
        assert!(tokens.is_empty(), "nothing was written");
        assert!(
            pg.query(Resource::new_borrow(1_000), "SELECT 1".into(), vec![])
                .await
                .is_err(),
            "a handle the guest does not hold traps"
        );
        pg.drop(first).await.unwrap();
        assert!(pg.open(url).await.unwrap().is_ok(), "slots are given back");
    }
}
