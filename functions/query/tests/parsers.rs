//! Property tests ("fuzzing") of what the query API reads from a request's URL: the path,
//! split into its endpoint and segments by `weir_contract::routes` (shared with the host, which
//! caches answers by it) and percent-decoded by its one `percent_decode`, and the query string
//! of every endpoint (`QueryParams`, history, trend, the devices page and their cursors).
//! Whatever the URL — random text, or queries that are nearly right (unknown, repeated and empty
//! parameters, broken escapes, numbers past the edges, odd unicode) — the parsers answer with a
//! typed request, a `400` whose body is `{"error": {"code", "message"}}` with a known code and a
//! message free of internal text, or a redirect to the canonical URL, which itself is then
//! served as it is: following a redirect never meets another one. Nothing panics.
//!
//! Daily trend buckets lie on local midnights, which only PostgreSQL knows; here every bucket
//! uses the fixed-step grid (`Step`), as sub-day buckets do in the component.
//!
//! Each property runs proptest's default 256 cases; `PROPTEST_CASES=100000` runs more (see
//! docs/FUZZING.md). A failure is saved to `tests/parsers.proptest-regressions` and replayed
//! first on every later run.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value as Json;
use weir_contract::routes::{self, Endpoint, Route};
use weir_query::answer::{Answer, CANONICAL_REDIRECT, NO_STORE};
use weir_query::cursor;
use weir_query::history::HistoryRequest;
use weir_query::metadata::DevicesPage;
use weir_query::params::{
    MAX_LIMIT, MAX_TO_MS, MAX_TS_MS, QueryParams, percent_decode, percent_encode,
};
use weir_query::range::{DAY_MS, HISTORY_GRID_MS, Step};
use weir_query::trend::{BUCKETS, MAX_BUCKETS, TrendParams};

const HISTORY_PATH: &str = "/v1/devices/m1/keys/power/history";
const TREND_PATH: &str = "/v1/devices/m1/keys/power/trend";

/// The parameters each kind of endpoint takes.
const PARAMETER_SETS: &[&[&str]] = &[
    &[],
    weir_query::history::PARAMS,
    weir_query::trend::PARAMS,
    weir_query::metadata::DEVICES_PARAMS,
];

/// The error codes a query-string parser answers with.
const CODES: &[&str] = &["invalid_parameter", "range_too_large"];

/// Text that gives away internals: Rust debug dumps, source paths, SQL, panics. A message may
/// only contain one when it quotes the input that did.
const LEAKS: &[&str] = &[
    "SQL",
    "SELECT",
    "Error {",
    "Error(",
    "Some(",
    "ParseIntError",
    "Utf8Error",
    ".rs:",
    "src/",
    "/work/",
    "/home/",
    "registry/",
    "panicked",
];

// ---- the checks every answer passes ----

/// `raw` with its escapes decoded as far as they decode, so that a message quoting a decoded
/// name counts as quoting the input.
fn decoded_lossy(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if bytes[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_no_leak(message: &str, input: &str) -> Result<(), TestCaseError> {
    let decoded = decoded_lossy(input);
    for leak in LEAKS {
        prop_assert!(
            input.contains(leak) || decoded.contains(leak) || !message.contains(leak),
            "message {message:?} contains {leak:?}"
        );
    }
    Ok(())
}

/// A refusal: `400` with a known code and a clean message, never stored by caches.
fn check_error(answer: &Answer, input: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(answer.status, 400, "{:?}", answer);
    prop_assert_eq!(answer.cache_control, NO_STORE);
    prop_assert_eq!(answer.location.as_deref(), None);
    let body: Json = serde_json::from_str(&answer.body).unwrap();
    let code = body["error"]["code"].as_str().unwrap_or_default();
    prop_assert!(CODES.contains(&code), "unknown code {code:?}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    prop_assert!(!message.is_empty(), "an empty message");
    assert_no_leak(message, input)
}

/// A refusal, or a redirect to `path?<canonical query>` (308, or 302 when a clock-dependent
/// default was filled in) that says where in its body too. Returns the redirect's query.
fn check_refusal_or_redirect(
    answer: &Answer,
    path: &str,
    input: &str,
) -> Result<Option<String>, TestCaseError> {
    if answer.status == 400 {
        check_error(answer, input)?;
        return Ok(None);
    }
    let cache_control = match answer.status {
        308 => CANONICAL_REDIRECT,
        302 => NO_STORE,
        other => return Err(TestCaseError::fail(format!("status {other}: {answer:?}"))),
    };
    prop_assert_eq!(answer.cache_control, cache_control);
    let location = answer.location.clone().unwrap_or_default();
    let body: Json = serde_json::from_str(&answer.body).unwrap();
    prop_assert_eq!(body["location"].as_str(), Some(location.as_str()));
    let query = location.strip_prefix(&format!("{path}?"));
    prop_assert!(query.is_some(), "redirect elsewhere: {location}");
    Ok(query.map(str::to_owned))
}

// ---- strategies ----

/// Strings a parser may trip over.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => prop::sample::select(&[
            "", "%", "%2", "%zz", "%%41", "%+f", "%C3", "%FF", "%00", "+", "%2B", "&", "=", "==",
            "\0", "\u{feff}", "\u{202e}x", "🦀", "٣", "SQL", "%53QL", "Error {",
        ][..])
        .prop_map(str::to_owned),
    ]
}

