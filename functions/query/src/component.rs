//! The Spin HTTP component: spin-sdk's router, variables, Postgres (`spin:postgres@4.0.0`) and
//! Redis (`fermyon:spin/redis@2.0.0`). Built only for wasm32-wasip2; the same file runs on Spin
//! and on Weir's host, which implements those interfaces over its own pools. Everything this
//! file decides comes from the plain-Rust modules; it only does the I/O.

use serde_json::Value;
use spin_sdk::http::{Params, Request, Response, Router};
use spin_sdk::http_component;
use spin_sdk::pg4::{self, DbValue, Decode, PgError, QueryError};
use spin_sdk::redis::{self, RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::answer::{self, Answer, LIVE, range_cache_control};
use crate::history::{self, HistoryRequest, history_body};
use crate::latest::{self, latest_body, latest_member};
use crate::metadata::{
    self, DevicesPage, KeyMetadata, devices_body, found_key, key_body, keys_body,
};
use crate::openapi::OPENAPI_JSON;
use crate::params::percent_decode;
use crate::range::{Grid, Step};
use crate::routes::router_pattern;
use crate::trend::{self, BucketRow, TrendParams, invalid_tz, trend_body};
use crate::value::from_sql_json;
use crate::{ORG_HEADER, decode_cached, lateness_window_ms};
use weir_contract::latest::hash_name;
use weir_contract::routes::{self, Endpoint};

type Latest = Vec<(String, i64, Value)>;

#[http_component]
fn handle(req: Request) -> Response {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let pattern = router_pattern(endpoint);
        router.get(&pattern, move |req: Request, params: Params| {
            respond(serve(endpoint, &req, &params).unwrap_or_else(|answer| answer))
        });
    }
    router.any("/*", |req: Request, _params: Params| {
        let path = req.path();
        respond(match routes::parse(path) {
            Some(_) => Answer::method_not_allowed(&req.method().to_string(), path),
            None => Answer::no_endpoint(path),
        })
    });
    router.handle(req)
}

fn respond(answer: Answer) -> Response {
    let mut response = Response::builder();
    response
        .status(answer.status)
        .header("content-type", "application/json")
        .header("cache-control", answer.cache_control);
    if let Some(location) = &answer.location {
        response.header("location", location.as_str());
    }
    if let Some(allow) = answer.allow {
        response.header("allow", allow);
    }
    response.body(answer.body).build()
}

/// What one request is about: the caller's org, the path's names, the clock.
struct Call<'a> {
    org: &'a str,
    device: String,
    key: String,
    path: &'a str,
    query: &'a str,
    now_ms: i64,
}

