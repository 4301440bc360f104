//! The query API's endpoints end to end: devices, keys, key, latest, history (paged), trend
//! (aggregated per bucket, daily buckets in a time zone), canonical-range redirects, parameter
//! errors, organisation isolation and the public OpenAPI document. Every reading goes through
//! the real device submit path into the real PostgreSQL and Redis, and is read back through the
//! host's API listener from the real query component (`target/functions/query.wasm`).

use std::collections::BTreeMap;

use hyper::header::{CACHE_CONTROL, LOCATION};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value as Json, json};

use crate::ingest::harness::{Device, TestHost, batch, metric_value, now_ms, ok, point};

/// 2026-01-01T00:00:00Z: old enough that its ranges are immutable.
const BASE: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// Most points one batch may carry (`max_batch_points`).
const BATCH_POINTS: usize = 1000;

/// One answer of the API listener.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Json,
}

impl Answer {
    fn header(&self, name: hyper::header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// Asserts a 200 and returns the body.
    fn ok(&self) -> &Json {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body
    }

    /// Asserts an error of `status` with `code`, shaped `{"error": {"code", "message"}}`.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            self.body
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        assert_eq!(self.body.as_object().unwrap().len(), 1, "{}", self.body);
    }
}

/// `GET path`, with `Authorization: Bearer <token>` when given; no redirect is followed.
async fn get(host: &TestHost, path: &str, token: Option<&str>) -> Answer {
    request(host, Method::GET, path, token).await
}