/// `text` with some characters written as `%XX` escapes (upper or lower case hex): the same
/// value to every decoder, another spelling to a cache.
fn spelled(text: String) -> impl Strategy<Value = String> {
    let n = text.chars().count();
    prop::collection::vec((any::<bool>(), any::<bool>()), n).prop_map(move |choices| {
        text.chars()
            .zip(choices)
            .map(|(c, (escape, lower))| {
                if !escape {
                    return c.to_string();
                }
                let mut buf = [0; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| {
                        if lower {
                            format!("%{b:02x}")
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect()
            })
            .collect()
    })
}

fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..=MAX_TS_MS).prop_map(|t| t.to_string()),
        2 => (0i64..10).prop_map(|n| (n * HISTORY_GRID_MS).to_string()),
        1 => any::<i64>().prop_map(|t| t.to_string()),
        1 => prop::sample::select(&[
            "-1", "253402300799999", "253402300800000", "253402300800001", "9223372036854775808",
            "1.5", "+5",
            " 5", "0x10", "00005", "1e3", "٣",
        ][..])
        .prop_map(str::to_owned),
    ]
}

fn limit() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..=MAX_LIMIT + 1).prop_map(|n| n.to_string()),
        1 => prop::sample::select(&["-1", "+1", "01", "ten", "18446744073709551616"][..])
            .prop_map(str::to_owned),
    ]
}

fn history_cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<i64>().prop_map(cursor::encode_ts),
        1 => "[0-9a-fA-F]{14,18}",
        1 => prop::sample::select(&["+000000000000001", "-000000000000001"][..]).prop_map(str::to_owned),
    ]
}

fn devices_cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>().prop_map(|name| cursor::encode_name(&name)),
        1 => "[0-9a-fA-F]{0,9}",
        1 => prop::sample::select(&["ff", "c3", "+0", "é1"][..]).prop_map(str::to_owned),
    ]
}

fn bucket() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = BUCKETS.iter().map(|b| b.name).collect();
    prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_owned),
        1 => prop::sample::select(&["7m", "1H", "", "1d "][..]).prop_map(str::to_owned),
    ]
}

fn aggs() -> impl Strategy<Value = String> {
    let name = prop::sample::select(
        &[
            "min", "max", "avg", "sum", "count", "first", "last", "median", "", "MIN",
        ][..],
    );
    prop::collection::vec(name, 1..5).prop_map(|names| names.join(","))
}

fn tz() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&[
            "UTC", "Europe/Stockholm", "Etc/GMT+1", "America/Port-au-Prince", "Etc/GMT-14",
        ][..])
        .prop_map(str::to_owned),
        1 => (60usize..70).prop_map(|n| "A".repeat(n)),
        1 => prop::sample::select(&["Europe/Stockholm;drop", "../../etc", "Europe Stockholm"][..])
            .prop_map(str::to_owned),
    ]
}

