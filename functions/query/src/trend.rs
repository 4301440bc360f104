//! `GET /v1/devices/{device}/keys/{key}/trend?from=&to=&bucket=&agg=&tz=`: one key's points
//! aggregated per time bucket, computed in PostgreSQL. Sub-day buckets lie on the UTC epoch
//! grid (`date_bin`); daily buckets start at local midnight of `tz` (`date_trunc('day', ts,
//! tz)`), so a daylight-saving day is 23 or 25 hours long. Only buckets with points are listed.
//!
//! Aggregates: `min`, `max`, `avg`, `sum` over the value as a number (float8: floats,
//! integers, numerics, bools as 0/1; a text value makes them `400 not_numeric`), `count`, and
//! `first`/`last` (the bucket's earliest and latest value, typed like history).

use serde_json::{Map, Value, json};

use crate::answer::Answer;
use crate::params::{QueryParams, query_string};
use crate::range::{DAY_MS, Grid, Range, canonical_range, require_canonical};
use crate::value::{point_value_jsonb, point_value_number, ts_from_ms};

/// The query parameters trend takes, in canonical order.
pub const PARAMS: &[&str] = &["from", "to", "bucket", "agg", "tz"];
/// Most buckets one request may span.
pub const MAX_BUCKETS: i64 = 10_000;
/// Buckets a request without `from` spans at least (and at least one day).
pub const DEFAULT_BUCKETS: i64 = 100;
/// The time zone when `tz` is absent.
pub const DEFAULT_TZ: &str = "UTC";

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Its name in requests and answers (`1h`).
    pub name: &'static str,
    /// Its width in milliseconds (a day counts 24 h here; real days may differ in `tz`).
    pub ms: i64,
    /// Its width as a PostgreSQL interval.
    pub interval: &'static str,
}

/// Every bucket width, narrowest first.
pub const BUCKETS: &[Bucket] = &[
    bucket("1m", 60_000, "1 minute"),
    bucket("5m", 300_000, "5 minutes"),
    bucket("15m", 900_000, "15 minutes"),
    bucket("30m", 1_800_000, "30 minutes"),
    bucket("1h", 3_600_000, "1 hour"),
    bucket("2h", 7_200_000, "2 hours"),
    bucket("3h", 10_800_000, "3 hours"),
    bucket("6h", 21_600_000, "6 hours"),
    bucket("12h", 43_200_000, "12 hours"),
    bucket("1d", DAY_MS, "1 day"),
];

const fn bucket(name: &'static str, ms: i64, interval: &'static str) -> Bucket {
    Bucket { name, ms, interval }
}

/// The bucket when `bucket` is absent: one hour.
pub const DEFAULT_BUCKET: Bucket = BUCKETS[4];

impl Bucket {
    /// Whether buckets are local days (aligned in `tz`) rather than steps on the UTC grid.
    pub fn is_daily(&self) -> bool {
        self.ms == DAY_MS
    }
}

/// One aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Agg {
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean value.
    Avg,
    /// Sum of values.
    Sum,
    /// Number of points.
    Count,
    /// Earliest value.
    First,
    /// Latest value.
    Last,
}

/// Every aggregate, in canonical order.
pub const AGGS: &[Agg] = &[
    Agg::Min,
    Agg::Max,
    Agg::Avg,
    Agg::Sum,
    Agg::Count,
    Agg::First,
    Agg::Last,
];

impl Agg {
    /// Its name in requests and answers.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Avg => "avg",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::First => "first",
            Agg::Last => "last",
        }
    }

    /// Whether it needs numeric values.
    pub fn is_numeric(self) -> bool {
        matches!(self, Agg::Min | Agg::Max | Agg::Avg | Agg::Sum)
    }
}

/// A trend request's parameters, before its range is put on the grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendParams {
    params: QueryParams,
    from: Option<i64>,
    to: Option<i64>,
    /// The bucket width.
    pub bucket: Bucket,
    /// The aggregates asked for, in canonical order, each once.
    pub aggs: Vec<Agg>,
    /// The time zone (IANA name; checked by PostgreSQL).
    pub tz: String,
}

/// A canonical trend request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendRequest {
    /// Start, inclusive (ms).
    pub from: i64,
    /// End, exclusive (ms).
    pub to: i64,
    /// The parameters.
    pub params: TrendParams,
}