async fn request(host: &TestHost, method: Method, path: &str, token: Option<&str>) -> Answer {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    let (status, headers, body) = host.api_exchange(method, path, &headers).await;
    let body =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// Submits `points` (`(key, value, ts)`) in batches of at most [`BATCH_POINTS`], all accepted.
async fn send(meter: &mut Device, label: &str, points: &[(&str, Json, i64)]) {
    for (i, chunk) in points.chunks(BATCH_POINTS).enumerate() {
        let body = batch(
            &format!("{label}-{i}"),
            chunk
                .iter()
                .map(|(key, value, ts)| point(key, value.clone(), *ts))
                .collect(),
        );
        assert_eq!(
            ok(&meter.submit(&body).await)["accepted"],
            json!(chunk.len()),
            "batch {label}-{i}"
        );
    }
}

/// Declares `power` (f64, W, 0..10000) and `mode` (enum off/on).
async fn declare_metadata(meter: &mut Device) {
    let metadata = json!([
        {"key": "power", "type": "f64", "name": "Power", "unit": "W", "min": 0.0, "max": 10000.0},
        {"key": "mode", "type": "enum", "name": "Mode", "value_map": {"0": "off", "1": "on"}},
    ]);
    let receipt = ok(&meter
        .send_json(Method::PUT, "/v1/metadata", &metadata)
        .await);
    assert_eq!(receipt["stored"], json!(2), "{receipt}");
}

/// Two power readings, one mode, one status text, all in the first minutes of [`BASE`].
async fn send_small_set(meter: &mut Device) {
    declare_metadata(meter).await;
    send(
        meter,
        "small",
        &[
            ("power", json!(1.5), BASE),
            ("power", json!(2.5), BASE + MINUTE),
            ("mode", json!(1), BASE),
            ("status", json!("running"), BASE + 2 * MINUTE),
        ],
    )
    .await;
}

const IMMUTABLE: &str = "private, max-age=31536000, immutable";

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_answers_its_documented_body() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    send_small_set(&mut meter).await;
    let mut other = host.device("m2", "acme").await;
    send(&mut other, "m2", &[("power", json!(7), BASE)]).await;
    let token = host.api_token("acme").await;
    let token = Some(token.as_str());

    let devices = get(&host, "/v1/devices", token).await;
    assert_eq!(
        devices.ok(),
        &json!({"devices": [{"device": "m1", "keys": 3}, {"device": "m2", "keys": 1}], "next": null})
    );
    assert_eq!(devices.header(CACHE_CONTROL), "private, no-cache");
    let first = get(&host, "/v1/devices?limit=1", token).await;
    assert_eq!(first.ok()["devices"], json!([{"device": "m1", "keys": 3}]));
    let cursor = first.body["next"].as_str().expect("a next page").to_owned();
    let second = get(
        &host,
        &format!("/v1/devices?limit=1&cursor={cursor}"),
        token,
    )
    .await;
    assert_eq!(
        second.ok(),
        &json!({"devices": [{"device": "m2", "keys": 1}], "next": null})
    );

    let power_meta = json!({"key": "power", "data_type": "f64", "name": "Power", "unit": "W",
        "description": null, "values": null, "min": 0.0, "max": 10000.0});
    let keys = get(&host, "/v1/devices/m1/keys", token).await;
    assert_eq!(
        keys.ok(),
        &json!({"device": "m1", "keys": [
            {"key": "mode", "data_type": "enum", "name": "Mode", "unit": null, "description": null,
             "values": {"0": "off", "1": "on"}, "min": null, "max": null},
            power_meta,
            {"key": "status", "data_type": null, "name": null, "unit": null, "description": null,
             "values": null, "min": null, "max": null},
        ]})
    );
    assert_eq!(keys.header(CACHE_CONTROL), "private, no-cache");

    let latest = get(&host, "/v1/devices/m1/latest", token).await;
    assert_eq!(
        latest.ok(),
        &json!({"device": "m1", "keys": {
            "power": {"ts": BASE + MINUTE, "value": 2.5},
            "mode": {"ts": BASE, "value": 1},
            "status": {"ts": BASE + 2 * MINUTE, "value": "running"},
        }})
    );

    let key = get(&host, "/v1/devices/m1/keys/power", token).await;
    let mut expected = power_meta.clone();
    expected["device"] = json!("m1");
    expected["latest"] = json!({"ts": BASE + MINUTE, "value": 2.5});
    assert_eq!(key.ok(), &expected);
    assert_eq!(key.header(CACHE_CONTROL), "private, no-cache");

    let path = format!(
        "/v1/devices/m1/keys/power/history?from={BASE}&to={}",
        BASE + 5 * MINUTE
    );
    let history = get(&host, &path, token).await;
    assert_eq!(
        history.ok(),
        &json!({"points": [[BASE, 1.5], [BASE + MINUTE, 2.5]], "next": null})
    );
    assert_eq!(history.header(CACHE_CONTROL), IMMUTABLE);

    let path = format!(
        "/v1/devices/m1/keys/power/trend?from={BASE}&to={}",
        BASE + HOUR
    );
    let trend = get(&host, &path, token).await;
    // PostgreSQL writes integral doubles without a fraction: avg 2 and sum 4 are JSON integers.
    assert_eq!(
        trend.ok(),
        &json!({"device": "m1", "key": "power", "bucket": "1h", "tz": "UTC",
            "from": BASE, "to": BASE + HOUR, "buckets": [
                {"start": BASE, "end": BASE + HOUR, "min": 1.5, "max": 2.5, "avg": 2, "sum": 4,
                 "count": 2, "first": 1.5, "last": 2.5}]})
    );
    assert_eq!(trend.header(CACHE_CONTROL), IMMUTABLE);

    // A recent range may still change: cached briefly only.
    let now_line = now_ms() / 300_000 * 300_000;
    let recent = format!(
        "/v1/devices/m1/keys/power/history?from={}&to={}",
        now_line - 300_000,
        now_line + 300_000
    );
    let recent = get(&host, &recent, token).await;
    assert_eq!(recent.ok(), &json!({"points": [], "next": null}));
    assert_eq!(recent.header(CACHE_CONTROL), "private, max-age=5");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_pages_through_ten_thousand_points_without_repeat_or_gap() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    let sent: Vec<(i64, f64)> = (0..10_000i64)
        .map(|i| (BASE + i * 1000 + (i % 7), i as f64 * 0.25 - 100.0))
        .collect();
    let points: Vec<(&str, Json, i64)> = sent
        .iter()
        .map(|(ts, v)| ("power", json!(v), *ts))
        .collect();
    send(&mut meter, "many", &points).await;
    let token = host.api_token("acme").await;

    let base = format!(
        "/v1/devices/m1/keys/power/history?from={BASE}&to={}&limit=1000",
        BASE + 3 * HOUR
    );
    let mut collected: Vec<(i64, f64)> = Vec::new();
    let mut path = base.clone();
    let mut pages = 0;
    loop {
        let page = get(&host, &path, Some(&token)).await;
        let body = page.ok();
        let points = body["points"].as_array().unwrap();
        assert!(points.len() <= 1000);
        collected.extend(
            points
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap())),
        );
        pages += 1;
        match body["next"].as_str() {
            Some(cursor) => path = format!("{base}&cursor={cursor}"),
            None => break,
        }
        assert!(pages <= 11, "paging does not end");
    }
    assert_eq!(pages, 10, "10,000 points in pages of 1,000");
    assert_eq!(collected.len(), sent.len());
    assert_eq!(collected, sent, "every point once, in time order");
}