/// One `name=value` part of a query: a parameter of the endpoints with a right or wrong value,
/// an unknown one, one without `=`; names and values spelled with or without escapes.
fn part() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        3 => timestamp().prop_map(|v| ("from".to_owned(), v)),
        3 => timestamp().prop_map(|v| ("to".to_owned(), v)),
        2 => limit().prop_map(|v| ("limit".to_owned(), v)),
        1 => history_cursor().prop_map(|v| ("cursor".to_owned(), v)),
        1 => devices_cursor().prop_map(|v| ("cursor".to_owned(), v)),
        2 => bucket().prop_map(|v| ("bucket".to_owned(), v)),
        2 => aggs().prop_map(|v| ("agg".to_owned(), v)),
        2 => tz().prop_map(|v| ("tz".to_owned(), v)),
        1 => (odd_text(), odd_text()),
    ];
    let spelled_pair = pair.prop_flat_map(|(name, value)| {
        (
            prop_oneof![4 => Just(name.clone()), 1 => spelled(name)],
            prop_oneof![4 => Just(value.clone()), 1 => spelled(value)],
            prop::sample::select(&["=", "=", "=", "", "=="][..]),
        )
    });
    spelled_pair.prop_map(|(name, value, equals)| match equals {
        "" => name,
        "==" => format!("{name}=={value}"),
        _ => format!("{name}={value}"),
    })
}

/// A query string: nearly right parts joined by `&` (sometimes doubled), or any text.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::collection::vec(part(), 0..6), prop::sample::select(&["&", "&", "&&"][..]))
            .prop_map(|(parts, separator)| parts.join(separator)),
        1 => odd_text(),
    ]
}

/// `from` and `to` on (or just off) a grid of `width` ms, `from` before `to` by up to
/// `max_cells` cells, each present or not; anywhere in time, and often near its end, where
/// `to` rounds up to the last end accepted or lies past it.
fn range(width: i64, max_cells: i64) -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let last_cell = MAX_TS_MS / width;
    (
        prop_oneof![3 => 0..=last_cell, 1 => last_cell - max_cells..=last_cell],
        1..max_cells,
        prop_oneof![3 => Just((0, 0)), 1 => (0..width, 0..width)],
        prop::option::weighted(0.85, Just(())),
        prop::option::weighted(0.85, Just(())),
    )
        .prop_map(move |(cell, cells, (off_from, off_to), from, to)| {
            let mut parts = Vec::new();
            if from.is_some() {
                parts.push(("from", (cell * width + off_from).to_string()));
            }
            if to.is_some() {
                parts.push(("to", ((cell + cells) * width + off_to).to_string()));
            }
            parts
        })
}

/// `parts` as a query, in the canonical order or shuffled, sometimes with escapes.
fn near_canonical(
    parts: impl Strategy<Value = Vec<(&'static str, String)>>,
) -> impl Strategy<Value = String> {
    parts
        .prop_flat_map(|parts| {
            let shuffled = Just(parts.clone()).prop_shuffle();
            (prop_oneof![3 => Just(parts), 1 => shuffled], any::<bool>())
        })
        .prop_flat_map(|(parts, escaped)| {
            let query = parts
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("&");
            if escaped {
                spelled(query).boxed()
            } else {
                Just(query).boxed()
            }
        })
}

/// History queries near their canonical form: a range near the 5-minute grid, a limit and a
/// cursor sometimes.
fn history_query() -> impl Strategy<Value = String> {
    let parts = (
        range(HISTORY_GRID_MS, 2_000),
        prop::option::weighted(0.3, limit()),
        prop::option::weighted(0.2, history_cursor()),
    )
        .prop_map(|(mut parts, limit, cursor)| {
            parts.extend(limit.map(|v| ("limit", v)));
            parts.extend(cursor.map(|v| ("cursor", v)));
            parts
        });
    near_canonical(parts)
}

/// Trend queries near their canonical form: a range near the bucket's grid (sometimes more
/// buckets than are answered), and the other parameters sometimes.
fn trend_query() -> impl Strategy<Value = String> {
    let parts = prop::sample::select(BUCKETS).prop_flat_map(|bucket| {
        (
            range(bucket.ms, MAX_BUCKETS + 100),
            prop::option::weighted(0.6, Just(bucket.name.to_owned())),
            prop::option::weighted(0.3, aggs()),
            prop::option::weighted(0.3, tz()),
        )
            .prop_map(|(mut parts, bucket, aggs, tz)| {
                parts.extend(bucket.map(|v| ("bucket", v)));
                parts.extend(aggs.map(|v| ("agg", v)));
                parts.extend(tz.map(|v| ("tz", v)));
                parts
            })
    });
    near_canonical(parts)
}

/// A path: built from the endpoints' templates with segments of any kind, mangled a little,
/// or any text.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        4 => "[a-zA-Z0-9._~-]{1,8}",
        1 => "(%[0-9A-Fa-f]{2}|[a-z]){1,6}",
        1 => odd_text(),
    ];
    let templated = (
        prop::sample::select(Endpoint::ALL.to_vec()),
        segment.clone(),
        segment,
        prop::sample::select(&["", "/", "//", "/x", "?a=1"][..]),
    )
        .prop_map(|(endpoint, device, key, tail)| {
            format!(
                "{}{tail}",
                endpoint
                    .template()
                    .replace("{device}", &device)
                    .replace("{key}", &key)
            )
        });
    prop_oneof![4 => templated, 1 => odd_text(), 1 => "(/[a-z0-9{}]{0,8}){0,7}"]
}