fn serve(endpoint: Endpoint, req: &Request, params: &Params) -> Result<Answer, Answer> {
    if endpoint == Endpoint::OpenApi {
        let mut document = Answer::ok(&Value::Null, answer::DOCUMENT);
        document.body = OPENAPI_JSON.to_owned();
        return Ok(document);
    }
    // The host sets this from the caller's token; without it nobody vouched for the caller.
    let Some(org) = req.header(ORG_HEADER).and_then(|v| v.as_str()) else {
        return Err(Answer::unauthenticated());
    };
    let name = |param: &str| {
        let raw = params.get(param).unwrap_or_default();
        percent_decode(raw).ok_or_else(|| Answer::no_endpoint(req.path()))
    };
    let call = Call {
        org,
        device: name("device")?,
        key: name("key")?,
        path: req.path(),
        query: req.query(),
        now_ms: now_ms(),
    };
    match endpoint {
        Endpoint::Devices => devices(&call),
        Endpoint::Keys => keys(&call),
        Endpoint::Latest => device_latest(&call),
        Endpoint::Key => key(&call),
        Endpoint::History => history(&call),
        Endpoint::Trend => trend(&call),
        Endpoint::OpenApi => unreachable!("answered above"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lateness() -> i64 {
    lateness_window_ms(variables::get("lateness_window_ms").ok().as_deref())
}

// ---- endpoints ----

fn devices(call: &Call) -> Result<Answer, Answer> {
    let page = DevicesPage::from_query(call.query)?;
    let db = database()?;
    let rows = query(
        &db,
        metadata::DEVICES_SQL,
        &[
            call.org.to_owned().into(),
            page.after.clone().into(),
            (page.limit as i64 + 1).into(),
        ],
    )?;
    let devices = rows
        .rows
        .iter()
        .map(|row| Ok((decode::<String>(&row[0])?, decode::<i64>(&row[1])?)))
        .collect::<Result<Vec<_>, Answer>>()?;
    Ok(Answer::ok(&devices_body(devices, page.limit), LIVE))
}

fn keys(call: &Call) -> Result<Answer, Answer> {
    no_parameters(call)?;
    let db = database()?;
    let rows = query(
        &db,
        metadata::KEYS_SQL,
        &[call.org.to_owned().into(), call.device.clone().into()],
    )?;
    if rows.rows.is_empty() {
        return Err(Answer::device_not_found(&call.device));
    }
    let keys = rows
        .rows
        .iter()
        .map(|row| key_metadata(row))
        .collect::<Result<Vec<_>, Answer>>()?;
    Ok(Answer::ok(&keys_body(&call.device, &keys), LIVE))
}

fn device_latest(call: &Call) -> Result<Answer, Answer> {
    no_parameters(call)?;
    // The cache first; empty or unreachable, PostgreSQL (which also tells a known device with
    // nothing cached from an unknown one).
    let cached = cached_latest(call.org, &call.device).unwrap_or_default();
    let latest = if cached.is_empty() {
        stored_latest(call.org, &call.device)?
            .ok_or_else(|| Answer::device_not_found(&call.device))?
    } else {
        cached
    };
    let body: Value = serde_json::from_str(&latest_body(&call.device, latest))
        .map_err(|e| internal(&e.to_string()))?;
    Ok(Answer::ok(&body, LIVE))
}

fn key(call: &Call) -> Result<Answer, Answer> {
    no_parameters(call)?;
    let db = database()?;
    let meta = series(&db, call)?;
    let latest = match cached_key(call.org, &call.device, &call.key) {
        Some(latest) => Some(latest),
        None => {
            let rows = query(&db, latest::KEY_LATEST_SQL, &[meta.id.into()])?;
            match rows.rows.first() {
                Some(row) => Some((decode::<i64>(&row[0])?, json_column(&row[1])?)),
                None => None,
            }
        }
    };
    Ok(Answer::ok(
        &key_body(&call.device, &meta, latest_member(latest)),
        LIVE,
    ))
}

fn history(call: &Call) -> Result<Answer, Answer> {
    let request = HistoryRequest::plan(call.path, call.query, call.now_ms)?;
    let db = database()?;
    let meta = series(&db, call)?;
    let rows = query(
        &db,
        history::HISTORY_SQL,
        &[
            meta.id.into(),
            request.from.into(),
            request.to.into(),
            request.after_us.into(),
            request.fetch().into(),
        ],
    )?;
    let points = rows
        .rows
        .iter()
        .map(|row| Ok((decode::<i64>(&row[0])?, json_column(&row[1])?)))
        .collect::<Result<Vec<_>, Answer>>()?;
    let cache = range_cache_control(request.to, call.now_ms, lateness());
    Ok(Answer::ok(&history_body(points, request.limit), cache))
}

fn trend(call: &Call) -> Result<Answer, Answer> {
    let params = TrendParams::parse(call.query)?;
    let db = database()?;
    let mut days = DayGrid {
        db: &db,
        tz: params.tz.clone(),
    };
    let request = if params.bucket.is_daily() {
        params.plan(call.path, call.query, call.now_ms, &mut days)?
    } else {
        if params.tz != trend::DEFAULT_TZ {
            days.floor(0)?; // only to check the time zone
        }
        let mut grid = Step(params.bucket.ms);
        params.plan(call.path, call.query, call.now_ms, &mut grid)?
    };
    let meta = series(&db, call)?;
    request.params.check_numeric(&call.key, meta.is_text())?;
    let bucket = request.params.bucket;
    let rows = query(
        &db,
        trend::TREND_SQL,
        &[
            meta.id.into(),
            request.from.into(),
            request.to.into(),
            bucket.interval.to_owned().into(),
            bucket.is_daily().into(),
            request.params.tz.clone().into(),
        ],
    )?;
    let buckets = rows
        .rows
        .iter()
        .map(|row| bucket_row(row))
        .collect::<Result<Vec<_>, Answer>>()?;
    let body = trend_body(&call.device, &call.key, &request, &buckets)?;
    let cache = range_cache_control(request.to, call.now_ms, lateness());
    Ok(Answer::ok(&body, cache))
}

/// Local midnights of a time zone, from PostgreSQL's time zone database.
struct DayGrid<'a> {
    db: &'a pg4::Connection,
    tz: String,
}

impl DayGrid<'_> {
    fn ask(&self, sql: &str, t: i64) -> Result<i64, Answer> {
        match self.db.query(sql, &[t.into(), self.tz.clone().into()]) {
            Ok(rows) => match rows.rows.first() {
                Some(row) => decode::<i64>(&row[0]),
                None => Err(internal("no answer from the time zone query")),
            },
            Err(PgError::QueryFailed(QueryError::DbError(e)))
                if e.code == trend::UNKNOWN_TZ_SQLSTATE =>
            {
                Err(invalid_tz(&self.tz))
            }
            Err(error) => Err(storage_error(&error)),
        }
    }
}

impl Grid for DayGrid<'_> {
    fn floor(&mut self, t: i64) -> Result<i64, Answer> {
        self.ask(trend::DAY_FLOOR_SQL, t)
    }

    fn next(&mut self, line: i64) -> Result<i64, Answer> {
        self.ask(trend::DAY_NEXT_SQL, line)
    }
}

// ---- storage ----

fn no_parameters(call: &Call) -> Result<(), Answer> {
    crate::params::QueryParams::parse(call.query, &[]).map(|_| ())
}