impl TrendParams {
    /// Reads the parameters of `raw_query`; the time zone is only checked for its form here.
    pub fn parse(raw_query: &str) -> Result<TrendParams, Answer> {
        let params = QueryParams::parse(raw_query, PARAMS)?;
        let from = params.timestamp("from")?;
        let to = params.range_end("to")?;
        let bucket = match params.get("bucket") {
            None => DEFAULT_BUCKET,
            Some(name) => *BUCKETS.iter().find(|b| b.name == name).ok_or_else(|| {
                let names: Vec<&str> = BUCKETS.iter().map(|b| b.name).collect();
                Answer::invalid_parameter(&format!(
                    "parameter `bucket` must be one of {}, not `{name}`",
                    names.join(", ")
                ))
            })?,
        };
        let aggs = match params.get("agg") {
            None => AGGS.to_vec(),
            Some(list) => parse_aggs(list)?,
        };
        let tz = params.get("tz").unwrap_or(DEFAULT_TZ).to_owned();
        let well_formed = tz.len() <= 64
            && tz
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
        if !well_formed {
            return Err(invalid_tz(&tz));
        }
        Ok(TrendParams {
            params,
            from,
            to,
            bucket,
            aggs,
            tz,
        })
    }

    /// Puts the range on `grid` (the bucket's: [`crate::range::Step`] of [`Bucket::ms`], or
    /// local midnights of `tz` for daily buckets) and checks its size; the error or redirect to
    /// answer instead when it is not canonical.
    pub fn plan(
        self,
        path: &str,
        raw_query: &str,
        now_ms: i64,
        grid: &mut impl Grid,
    ) -> Result<TrendRequest, Answer> {
        let span = DAY_MS.max(DEFAULT_BUCKETS * self.bucket.ms);
        let range = canonical_range(self.from, self.to, now_ms, span, grid)?;
        let buckets = (range.to - range.from + self.bucket.ms - 1) / self.bucket.ms;
        if buckets > MAX_BUCKETS {
            return Err(Answer::error(
                400,
                "range_too_large",
                &format!(
                    "from {} to {} spans {buckets} buckets of {}; at most {MAX_BUCKETS} are answered",
                    range.from, range.to, self.bucket.name
                ),
            ));
        }
        require_canonical(path, raw_query, &self.canonical_query(&range), &range)?;
        Ok(TrendRequest {
            from: range.from,
            to: range.to,
            params: self,
        })
    }

    /// `from`, `to`, then `bucket`, `agg` (in canonical order) and `tz` when given.
    fn canonical_query(&self, range: &Range) -> String {
        let mut pairs = vec![
            ("from", range.from.to_string()),
            ("to", range.to.to_string()),
        ];
        if self.params.get("bucket").is_some() {
            pairs.push(("bucket", self.bucket.name.to_owned()));
        }
        if self.params.get("agg").is_some() {
            let names: Vec<&str> = self.aggs.iter().map(|a| a.name()).collect();
            pairs.push(("agg", names.join(",")));
        }
        if self.params.get("tz").is_some() {
            pairs.push(("tz", self.tz.clone()));
        }
        query_string(&pairs)
    }