// ---- paths ----

/// The path `route` stands for: its endpoint's template with its segments put back.
fn rebuilt(route: &Route<'_>) -> String {
    let mut path = route.endpoint.template().to_owned();
    if let Some(device) = route.device {
        path = path.replace("{device}", device);
    }
    if let Some(key) = route.key {
        path = path.replace("{key}", key);
    }
    path
}

proptest! {
    #[test]
    fn a_path_is_its_endpoint_with_its_segments_or_no_endpoint(path in path()) {
        if let Some(route) = routes::parse(&path) {
            for segment in [route.device, route.key].into_iter().flatten() {
                prop_assert!(!segment.is_empty() && !segment.contains('/'), "{route:?}");
            }
            prop_assert_eq!(rebuilt(&route), path);
        }
    }

    #[test]
    fn every_template_with_any_segments_is_its_endpoint(
        endpoint in prop::sample::select(Endpoint::ALL.to_vec()),
        device in "[^/]{1,12}",
        key in "[^/]{1,12}",
    ) {
        let path = endpoint.template().replace("{device}", &device).replace("{key}", &key);
        let route = routes::parse(&path).unwrap();
        prop_assert_eq!(route.endpoint, endpoint);
        let template = endpoint.template();
        prop_assert_eq!(route.device, template.contains("{device}").then_some(device.as_str()));
        prop_assert_eq!(route.key, template.contains("{key}").then_some(key.as_str()));
    }

    #[test]
    fn percent_decoding_undoes_any_encoding(text in any::<String>(), all in any::<bool>()) {
        let encoded = if all {
            text.bytes().map(|b| format!("%{b:02X}")).collect()
        } else {
            percent_encode(&text)
        };
        prop_assert_eq!(percent_decode(&encoded), Some(text));
    }

    #[test]
    fn percent_decoding_any_text_never_grows_it_and_keeps_plain_text(text in odd_text()) {
        match percent_decode(&text) {
            Some(decoded) => {
                prop_assert!(decoded.len() <= text.len());
                if !text.contains('%') {
                    prop_assert_eq!(decoded, text);
                }
            }
            None => prop_assert!(text.contains('%'), "plain text refused: {text:?}"),
        }
    }
}

// ---- query strings ----

