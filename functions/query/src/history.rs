//! `GET /v1/devices/{device}/keys/{key}/history?from=&to=&limit=&cursor=`: one key's points in
//! time order, `from` inclusive, `to` exclusive (unix ms, on the 5-minute grid), paged by a
//! keyset cursor on the timestamp (the next page starts strictly after the last point given).

use serde_json::{Value, json};

use crate::answer::Answer;
use crate::cursor;
use crate::params::{DEFAULT_LIMIT, QueryParams, query_string};
use crate::range::{DAY_MS, HISTORY_GRID_MS, Range, Step, canonical_range, require_canonical};
use crate::value::{point_value_jsonb, ts_from_ms};

/// The query parameters history takes, in canonical order.
pub const PARAMS: &[&str] = &["from", "to", "limit", "cursor"];

/// The span of a history request without `from`: one day before `to`.
pub const DEFAULT_SPAN_MS: i64 = DAY_MS;

/// Points of series `$1` in `[$2, $3)` (ms) after `$4` (µs), in time order, at most `$5`:
/// timestamp in microseconds (the cursor's unit) and the value as JSON text.
pub const HISTORY_SQL: &str = concat!(
    "SELECT (extract(epoch FROM p.ts) * 1000000)::int8 AS ts_us, ",
    point_value_jsonb!(),
    "::text AS value FROM points p WHERE p.series_id = $1::int8 AND p.ts >= ",
    ts_from_ms!(2),
    " AND p.ts < ",
    ts_from_ms!(3),
    " AND p.ts > (timestamptz 'epoch' + $4::int8 * interval '1 microsecond') \
     ORDER BY p.ts LIMIT $5::int8"
);

/// A canonical history request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Start, inclusive (ms).
    pub from: i64,
    /// End, exclusive (ms).
    pub to: i64,
    /// Points per page.
    pub limit: usize,
    /// Only points after this (µs): the cursor's, or just before `from`.
    pub after_us: i64,
}

impl HistoryRequest {
    /// Reads the request at `path?raw_query`: its parameters, or the error or redirect to
    /// answer instead.
    pub fn plan(path: &str, raw_query: &str, now_ms: i64) -> Result<HistoryRequest, Answer> {
        let params = QueryParams::parse(raw_query, PARAMS)?;
        let from = params.timestamp("from")?;
        let to = params.range_end("to")?;
        let limit = params.limit()?;
        let after_us = params.get("cursor").map(cursor::decode_ts).transpose()?;
        let range = canonical_range(
            from,
            to,
            now_ms,
            DEFAULT_SPAN_MS,
            &mut Step(HISTORY_GRID_MS),
        )?;
        require_canonical(
            path,
            raw_query,
            &canonical_query(&range, &params, limit),
            &range,
        )?;
        Ok(HistoryRequest {
            from: range.from,
            to: range.to,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            after_us: after_us.unwrap_or(range.from * 1000 - 1),
        })
    }

    /// How many rows to fetch: one more than a page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit as i64 + 1
    }
}

/// `from`, `to`, then `limit` and `cursor` when given.
fn canonical_query(range: &Range, params: &QueryParams, limit: Option<usize>) -> String {
    let mut pairs = vec![
        ("from", range.from.to_string()),
        ("to", range.to.to_string()),
    ];
    if let Some(limit) = limit {
        pairs.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = params.get("cursor") {
        pairs.push(("cursor", cursor.to_owned()));
    }
    query_string(&pairs)
}

/// The body from up to `limit + 1` rows of [`HISTORY_SQL`] (`(ts_us, value)`):
/// `{"points": [[ts_ms, value], ...], "next": cursor | null}`.
pub fn history_body(mut rows: Vec<(i64, Value)>, limit: usize) -> Value {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = match (more, rows.last()) {
        (true, Some((ts_us, _))) => json!(cursor::encode_ts(*ts_us)),
        _ => Value::Null,
    };
    let points: Vec<Value> = rows
        .into_iter()
        .map(|(ts_us, value)| json!([ts_us.div_euclid(1000), value]))
        .collect();
    json!({ "points": points, "next": next })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/v1/devices/m1/keys/power/history";

    #[test]
    fn canonical_requests_are_served() {
        let request = HistoryRequest::plan(PATH, "from=0&to=600000&limit=10", 0).unwrap();
        assert_eq!(
            request,
            HistoryRequest {
                from: 0,
                to: 600_000,
                limit: 10,
                after_us: -1
            }
        );
        let cursor = cursor::encode_ts(5_000);
        let paged =
            HistoryRequest::plan(PATH, &format!("from=0&to=600000&cursor={cursor}"), 0).unwrap();
        assert_eq!(
            (paged.after_us, paged.limit, paged.fetch()),
            (5_000, 1000, 1001)
        );
    }

    #[test]
    fn unaligned_requests_redirect_to_the_canonical_url() {
        let answer = HistoryRequest::plan(PATH, "limit=5&to=600001&from=1", 0).unwrap_err();
        assert_eq!(answer.status, 308);
        assert_eq!(
            answer.location.unwrap(),
            format!("{PATH}?from=0&to=900000&limit=5")
        );
    }

    #[test]
    fn missing_ends_redirect_with_302() {
        let now = 3 * DAY_MS + 1;
        let answer = HistoryRequest::plan(PATH, "", now).unwrap_err();
        assert_eq!(answer.status, 302);
        assert_eq!(
            answer.location.unwrap(),
            format!(
                "{PATH}?from={}&to={}",
                2 * DAY_MS + 300_000,
                3 * DAY_MS + 300_000
            )
        );
    }

    #[test]
    fn bad_parameters_are_400_before_any_redirect() {
        for query in [
            "from=x",
            "cursor=zz&from=0&to=300000",
            "from=300000&to=0",
            "limit=0",
        ] {
            let answer = HistoryRequest::plan(PATH, query, 0).unwrap_err();
            assert_eq!(answer.status, 400, "{query}");
            assert!(answer.body.contains("invalid_parameter"));
        }
    }

    #[test]
    fn pages_end_with_a_cursor_while_points_remain() {
        let rows = vec![(1_000, json!(1.5)), (2_000, json!(2)), (3_000, json!("x"))];
        let page = history_body(rows.clone(), 2);
        assert_eq!(page["points"], json!([[1, 1.5], [2, 2]]));
        assert_eq!(page["next"], json!(cursor::encode_ts(2_000)));
        assert_eq!(history_body(rows, 3)["next"], Value::Null);
    }

    #[test]
    fn the_query_binds_typed_parameters() {
        for param in ["$1::int8", "$2::int8", "$3::int8", "$4::int8", "$5::int8"] {
            assert!(HISTORY_SQL.contains(param), "{param}");
        }
    }
}