    /// `400 not_numeric` when a numeric aggregate is asked of a key holding text.
    pub fn check_numeric(&self, key: &str, holds_text: bool) -> Result<(), Answer> {
        let numeric: Vec<&str> = self
            .aggs
            .iter()
            .filter(|a| a.is_numeric())
            .map(|a| a.name())
            .collect();
        if holds_text && !numeric.is_empty() {
            return Err(Answer::error(
                400,
                "not_numeric",
                &format!(
                    "key `{key}` holds text: {} cannot be computed (count, first and last can)",
                    numeric.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn parse_aggs(list: &str) -> Result<Vec<Agg>, Answer> {
    let mut aggs = Vec::new();
    for name in list.split(',') {
        let agg = AGGS.iter().find(|a| a.name() == name).ok_or_else(|| {
            let names: Vec<&str> = AGGS.iter().map(|a| a.name()).collect();
            Answer::invalid_parameter(&format!(
                "parameter `agg` must be a comma-separated list of {}, not `{list}`",
                names.join(", ")
            ))
        })?;
        aggs.push(*agg);
    }
    aggs.sort();
    aggs.dedup();
    Ok(aggs)
}

/// `400 invalid_parameter` for a time zone PostgreSQL does not know.
pub fn invalid_tz(tz: &str) -> Answer {
    Answer::invalid_parameter(&format!(
        "parameter `tz` must be an IANA time zone name such as Europe/Stockholm, not `{tz}`"
    ))
}

/// The SQLSTATE PostgreSQL answers an unknown time zone with (`invalid_parameter_value`).
pub const UNKNOWN_TZ_SQLSTATE: &str = "22023";

/// Local midnight of tz `$2` at or before `$1` (ms), in ms. Fails with
/// [`UNKNOWN_TZ_SQLSTATE`] for an unknown tz.
pub const DAY_FLOOR_SQL: &str = concat!(
    "SELECT (extract(epoch FROM date_trunc('day', ",
    ts_from_ms!(1),
    ", $2::text)) * 1000)::int8"
);

/// The local midnight of tz `$2` one day after local midnight `$1` (ms), in ms.
pub const DAY_NEXT_SQL: &str = concat!(
    "SELECT (extract(epoch FROM ((",
    ts_from_ms!(1),
    " AT TIME ZONE $2::text) + interval '1 day') AT TIME ZONE $2::text) * 1000)::int8"
);

/// Buckets of series `$1` in `[$2, $3)` (ms): bucket width `$4` (interval text), daily `$5`
/// (then local days of tz `$6`). Columns: start and end (ms), min, max, avg, sum (JSON text),
/// count, first, last (JSON text), whether any value was text.
pub const TREND_SQL: &str = concat!(
    "WITH b AS (SELECT CASE WHEN $5::bool THEN date_trunc('day', p.ts, $6::text) \
                  ELSE date_bin($4::text::interval, p.ts, timestamptz 'epoch') END AS start, \
                  p.ts, ",
    point_value_jsonb!(),
    " AS j, ",
    point_value_number!(),
    " AS x, p.v_text IS NOT NULL AS is_text \
       FROM points p WHERE p.series_id = $1::int8 AND p.ts >= ",
    ts_from_ms!(2),
    " AND p.ts < ",
    ts_from_ms!(3),
    ") \
     SELECT (extract(epoch FROM start) * 1000)::int8 AS start_ms, \
        (extract(epoch FROM CASE WHEN $5::bool \
            THEN ((start AT TIME ZONE $6::text) + interval '1 day') AT TIME ZONE $6::text \
            ELSE start + $4::text::interval END) * 1000)::int8 AS end_ms, \
        to_jsonb(min(x))::text, to_jsonb(max(x))::text, to_jsonb(avg(x))::text, \
        to_jsonb(sum(x))::text, count(*)::int8, \
        ((array_agg(j ORDER BY ts))[1])::text, ((array_agg(j ORDER BY ts DESC))[1])::text, \
        bool_or(is_text) \
     FROM b GROUP BY start ORDER BY start"
);

/// One row of [`TREND_SQL`], decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
    /// min, max, avg, sum (null for text).
    pub numeric: [Value; 4],
    /// Number of points.
    pub count: i64,
    /// Earliest value.
    pub first: Value,
    /// Latest value.
    pub last: Value,
    /// Whether any value was text.
    pub has_text: bool,
}

impl BucketRow {
    fn to_json(&self, aggs: &[Agg]) -> Value {
        let mut bucket = Map::new();
        bucket.insert("start".into(), json!(self.start));
        bucket.insert("end".into(), json!(self.end));
        for agg in aggs {
            let value = match agg {
                Agg::Min => self.numeric[0].clone(),
                Agg::Max => self.numeric[1].clone(),
                Agg::Avg => self.numeric[2].clone(),
                Agg::Sum => self.numeric[3].clone(),
                Agg::Count => json!(self.count),
                Agg::First => self.first.clone(),
                Agg::Last => self.last.clone(),
            };
            bucket.insert(agg.name().into(), value);
        }
        Value::Object(bucket)
    }
}

/// The body: `{"device", "key", "bucket", "tz", "from", "to", "buckets": [{"start", "end",
/// <aggs>}]}`; `400 not_numeric` when a bucket held text and a numeric aggregate was asked.
pub fn trend_body(
    device: &str,
    key: &str,
    request: &TrendRequest,
    rows: &[BucketRow],
) -> Result<Value, Answer> {
    let params = &request.params;
    params.check_numeric(key, rows.iter().any(|r| r.has_text))?;
    let buckets: Vec<Value> = rows.iter().map(|r| r.to_json(&params.aggs)).collect();
    Ok(json!({
        "device": device,
        "key": key,
        "bucket": params.bucket.name,
        "tz": params.tz,
        "from": request.from,
        "to": request.to,
        "buckets": buckets,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Step;

    const PATH: &str = "/v1/devices/m1/keys/power/trend";
    const HOUR: i64 = 3_600_000;

    fn plan(query: &str, now: i64) -> Result<TrendRequest, Answer> {
        let params = TrendParams::parse(query)?;
        let mut grid = Step(params.bucket.ms);
        params.plan(PATH, query, now, &mut grid)
    }

    fn code(answer: &Answer) -> String {
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn defaults_are_hourly_utc_and_every_aggregate() {
        let request = plan(&format!("from=0&to={HOUR}"), 0).unwrap();
        assert_eq!(request.params.bucket.name, "1h");
        assert_eq!(request.params.tz, "UTC");
        assert_eq!(request.params.aggs, AGGS);
    }

    #[test]
    fn ranges_snap_to_the_bucket_grid() {
        let answer = plan("from=1&to=7200001&bucket=1h", 0).unwrap_err();
        assert_eq!(answer.status, 308);
        assert_eq!(
            answer.location.unwrap(),
            format!("{PATH}?from=0&to={}&bucket=1h", 3 * HOUR)
        );
        let answer = plan("to=7200000&bucket=1h", 0).unwrap_err();
        assert_eq!(answer.status, 302);
        assert_eq!(
            answer.location.unwrap(),
            format!("{PATH}?from=0&to=7200000&bucket=1h"),
            "100 hours before `to`, but not before 1970"
        );
    }

    #[test]
    fn aggregate_lists_are_put_in_canonical_order() {
        let answer = plan("from=0&to=3600000&agg=max,min,max", 0).unwrap_err();
        assert_eq!(
            answer.location.unwrap(),
            format!("{PATH}?from=0&to=3600000&agg=min,max")
        );
        let request = plan("from=0&to=3600000&agg=min,last", 0).unwrap();
        assert_eq!(request.params.aggs, [Agg::Min, Agg::Last]);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (query, needle) in [
            ("bucket=7m", "`bucket`"),
            ("agg=median", "`agg`"),
            ("agg=", "`agg`"),
            ("tz=Europe/Stockholm;drop", "`tz`"),
        ] {
            let answer = plan(query, 0).unwrap_err();
            assert_eq!(
                (answer.status, code(&answer)),
                (400, "invalid_parameter".into())
            );
            assert!(answer.body.contains(needle), "{query}: {}", answer.body);
        }
    }

    #[test]
    fn too_many_buckets_are_refused() {
        let answer = plan(&format!("from=0&to={}&bucket=1m", 10_001 * 60_000), 0).unwrap_err();
        assert_eq!(
            (answer.status, code(&answer)),
            (400, "range_too_large".into())
        );
        assert!(plan(&format!("from=0&to={}&bucket=1m", 10_000 * 60_000), 0).is_ok());
    }

    #[test]
    fn text_keys_have_counts_but_no_numbers() {
        let all = TrendParams::parse("").unwrap();
        let answer = all.check_numeric("status", true).unwrap_err();
        assert_eq!((answer.status, code(&answer)), (400, "not_numeric".into()));
        assert!(answer.body.contains("min, max, avg, sum"));
        let counts = TrendParams::parse("agg=count,first,last").unwrap();
        assert!(counts.check_numeric("status", true).is_ok());
        assert!(all.check_numeric("power", false).is_ok());
    }

    #[test]
    fn aggregate_lists_are_canonical_with_plain_commas() {
        assert!(plan("from=0&to=3600000&agg=max,count", 0).is_ok());
        for query in [
            "from=0&to=3600000&agg=count,max",
            "from=0&to=3600000&agg=max%2Ccount",
        ] {
            let answer = plan(query, 0).unwrap_err();
            assert_eq!(
                (answer.status, answer.location.unwrap()),
                (308, format!("{PATH}?from=0&to=3600000&agg=max,count")),
                "{query}"
            );
        }
    }

    #[test]
    fn body_lists_buckets_with_selected_aggregates() {
        let request = TrendRequest {
            from: 0,
            to: HOUR,
            params: TrendParams::parse("agg=max,count").unwrap(),
        };
        let row = BucketRow {
            start: 0,
            end: HOUR,
            numeric: [json!(1), json!(3), json!(2), json!(6)],
            count: 3,
            first: json!(1),
            last: json!(3),
            has_text: false,
        };
        let body = trend_body("m1", "power", &request, std::slice::from_ref(&row)).unwrap();
        assert_eq!(
            body,
            json!({"device": "m1", "key": "power", "bucket": "1h", "tz": "UTC", "from": 0,
                   "to": HOUR, "buckets": [{"start": 0, "end": HOUR, "max": 3, "count": 3}]})
        );
        let text = BucketRow {
            has_text: true,
            ..row
        };
        assert_eq!(
            trend_body("m1", "power", &request, &[text])
                .unwrap_err()
                .status,
            400
        );
    }
}