proptest! {
    #[test]
    fn query_params_are_allowed_names_once_with_values_or_a_400(
        raw in query(),
        allowed in prop::sample::select(PARAMETER_SETS),
    ) {
        match QueryParams::parse(&raw, allowed) {
            Err(answer) => check_error(&answer, &raw)?,
            Ok(params) => {
                for name in allowed {
                    if let Some(value) = params.get(name) {
                        prop_assert!(!value.is_empty());
                    }
                }
                // Every part was read: a part naming something else would have been refused.
                for part in raw.split('&').filter(|p| !p.is_empty()) {
                    let name = part.split_once('=').map_or(part, |(name, _)| name);
                    let name = percent_decode(name).unwrap();
                    prop_assert!(allowed.contains(&name.as_str()), "{name:?} accepted");
                    prop_assert!(params.get(&name).is_some());
                }
                let _ = (params.timestamp("from"), params.timestamp("to"), params.limit());
            }
        }
    }

    #[test]
    fn a_history_query_is_served_refused_or_redirected_to_a_served_one(
        raw in prop_oneof![3 => history_query(), 1 => query()],
        now in 0..=MAX_TS_MS,
    ) {
        check_history(&raw, now)?;
    }

    #[test]
    fn a_trend_query_is_served_refused_or_redirected_to_a_served_one(
        raw in prop_oneof![3 => trend_query(), 1 => query()],
        now in 0..=MAX_TS_MS,
    ) {
        check_trend(&raw, now)?;
    }

    #[test]
    fn a_query_near_the_end_of_time_is_redirected_to_a_served_one(
        from in MAX_TS_MS - 2 * DAY_MS..MAX_TS_MS,
        to in MAX_TS_MS - DAY_MS..=MAX_TO_MS + 1,
        bucket in bucket(),
    ) {
        check_history(&format!("from={from}&to={to}"), MAX_TS_MS)?;
        check_trend(&format!("from={from}&to={to}&bucket={bucket}"), MAX_TS_MS)?;
    }

    #[test]
    fn a_devices_query_is_a_page_or_a_400(raw in query()) {
        match DevicesPage::from_query(&raw) {
            Err(answer) => check_error(&answer, &raw)?,
            Ok(page) => prop_assert!((1..=MAX_LIMIT).contains(&page.limit)),
        }
    }

    #[test]
    fn cursors_decode_what_they_encode_and_refuse_the_rest(
        ts in any::<i64>(),
        name in any::<String>(),
        garbage in odd_text(),
    ) {
        prop_assert_eq!(cursor::decode_ts(&cursor::encode_ts(ts)).ok(), Some(ts));
        prop_assert_eq!(cursor::decode_name(&cursor::encode_name(&name)).ok(), Some(name));
        if let Err(answer) = cursor::decode_ts(&garbage) {
            check_error(&answer, &garbage)?;
        }
        if let Err(answer) = cursor::decode_name(&garbage) {
            check_error(&answer, &garbage)?;
        }
    }

    #[test]
    fn a_lateness_window_is_never_negative(text in odd_text()) {
        prop_assert!(weir_query::lateness_window_ms(Some(&text)) >= 0);
    }
}

/// History at `raw`: a request on the 5-minute grid within every bound, a 400, or a redirect
/// whose target is served as it is.
fn check_history(raw: &str, now: i64) -> Result<(), TestCaseError> {
    match HistoryRequest::plan(HISTORY_PATH, raw, now) {
        Ok(request) => {
            prop_assert!(request.from < request.to, "{request:?}");
            prop_assert!(request.from >= 0 && request.to <= MAX_TO_MS, "{request:?}");
            prop_assert_eq!(request.from % HISTORY_GRID_MS, 0);
            prop_assert_eq!(request.to % HISTORY_GRID_MS, 0);
            prop_assert!((1..=MAX_LIMIT).contains(&request.limit));
            Ok(())
        }
        Err(answer) => {
            let Some(target) = check_refusal_or_redirect(&answer, HISTORY_PATH, raw)? else {
                return Ok(());
            };
            let served = HistoryRequest::plan(HISTORY_PATH, &target, now);
            prop_assert!(
                served.is_ok(),
                "{raw:?} redirects to {target:?}, which answers {served:?}"
            );
            Ok(())
        }
    }
}

/// Trend at `raw`, like [`check_history`], on each bucket's fixed-step grid.
fn check_trend(raw: &str, now: i64) -> Result<(), TestCaseError> {
    let plan = |query: &str| {
        TrendParams::parse(query).and_then(|params| {
            let mut grid = Step(params.bucket.ms);
            params.plan(TREND_PATH, query, now, &mut grid)
        })
    };
    match plan(raw) {
        Ok(request) => {
            let width = request.params.bucket.ms;
            prop_assert!(request.from < request.to, "{request:?}");
            prop_assert!(request.from >= 0 && request.to <= MAX_TO_MS, "{request:?}");
            prop_assert_eq!(request.from % width, 0);
            prop_assert_eq!(request.to % width, 0);
            prop_assert!((request.to - request.from) / width <= MAX_BUCKETS);
            prop_assert!(!request.params.aggs.is_empty());
            prop_assert!(request.params.aggs.windows(2).all(|pair| pair[0] < pair[1]));
            Ok(())
        }
        Err(answer) => {
            let Some(target) = check_refusal_or_redirect(&answer, TREND_PATH, raw)? else {
                return Ok(());
            };
            let served = plan(&target);
            prop_assert!(
                served.is_ok(),
                "{raw:?} redirects to {target:?}, which answers {served:?}"
            );
            Ok(())
        }
    }
}
