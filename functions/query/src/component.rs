//! The Spin HTTP component: spin-sdk's router, variables, Postgres (`spin:postgres@4.0.0`) and
//! Redis (`fermyon:spin/redis@2.0.0`). Built only for wasm32-wasip2; the same file runs on Spin
//! and, later, on Weir's host, which implements those interfaces over its own pools.

use anyhow::{Context, anyhow};
use serde_json::Value;
use spin_sdk::http::{IntoResponse, Params, Request, Response, Router};
use spin_sdk::http_component;
use spin_sdk::pg4::{self, Decode};
use spin_sdk::redis::{self, RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::{decode_cached, latest_body, latest_hash_name};

/// Every key's newest point, read without the cache.
const LATEST_SQL: &str = "SELECT s.key, (extract(epoch FROM p.ts) * 1000)::int8 AS ts_ms, \
        (CASE WHEN p.v_float IS NOT NULL THEN to_jsonb(p.v_float) \
              WHEN p.v_int IS NOT NULL THEN to_jsonb(p.v_int) \
              WHEN p.v_numeric IS NOT NULL THEN to_jsonb(p.v_numeric) \
              WHEN p.v_bool IS NOT NULL THEN to_jsonb(p.v_bool) \
              ELSE to_jsonb(p.v_text) END)::text AS value \
     FROM series s \
     CROSS JOIN LATERAL (SELECT ts, v_float, v_int, v_numeric, v_bool, v_text \
         FROM points WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) p \
     WHERE s.org = $1 AND s.device = $2";

#[http_component]
fn handle(req: Request) -> impl IntoResponse {
    let mut router = Router::new();
    router.get("/v1/devices/:device/latest", latest);
    router.any("/*", |_req: Request, _params: Params| {
        Response::new(404, "not found")
    });
    router.handle(req)
}

fn latest(req: Request, params: Params) -> anyhow::Result<Response> {
    let device = params.get("device").context("route has no device")?;
    // Provisional: the org a bearer token belongs to. Whether the host resolves the token and
    // passes the org, or the component looks the token up itself, is open (docs/SPIN.md).
    let Some(org) = req.header("weir-org").and_then(|v| v.as_str()) else {
        return Ok(Response::new(401, "missing bearer token"));
    };

    let mut latest = cached_latest(org, device)?;
    if latest.is_empty() {
        latest = stored_latest(org, device)?;
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(latest_body(device, latest))
        .build())
}

/// `HGETALL weir:latest:<org>:<device>` through the generic `execute` call (the v2 Redis
/// interface has no hash commands of its own).
fn cached_latest(org: &str, device: &str) -> anyhow::Result<Vec<(String, i64, Value)>> {
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

fn stored_latest(org: &str, device: &str) -> anyhow::Result<Vec<(String, i64, Value)>> {
    let address = variables::get("database_url")?;
    let db = pg4::Connection::open(&address)?;
    let rows = db.query(
        LATEST_SQL,
        &[org.to_owned().into(), device.to_owned().into()],
    )?;
    rows.rows
        .iter()
        .map(|row| {
            let key = String::decode(&row[0])?;
            let ts_ms = i64::decode(&row[1])?;
            let value = serde_json::from_str(&String::decode(&row[2])?)?;
            Ok((key, ts_ms, value))
        })
        .collect()
}