fn database() -> Result<pg4::Connection, Answer> {
    let address = variables::get("database_url")
        .map_err(|e| internal(&format!("no database_url variable: {e}")))?;
    pg4::Connection::open(&address).map_err(|e| storage_error(&e))
}

fn query(
    db: &pg4::Connection,
    sql: &str,
    params: &[pg4::ParameterValue],
) -> Result<pg4::RowSet, Answer> {
    db.query(sql, params).map_err(|e| storage_error(&e))
}

/// `503 storage_unavailable` for a PostgreSQL error. The error itself goes to the component's
/// stderr (Spin's log; the host keeps it for trap messages) and never into the body: it can
/// hold SQL, server messages and connection details.
fn storage_error(error: &PgError) -> Answer {
    eprintln!("weir-query: PostgreSQL could not answer: {error:?}");
    Answer::storage_unavailable()
}

fn internal(message: &str) -> Answer {
    Answer::error(500, "internal_error", message)
}

fn decode<T: Decode>(value: &DbValue) -> Result<T, Answer> {
    T::decode(value).map_err(|e| internal(&format!("unexpected column: {e}")))
}

fn json_column(value: &DbValue) -> Result<Value, Answer> {
    let text = decode::<Option<String>>(value)?;
    from_sql_json(text.as_deref()).map_err(|e| internal(&format!("unexpected value: {e}")))
}

/// The series of the call's key, or the 404 of its device or key.
fn series(db: &pg4::Connection, call: &Call) -> Result<KeyMetadata, Answer> {
    let rows = query(
        db,
        metadata::KEY_SQL,
        &[
            call.org.to_owned().into(),
            call.device.clone().into(),
            call.key.clone().into(),
        ],
    )?;
    let row = rows.rows.first().map(|row| key_metadata(row)).transpose()?;
    found_key(&call.device, &call.key, row)
}

fn key_metadata(row: &[DbValue]) -> Result<KeyMetadata, Answer> {
    Ok(KeyMetadata {
        id: decode(&row[0])?,
        key: decode(&row[1])?,
        data_type: decode(&row[2])?,
        name: decode(&row[3])?,
        unit: decode(&row[4])?,
        description: decode(&row[5])?,
        value_map: decode(&row[6])?,
        min: decode(&row[7])?,
        max: decode(&row[8])?,
    })
}

fn bucket_row(row: &[DbValue]) -> Result<BucketRow, Answer> {
    Ok(BucketRow {
        start: decode(&row[0])?,
        end: decode(&row[1])?,
        numeric: [
            json_column(&row[2])?,
            json_column(&row[3])?,
            json_column(&row[4])?,
            json_column(&row[5])?,
        ],
        count: decode(&row[6])?,
        first: json_column(&row[7])?,
        last: json_column(&row[8])?,
        has_text: decode::<Option<bool>>(&row[9])?.unwrap_or(false),
    })
}

fn redis_connection() -> Option<redis::Connection> {
    let address = variables::get("redis_url").ok()?;
    redis::Connection::open(&address).ok()
}

/// `HGETALL weir:latest:<org>:<device>` through the generic `execute` call (the v2 Redis
/// interface has no hash commands of its own). `None` when Redis cannot answer.
fn cached_latest(org: &str, device: &str) -> Option<Latest> {
    let hash = hash_name(org, device).into_bytes();
    let reply = redis_connection()?
        .execute("HGETALL", &[RedisParameter::Binary(hash)])
        .ok()?;
    let mut latest = Vec::with_capacity(reply.len() / 2);
    for pair in reply.chunks_exact(2) {
        if let [RedisResult::Binary(key), RedisResult::Binary(field)] = pair {
            let key = String::from_utf8_lossy(key).into_owned();
            if let Some((ts_ms, value)) = decode_cached(&String::from_utf8_lossy(field)) {
                latest.push((key, ts_ms, value));
            }
        }
    }
    Some(latest)
}

/// `HGET weir:latest:<org>:<device> <key>`; `None` when not cached or Redis cannot answer.
fn cached_key(org: &str, device: &str, key: &str) -> Option<(i64, Value)> {
    let hash = hash_name(org, device).into_bytes();
    let reply = redis_connection()?
        .execute(
            "HGET",
            &[
                RedisParameter::Binary(hash),
                RedisParameter::Binary(key.as_bytes().to_vec()),
            ],
        )
        .ok()?;
    match reply.first() {
        Some(RedisResult::Binary(field)) => decode_cached(&String::from_utf8_lossy(field)),
        _ => None,
    }
}

/// The latest values from PostgreSQL; `None` when `org` has no such device.
fn stored_latest(org: &str, device: &str) -> Result<Option<Latest>, Answer> {
    let db = database()?;
    let rows = query(
        &db,
        latest::DEVICE_LATEST_SQL,
        &[org.to_owned().into(), device.to_owned().into()],
    )?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    let mut latest = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        let Some(ts_ms) = decode::<Option<i64>>(&row[1])? else {
            continue; // a key with metadata but no point yet
        };
        latest.push((decode::<String>(&row[0])?, ts_ms, json_column(&row[2])?));
    }
    Ok(Some(latest))
}