/// min, max, avg, sum, count, first, last of `values` (in time order).
fn aggregates(values: &[f64]) -> BTreeMap<&'static str, f64> {
    let sum: f64 = values.iter().sum();
    BTreeMap::from([
        ("min", values.iter().cloned().fold(f64::INFINITY, f64::min)),
        (
            "max",
            values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ),
        ("avg", sum / values.len() as f64),
        ("sum", sum),
        ("count", values.len() as f64),
        ("first", values[0]),
        ("last", values[values.len() - 1]),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn trend_aggregates_equal_those_computed_from_the_points_sent() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    // Uneven spacing over three hours; integral values, some negative, one hour empty.
    let sent: Vec<(i64, f64)> = (0..60i64)
        .filter(|i| !(20..30).contains(i))
        .map(|i| {
            (
                BASE + i * 3 * MINUTE + (i % 5) * 1000,
                ((i * 37) % 23 - 9) as f64,
            )
        })
        .collect();
    let points: Vec<(&str, Json, i64)> =
        sent.iter().map(|(ts, v)| ("load", json!(v), *ts)).collect();
    send(&mut meter, "trend", &points).await;
    let token = host.api_token("acme").await;

    for (bucket, width) in [("1h", HOUR), ("15m", 15 * MINUTE)] {
        let mut expected: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (ts, v) in &sent {
            expected.entry(ts - ts % width).or_default().push(*v);
        }
        let path = format!(
            "/v1/devices/m1/keys/load/trend?from={BASE}&to={}&bucket={bucket}",
            BASE + 3 * HOUR
        );
        let answer = get(&host, &path, Some(&token)).await;
        let buckets = answer.ok()["buckets"].as_array().unwrap().clone();
        assert_eq!(
            buckets.len(),
            expected.len(),
            "{bucket}: only buckets with data"
        );
        for (bucket_json, (start, values)) in buckets.iter().zip(&expected) {
            assert_eq!(bucket_json["start"], json!(start), "{bucket}");
            assert_eq!(bucket_json["end"], json!(start + width), "{bucket}");
            for (agg, want) in aggregates(values) {
                let got = bucket_json[agg]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{bucket} {agg}: {bucket_json}"));
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{bucket} at {start}: {agg} is {got}, expected {want}"
                );
            }
        }
    }

    // `agg` selects what each bucket shows.
    let path = format!(
        "/v1/devices/m1/keys/load/trend?from={BASE}&to={}&agg=min,count",
        BASE + HOUR
    );
    let answer = get(&host, &path, Some(&token)).await;
    let bucket = &answer.ok()["buckets"][0];
    let mut fields: Vec<&str> = bucket
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    fields.sort();
    assert_eq!(fields, ["count", "end", "min", "start"]);
}

/// Local midnights in Europe/Stockholm (UTC ms) around the 2026 daylight-saving changes.
const STOCKHOLM_MAR_28: i64 = 1_774_652_400_000; // 2026-03-28T00:00+01:00
const STOCKHOLM_MAR_29: i64 = 1_774_738_800_000; // 2026-03-29T00:00+01:00 (23 h day)
const STOCKHOLM_MAR_30: i64 = 1_774_821_600_000; // 2026-03-30T00:00+02:00
const STOCKHOLM_MAR_31: i64 = 1_774_908_000_000;
const STOCKHOLM_OCT_24: i64 = 1_792_792_800_000; // 2026-10-24T00:00+02:00
const STOCKHOLM_OCT_25: i64 = 1_792_879_200_000; // 2026-10-25T00:00+02:00 (25 h day)
const STOCKHOLM_OCT_26: i64 = 1_792_969_200_000; // 2026-10-26T00:00+01:00
const STOCKHOLM_OCT_27: i64 = 1_793_055_600_000;

