//! The Spin HTTP component: spin-sdk's router, variables, Postgres (`spin:postgres@4.0.0`) and
//! Redis (`fermyon:spin/redis@2.0.0`). Built only for wasm32-wasip2; the same file runs on Spin
//! and on Weir's host, which implements those interfaces over its own pools.

use anyhow::{Context, anyhow};
use serde_json::Value;
use spin_sdk::http::{IntoResponse, Params, Request, Response, Router};
use spin_sdk::http_component;
use spin_sdk::pg4::{self, Decode};
use spin_sdk::redis::{self, RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::{
    ORG_HEADER, decode_cached, device_not_found_body, error_body, latest_body, latest_hash_name,
};

/// Every key of the device with its newest point; a key with no point yet has NULL columns, so
/// a known device always has at least one row.
const LATEST_SQL: &str = "SELECT s.key, (extract(epoch FROM p.ts) * 1000)::int8 AS ts_ms, \
        (CASE WHEN p.v_float IS NOT NULL THEN to_jsonb(p.v_float) \
              WHEN p.v_int IS NOT NULL THEN to_jsonb(p.v_int) \
              WHEN p.v_numeric IS NOT NULL THEN to_jsonb(p.v_numeric) \
              WHEN p.v_bool IS NOT NULL THEN to_jsonb(p.v_bool) \
              ELSE to_jsonb(p.v_text) END)::text AS value \
     FROM series s \
     LEFT JOIN LATERAL (SELECT ts, v_float, v_int, v_numeric, v_bool, v_text \
         FROM points WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) p ON true \
     WHERE s.org = $1 AND s.device = $2";

type Latest = Vec<(String, i64, Value)>;

#[http_component]
fn handle(req: Request) -> impl IntoResponse {
    let mut router = Router::new();
    router.get("/v1/devices/:device/latest", latest);
    router.any("/*", |req: Request, _params: Params| {
        json(
            404,
            error_body("not_found", &format!("no endpoint at {}", req.path())),
        )
    });
    router.handle(req)
}

fn json(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .build()
}

fn latest(req: Request, params: Params) -> Response {
    let Some(device) = params.get("device") else {
        return json(404, error_body("not_found", "no device in the path"));
    };
    // The host sets this from the caller's token; without it nobody vouched for the caller.
    let Some(org) = req.header(ORG_HEADER).and_then(|v| v.as_str()) else {
        return json(
            401,
            error_body("unauthenticated", "no organisation for this request"),
        );
    };
    // The cache first; empty or unreachable, PostgreSQL (which also tells a known device with
    // nothing cached from an unknown one).
    let cached = cached_latest(org, device).unwrap_or_default();
    let latest = if cached.is_empty() {
        match stored_latest(org, device) {
            Ok(Some(latest)) => latest,
            Ok(None) => return json(404, device_not_found_body(device)),
            Err(error) => {
                let message = format!("the latest values cannot be read now: {error:#}");
                return json(503, error_body("storage_unavailable", &message));
            }
        }
    } else {
        cached
    };
    json(200, latest_body(device, latest))
}

/// `HGETALL weir:latest:<org>:<device>` through the generic `execute` call (the v2 Redis
/// interface has no hash commands of its own).
fn cached_latest(org: &str, device: &str) -> anyhow::Result<Latest> {
    let address = variables::get("redis_url")?;
    let conn = redis::Connection::open(&address).map_err(|e| anyhow!("redis open: {e:?}"))?;
    let hash = latest_hash_name(org, device).into_bytes();
    let reply = conn
        .execute("HGETALL", &[RedisParameter::Binary(hash)])
        .map_err(|e| anyhow!("redis HGETALL: {e:?}"))?;
    let mut latest = Vec::with_capacity(reply.len() / 2);
    for pair in reply.chunks_exact(2) {
        if let [RedisResult::Binary(key), RedisResult::Binary(field)] = pair {
            let key = String::from_utf8_lossy(key).into_owned();
            if let Some((ts_ms, value)) = decode_cached(&String::from_utf8_lossy(field)) {
                latest.push((key, ts_ms, value));
            }
        }
    }
    Ok(latest)
}

/// The latest values from PostgreSQL; `None` when `org` has no such device.
fn stored_latest(org: &str, device: &str) -> anyhow::Result<Option<Latest>> {
    let address = variables::get("database_url")?;
    let db = pg4::Connection::open(&address).context("opening the database")?;
    let rows = db.query(
        LATEST_SQL,
        &[org.to_owned().into(), device.to_owned().into()],
    )?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    let mut latest = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        let Some(ts_ms) = Option::<i64>::decode(&row[1])? else {
            continue; // a key with metadata but no point yet
        };
        let key = String::decode(&row[0])?;
        let value = serde_json::from_str(&String::decode(&row[2])?)?;
        latest.push((key, ts_ms, value));
    }
    Ok(Some(latest))
}