#[tokio::test(flavor = "multi_thread")]
async fn daily_buckets_follow_daylight_saving_in_stockholm() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    let token = host.api_token("acme").await;
    for (label, days) in [
        (
            "spring",
            [
                STOCKHOLM_MAR_28,
                STOCKHOLM_MAR_29,
                STOCKHOLM_MAR_30,
                STOCKHOLM_MAR_31,
            ],
        ),
        (
            "autumn",
            [
                STOCKHOLM_OCT_24,
                STOCKHOLM_OCT_25,
                STOCKHOLM_OCT_26,
                STOCKHOLM_OCT_27,
            ],
        ),
    ] {
        // One point every hour of the middle day, one at noon of the days around it.
        let mut points: Vec<(&str, Json, i64)> = vec![("energy", json!(1), days[0] + 12 * HOUR)];
        let mut ts = days[1];
        while ts < days[2] {
            points.push(("energy", json!(1), ts));
            ts += HOUR;
        }
        points.push(("energy", json!(1), days[2] + 12 * HOUR));
        send(&mut meter, label, &points).await;

        let path = format!(
            "/v1/devices/m1/keys/energy/trend?from={}&to={}&bucket=1d&agg=count&tz=Europe/Stockholm",
            days[0], days[3]
        );
        let answer = get(&host, &path, Some(&token)).await;
        let hours = (days[2] - days[1]) / HOUR;
        assert_eq!(
            answer.ok(),
            &json!({"device": "m1", "key": "energy", "bucket": "1d", "tz": "Europe/Stockholm",
            "from": days[0], "to": days[3], "buckets": [
                {"start": days[0], "end": days[1], "count": 1},
                {"start": days[1], "end": days[2], "count": hours},
                {"start": days[2], "end": days[3], "count": 1},
            ]}),
            "{label}"
        );
        let long = answer.body["buckets"][1]["end"].as_i64().unwrap()
            - answer.body["buckets"][1]["start"].as_i64().unwrap();
        assert_eq!(
            long,
            if label == "spring" {
                23 * HOUR
            } else {
                25 * HOUR
            }
        );

        // Daily ranges snap to local midnights, not UTC ones.
        let unaligned = format!(
            "/v1/devices/m1/keys/energy/trend?from={}&to={}&bucket=1d&agg=count&tz=Europe/Stockholm",
            days[1] + 5 * HOUR,
            days[2] - HOUR
        );
        let answer = get(&host, &unaligned, Some(&token)).await;
        assert_eq!(
            answer.status,
            StatusCode::PERMANENT_REDIRECT,
            "{}",
            answer.body
        );
        assert_eq!(
            answer.header(LOCATION),
            format!(
                "/v1/devices/m1/keys/energy/trend?from={}&to={}&bucket=1d&agg=count&tz=Europe/Stockholm",
                days[1], days[2]
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_organisations_device_is_not_found_like_a_missing_one() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    send_small_set(&mut meter).await;
    let acme = host.api_token("acme").await;
    let globex = host.api_token("globex").await;

    let range = format!("from={BASE}&to={}", BASE + HOUR);
    for suffix in [
        "keys".to_owned(),
        "latest".to_owned(),
        "keys/power".to_owned(),
        format!("keys/power/history?{range}"),
        format!("keys/power/trend?{range}"),
    ] {
        let foreign = get(&host, &format!("/v1/devices/m1/{suffix}"), Some(&globex)).await;
        foreign.assert_error(StatusCode::NOT_FOUND, "not_found");
        let missing = get(&host, &format!("/v1/devices/m9/{suffix}"), Some(&acme)).await;
        assert_eq!(
            foreign.body.to_string(),
            missing.body.to_string().replace("m9", "m1"),
            "{suffix}: nothing tells a foreign device from a missing one"
        );
        assert_eq!(foreign.header(CACHE_CONTROL), "private, no-store");
    }
    let devices = get(&host, "/v1/devices", Some(&globex)).await;
    assert_eq!(devices.ok(), &json!({"devices": [], "next": null}));
    let unknown_key = get(&host, "/v1/devices/m1/keys/nothing", Some(&acme)).await;
    unknown_key.assert_error(StatusCode::NOT_FOUND, "not_found");
    let history = format!("/v1/devices/m1/keys/nothing/history?{range}");
    get(&host, &history, Some(&acme))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn unaligned_or_incomplete_ranges_redirect_to_the_canonical_url() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    send_small_set(&mut meter).await;
    let token = host.api_token("acme").await;
    let token = Some(token.as_str());
    let history = "/v1/devices/m1/keys/power/history";
    let trend = "/v1/devices/m1/keys/power/trend";

    for (request, location) in [
        (
            format!("{history}?from={}&to={}&limit=10", BASE + 1, BASE + 300_001),
            format!("{history}?from={BASE}&to={}&limit=10", BASE + 600_000),
        ),
        (
            format!("{history}?limit=10&to={}&from={BASE}", BASE + 300_000),
            format!("{history}?from={BASE}&to={}&limit=10", BASE + 300_000),
        ),
        (
            format!(
                "{trend}?from={}&to={}&bucket=15m&agg=max,min",
                BASE + MINUTE,
                BASE + HOUR - 1
            ),
            format!(
                "{trend}?from={BASE}&to={}&bucket=15m&agg=min,max",
                BASE + HOUR
            ),
        ),
    ] {
        let answer = get(&host, &request, token).await;
        assert_eq!(
            answer.status,
            StatusCode::PERMANENT_REDIRECT,
            "{request}: {}",
            answer.body
        );
        assert_eq!(answer.header(LOCATION), location, "{request}");
        assert_eq!(answer.body, json!({"location": location}));
        get(&host, &location, token).await.ok();
    }

    // Without `to`, now (ceiled) is filled in, and the answer is a temporary redirect.
    let before = now_ms();
    let answer = get(&host, history, token).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    assert_eq!(answer.header(CACHE_CONTROL), "private, no-store");
    let location = answer.header(LOCATION).to_owned();
    let query = location.strip_prefix(&format!("{history}?")).unwrap();
    let (from, to) = query.split_once('&').unwrap();
    let from: i64 = from.strip_prefix("from=").unwrap().parse().unwrap();
    let to: i64 = to.strip_prefix("to=").unwrap().parse().unwrap();
    assert_eq!(to % 300_000, 0);
    assert!(
        to >= before && to - before < 300_000 + 10_000,
        "{to} is now ceiled"
    );
    assert_eq!(from, to - DAY, "a day by default");

    let answer = get(
        &host,
        &format!("{trend}?to={}&bucket=1h", BASE + HOUR),
        token,
    )
    .await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    assert_eq!(
        answer.header(LOCATION),
        format!(
            "{trend}?from={}&to={}&bucket=1h",
            BASE + HOUR - 100 * HOUR,
            BASE + HOUR
        ),
        "trend's default span is 100 buckets (at least a day)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_parameters_are_400_with_their_code() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    send_small_set(&mut meter).await;
    let token = host.api_token("acme").await;
    let token = Some(token.as_str());
    let history = "/v1/devices/m1/keys/power/history";
    let trend = "/v1/devices/m1/keys/power/trend";
    let range = format!("from={BASE}&to={}", BASE + HOUR);

    for (request, code) in [
        (
            format!("{history}?from=yesterday&to={BASE}"),
            "invalid_parameter",
        ),
        (
            format!("{history}?from={BASE}&to={BASE}"),
            "invalid_parameter",
        ),
        (format!("{history}?{range}&limit=0"), "invalid_parameter"),
        (
            format!("{history}?{range}&limit=10001"),
            "invalid_parameter",
        ),
        (
            format!("{history}?{range}&cursor=not-a-cursor"),
            "invalid_parameter",
        ),
        (
            format!("{history}?{range}&colour=blue"),
            "invalid_parameter",
        ),
        (format!("{trend}?{range}&bucket=7m"), "invalid_parameter"),
        (format!("{trend}?{range}&agg=median"), "invalid_parameter"),
        (
            format!("{trend}?{range}&tz=Mars/Olympus_Mons"),
            "invalid_parameter",
        ),
        (
            format!("{trend}?{range}&bucket=1d&tz=Mars/Olympus_Mons"),
            "invalid_parameter",
        ),
        (
            format!(
                "{trend}?from={BASE}&to={}&bucket=1m",
                BASE + 10_001 * MINUTE
            ),
            "range_too_large",
        ),
        ("/v1/devices?limit=lots".to_owned(), "invalid_parameter"),
        ("/v1/devices?cursor=zz".to_owned(), "invalid_parameter"),
        ("/v1/devices/m1/keys?x=1".to_owned(), "invalid_parameter"),
    ] {
        let answer = get(&host, &request, token).await;
        answer.assert_error(StatusCode::BAD_REQUEST, code);
        assert_eq!(
            answer.header(CACHE_CONTROL),
            "private, no-store",
            "{request}"
        );
    }
    let answer = request(&host, Method::POST, "/v1/devices", token).await;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    get(&host, "/v1/elsewhere", token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_key_has_counts_but_no_numeric_trend() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    send_small_set(&mut meter).await;
    send(
        &mut meter,
        "more-status",
        &[("status", json!("stopped"), BASE + 3 * MINUTE)],
    )
    .await;
    let token = host.api_token("acme").await;
    let trend = "/v1/devices/m1/keys/status/trend";
    let range = format!("from={BASE}&to={}", BASE + HOUR);

    let answer = get(&host, &format!("{trend}?{range}"), Some(&token)).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "not_numeric");
    let answer = get(&host, &format!("{trend}?{range}&agg=sum"), Some(&token)).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "not_numeric");
    let answer = get(
        &host,
        &format!("{trend}?{range}&agg=count,first,last"),
        Some(&token),
    )
    .await;
    assert_eq!(
        answer.ok()["buckets"],
        json!([{"start": BASE, "end": BASE + HOUR, "count": 2, "first": "running", "last": "stopped"}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_public_and_lists_every_endpoint() {
    let host = TestHost::start().await;
    let answer = get(&host, "/openapi.json", None).await;
    let document = answer.ok();
    assert_eq!(answer.header(CACHE_CONTROL), "public, max-age=3600");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/devices",
        "/v1/devices/{device}/keys",
        "/v1/devices/{device}/latest",
        "/v1/devices/{device}/keys/{key}",
        "/v1/devices/{device}/keys/{key}/history",
        "/v1/devices/{device}/keys/{key}/trend",
    ] {
        assert!(document["paths"][path]["get"].is_object(), "{path}");
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // The document changes only with the function: the second answer comes from memory.
    let again = get(&host, "/openapi.json", None).await;
    assert_eq!(again.ok(), document);
    let (_, metrics) = host.api_get("/metrics").await;
    let count = |outcome: &str| {
        metric_value(
            &metrics,
            &format!("weir_query_answer_cache_total{{code=\"{outcome}\"}}"),
        )
    };
    assert_eq!((count("miss"), count("hit")), (1.0, 1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_authenticated_answer_is_private() {
    let host = TestHost::start().await;
    let mut meter = host.device("m1", "acme").await;
    send_small_set(&mut meter).await;
    let token = host.api_token("acme").await;
    let authorization = format!("Bearer {token}");
    let history = "/v1/devices/m1/keys/power/history";
    let trend = "/v1/devices/m1/keys/power/trend";
    let now = now_ms() / HOUR * HOUR;
    let paths = [
        "/v1/devices".to_owned(),
        "/v1/devices/m1/keys".to_owned(),
        "/v1/devices/m1/keys/power".to_owned(),
        "/v1/devices/m1/latest".to_owned(),
        // Closed (immutable), open, and a redirect to the canonical range.
        format!("{history}?from={BASE}&to={}", BASE + HOUR),
        format!("{history}?from={}&to={}", now - HOUR, now + HOUR),
        format!("{history}?from={}&to={}", BASE + 1, BASE + HOUR),
        format!("{trend}?from={BASE}&to={}&bucket=1h", BASE + DAY),
        "/v1/devices/nobody/latest".to_owned(),
        "/v1/events".to_owned(),
        "/v1/nothing-here".to_owned(),
    ];
    for path in &paths {
        for headers in [vec![("authorization", authorization.as_str())], vec![]] {
            let (status, answer, _) = host.api_exchange(Method::GET, path, &headers).await;
            let control = answer
                .get(CACHE_CONTROL)
                .unwrap_or_else(|| panic!("{path} ({status}): no Cache-Control"))
                .to_str()
                .unwrap();
            assert!(
                control.starts_with("private") && !control.contains("public"),
                "{path} ({status}, token: {}): {control}",
                !headers.is_empty()
            );
        }
    }
}
