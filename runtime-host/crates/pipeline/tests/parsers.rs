//! Property tests ("fuzzing") of the two parsers that read a device's request bodies:
//! `parse_submit` (`POST /v1/submit`) and `parse_metadata` (`PUT /v1/metadata`). Whatever the
//! bytes — random ones, or JSON that is nearly right (wrong types, missing and unknown fields,
//! huge numbers, NUL characters, odd unicode, deep nesting) — a parser answers with a parsed
//! value or an error whose code is one of the known ones, never panics, and never puts internal
//! text (Rust debug dumps, source paths, SQL) in a message a device reads. Its limits hold too:
//! a batch over `max_points` and a metadata body over `MAX_METADATA_ENTRIES` are refused as too
//! large, and what is accepted is within every documented bound.
//!
//! Each property runs proptest's default 256 cases; `PROPTEST_CASES=100000` runs more (see
//! docs/FUZZING.md). A failure is saved to `tests/parsers.proptest-regressions` and replayed
//! first on every later run.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use weir_pipeline::ingest::metadata::{MAX_METADATA_ENTRIES, MetadataRejection, parse_metadata};
use weir_pipeline::ingest::request::{MAX_BATCH_ID_LEN, parse_submit};
use weir_pipeline::ingest::units::{UNITS, is_known_unit};
use weir_pipeline::ingest::{ErrorKind, IngestError};
use weir_runtime::validator::{Point, Value};
use weir_validate::DataType;

// ---- what an answer may say ----

/// The codes `parse_submit` answers with, and the kind each has.
const SUBMIT_CODES: &[(&str, ErrorKind)] = &[
    ("malformed_json", ErrorKind::Invalid),
    ("invalid_field", ErrorKind::Invalid),
    ("invalid_text", ErrorKind::Invalid),
    ("too_many_points", ErrorKind::TooLarge),
];

/// The codes `parse_metadata` refuses a whole body with, and the kind each has.
const METADATA_CODES: &[(&str, ErrorKind)] = &[
    ("malformed_json", ErrorKind::Invalid),
    ("invalid_field", ErrorKind::Invalid),
    ("too_many_entries", ErrorKind::TooLarge),
];

/// The codes one refused metadata entry may carry.
const ENTRY_CODES: &[&str] = &[
    "invalid_field",
    "unknown_field",
    "missing_field",
    "invalid_key",
    "reserved_key",
    "unknown_type",
    "invalid_text",
    "too_long",
    "unknown_unit",
    "invalid_range",
];

/// Text that gives away internals: Rust debug dumps, source paths, SQL, panics. A message may
/// only contain one when it quotes the input that did.
const LEAKS: &[&str] = &[
    "SQL",
    "Error {",
    "Error(",
    "Some(",
    "Number(",
    "String(",
    "Object {",
    "Array [",
    ".rs:",
    "src/",
    "/work/",
    "/home/",
    "registry/",
    "panicked",
    "RUST_BACKTRACE",
];

fn assert_no_leak(message: &str, input: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(!message.is_empty(), "an empty message");
    let input = String::from_utf8_lossy(input);
    for leak in LEAKS {
        prop_assert!(
            input.contains(leak) || !message.contains(leak),
            "message {message:?} contains {leak:?}"
        );
    }
    Ok(())
}

fn assert_known_error(
    error: &IngestError,
    codes: &[(&str, ErrorKind)],
    input: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert!(
        codes.contains(&(error.code, error.kind)),
        "unknown code or kind: {error:?}"
    );
    assert_no_leak(&error.message, input)
}

// ---- the checks every submit answer passes ----

/// `parse_submit(body, max_points)` either refuses with a known code or gives a request within
/// every bound.
fn check_submit(body: &[u8], max_points: usize) -> Result<(), TestCaseError> {
    match parse_submit(body, max_points) {
        Err(error) => assert_known_error(&error, SUBMIT_CODES, body),
        Ok(request) => {
            prop_assert!(!request.batch.is_empty() && request.batch.len() <= MAX_BATCH_ID_LEN);
            prop_assert!(!request.batch.chars().any(char::is_control));
            prop_assert!(request.points.len() <= max_points);
            for point in &request.points {
                if let Value::Text(text) = &point.value {
                    prop_assert!(!text.contains('\0'), "a NUL character was accepted");
                }
            }
            Ok(())
        }
    }
}

// ---- the checks every metadata answer passes ----

fn check_metadata(body: &[u8]) -> Result<(), TestCaseError> {
    let parsed = match parse_metadata(body) {
        Err(error) => return assert_known_error(&error, METADATA_CODES, body),
        Ok(parsed) => parsed,
    };
    let entries = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.as_array().cloned())
        .expect("an accepted body is a JSON array");
    prop_assert!(entries.len() <= MAX_METADATA_ENTRIES);
    prop_assert_eq!(parsed.records.len() + parsed.rejected.len(), entries.len());
    for pair in parsed.rejected.windows(2) {
        prop_assert!(pair[0].index < pair[1].index, "rejections out of order");
    }
    for rejection in &parsed.rejected {
        check_rejection(rejection, &entries, body)?;
    }
    for record in &parsed.records {
        prop_assert!(weir_validate::check_key(&record.key).is_ok(), "{record:?}");
        let data_type = DataType::parse(&record.data_type);
        prop_assert!(data_type.is_some(), "{record:?}");
        let texts = [&record.name, &record.description, &record.unit];
        for text in texts.into_iter().flatten() {
            prop_assert!(
                !text.contains('\0'),
                "a NUL character was accepted: {record:?}"
            );
        }
        prop_assert!(record.name.as_ref().is_none_or(|n| n.chars().count() <= 64));
        prop_assert!(
            record
                .description
                .as_ref()
                .is_none_or(|d| d.chars().count() <= 1024)
        );
        prop_assert!(record.unit.as_deref().is_none_or(is_known_unit));
        if let (Some(min), Some(max)) = (record.min, record.max) {
            prop_assert!(min <= max, "{record:?}");
        }
        let map = &record.value_map;
        if data_type == Some(DataType::Enum) {
            prop_assert!((1..=256).contains(&map.len()), "{record:?}");
        } else {
            prop_assert!(map.is_empty(), "{record:?}");
        }
        prop_assert!(
            map.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{record:?}"
        );
        prop_assert!(map.iter().all(|(_, label)| !label.contains('\0')));
    }
    Ok(())
}

fn check_rejection(
    rejection: &MetadataRejection,
    entries: &[serde_json::Value],
    body: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert!(rejection.index < entries.len());
    prop_assert!(
        ENTRY_CODES.contains(&rejection.code),
        "unknown entry code {:?}",
        rejection.code
    );
    // An unknown field is named as sent, even when its name is "".
    prop_assert!(!rejection.field.is_empty() || rejection.code == "unknown_field");
    let key = entries[rejection.index].get("key").and_then(|k| k.as_str());
    prop_assert_eq!(rejection.key.as_deref(), key);
    assert_no_leak(&rejection.message, body)
}

// ---- strategies: JSON that is nearly right ----

/// A JSON document as text, built so that numbers can be literals no `serde_json::Value`
/// holds (`1e400`, 20 digits).
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    /// Rendered as it is: a number literal (or a whole document).
    Literal(String),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn text(text: &str) -> Json {
        Json::Text(text.to_owned())
    }

    fn int(n: i64) -> Json {
        Json::Literal(n.to_string())
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Literal(literal) => out.push_str(literal),
            Json::Text(text) => out.push_str(&serde_json::to_string(text).unwrap()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render_into(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(name).unwrap());
                    out.push(':');
                    value.render_into(out);
                }
                out.push('}');
            }
        }
    }
}

/// Number literals at the edges: beyond f64, beyond u64 and i64, negative zero, exponents.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1.0",
    "-1.5",
    "1e400",
    "-1e400",
    "1e-400",
    "1E2",
    "0.1e1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1.7976931348623157e308",
    "5e-324",
];

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        prop::sample::select(EDGE_NUMBERS).prop_map(str::to_owned),
    ]
}

/// Strings a parser may trip over: NUL and other controls, byte order marks, right-to-left
/// overrides, astral characters, combining marks, lone surrogates' replacement, long runs.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => prop::sample::select(&[
            "", "\0", "a\0b", "\u{feff}", "\u{202e}abc", "\u{200b}", "🦀", "e\u{301}", "\u{fffd}",
            "\u{7f}", "\u{85}", "\u{2028}", "weir", "weir.x", "a..b", "meter.power", "W", "kWh",
            "enum", "f64", "SQL", "Error {", "null", "{}", "[]",
        ][..])
        .prop_map(str::to_owned),
        1 => (prop::sample::select(&["x", "é", "🦀", "\0"][..]), 60usize..1100)
            .prop_map(|(unit, n)| unit.repeat(n)),
    ]
}

fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Literal),
        odd_text().prop_map(Json::Text),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((odd_text(), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

/// `Some(value)` mostly from `right`, sometimes any JSON, sometimes absent.
fn field(right: impl Strategy<Value = Json> + 'static) -> impl Strategy<Value = Option<Json>> {
    prop_oneof![
        6 => right.prop_map(Some),
        2 => any_json().prop_map(Some),
        1 => Just(None),
    ]
}

fn object(fields: Vec<(&str, Option<Json>)>, extra: Option<(String, Json)>) -> Json {
    let mut object: Vec<(String, Json)> = fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name.to_owned(), value)))
        .collect();
    object.extend(extra);
    Json::Object(object)
}

fn extra_field() -> impl Strategy<Value = Option<(String, Json)>> {
    prop::option::weighted(0.1, (odd_text(), any_json()))
}

fn valid_batch_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,128}"
}

/// A decimal fraction such as `-1234.567` (a float to JSON, whatever its digits).
fn decimal() -> impl Strategy<Value = String> {
    (any::<i32>(), 0u32..1000).prop_map(|(whole, thousandths)| format!("{whole}.{thousandths:03}"))
}

/// A well-typed value and what it must parse to.
fn valid_value() -> impl Strategy<Value = (Json, Value)> {
    prop_oneof![
        any::<i64>().prop_map(|n| (Json::int(n), Value::Int(n))),
        (i64::MAX as u64 + 1..=u64::MAX)
            .prop_map(|n| (Json::Literal(n.to_string()), Value::Uint(n))),
        decimal().prop_map(|text| {
            let f: f64 = text.parse().unwrap();
            (Json::Literal(text), Value::Float(f))
        }),
        any::<bool>().prop_map(|b| (Json::Bool(b), Value::Boolean(b))),
        any::<String>()
            .prop_filter("no NUL", |s| !s.contains('\0'))
            .prop_map(|s| (Json::Text(s.clone()), Value::Text(s))),
    ]
}

fn valid_point() -> impl Strategy<Value = (Json, Point)> {
    (any::<String>(), valid_value(), any::<i64>()).prop_map(|(key, (value, parsed), ts)| {
        let json = object(
            vec![
                ("key", Some(Json::Text(key.clone()))),
                ("value", Some(value)),
                ("ts", Some(Json::int(ts))),
            ],
            None,
        );
        let point = Point {
            key,
            value: parsed,
            ts,
        };
        (json, point)
    })
}

fn nearly_valid_point() -> impl Strategy<Value = Json> {
    let key = prop_oneof![
        Just(Json::text("meter.power")),
        odd_text().prop_map(Json::Text)
    ];
    let value = prop_oneof![
        valid_value().prop_map(|(json, _)| json),
        odd_text().prop_map(Json::Text),
        number().prop_map(Json::Literal),
    ];
    let ts = prop_oneof![
        any::<i64>().prop_map(Json::int),
        number().prop_map(Json::Literal)
    ];
    (field(key), field(value), field(ts), extra_field()).prop_map(|(key, value, ts, extra)| {
        object(vec![("key", key), ("value", value), ("ts", ts)], extra)
    })
}

fn nearly_valid_submit() -> impl Strategy<Value = Json> {
    let batch = prop_oneof![
        valid_batch_id().prop_map(Json::Text),
        odd_text().prop_map(Json::Text)
    ];
    let points = prop_oneof![
        5 => prop::collection::vec(nearly_valid_point(), 0..12).prop_map(Json::Array),
        1 => prop::collection::vec(any_json(), 0..6).prop_map(Json::Array),
    ];
    (field(batch), field(points), extra_field()).prop_map(|(batch, points, extra)| {
        object(vec![("batch", batch), ("points", points)], extra)
    })
}

fn data_type_name() -> impl Strategy<Value = Json> {
    let names: Vec<&'static str> = DataType::ALL.iter().map(|t| t.name()).collect();
    prop_oneof![
        4 => prop::sample::select(names).prop_map(Json::text),
        1 => Just(Json::text("enum")),
        1 => odd_text().prop_map(Json::Text),
    ]
}

fn value_map() -> impl Strategy<Value = Json> {
    let code = prop_oneof![
        4 => any::<i64>().prop_map(|n| n.to_string()),
        1 => number(),
        1 => odd_text(),
    ];
    let label = prop_oneof![4 => odd_text().prop_map(Json::Text), 1 => any_json()];
    prop_oneof![
        6 => prop::collection::vec((code, label), 0..8).prop_map(Json::Object),
        1 => (250usize..262).prop_map(|n| {
            Json::Object((0..n).map(|i| (i.to_string(), Json::text("x"))).collect())
        }),
    ]
}

fn nearly_valid_entry() -> impl Strategy<Value = Json> {
    let key = prop_oneof![
        3 => "[a-z]{1,8}(\\.[a-z0-9]{1,8}){0,3}".prop_map(Json::Text),
        1 => odd_text().prop_map(Json::Text),
    ];
    let unit = prop_oneof![
        3 => prop::sample::select(UNITS).prop_map(Json::text),
        1 => odd_text().prop_map(Json::Text),
    ];
    let text = || odd_text().prop_map(Json::Text);
    let bound = || number().prop_map(Json::Literal);
    (
        field(key),
        field(data_type_name()),
        field(text()),
        field(unit),
        field(text()),
        field(value_map()),
        field(bound()),
        field(bound()),
        extra_field(),
    )
        .prop_map(
            |(key, data_type, name, unit, description, value_map, min, max, extra)| {
                object(
                    vec![
                        ("key", key),
                        ("type", data_type),
                        ("name", name),
                        ("unit", unit),
                        ("description", description),
                        ("value_map", value_map),
                        ("min", min),
                        ("max", max),
                    ],
                    extra,
                )
            },
        )
}

/// `depth` arrays nested in each other.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn submit_with(points: &[Json]) -> Vec<u8> {
    object(
        vec![
            ("batch", Some(Json::text("b-1"))),
            ("points", Some(Json::Array(points.to_vec()))),
        ],
        None,
    )
    .render()
    .into_bytes()
}

fn good_point(ts: i64) -> Json {
    object(
        vec![
            ("key", Some(Json::text("meter.power"))),
            ("value", Some(Json::int(ts))),
            ("ts", Some(Json::int(ts))),
        ],
        None,
    )
}

// ---- parse_submit ----

proptest! {
    #[test]
    fn any_bytes_are_a_submit_request_or_a_known_error(
        body in prop::collection::vec(any::<u8>(), 0..512),
        max_points in 0usize..16,
    ) {
        check_submit(&body, max_points)?;
    }

    #[test]
    fn nearly_valid_submit_bodies_are_a_request_or_a_known_error(
        body in nearly_valid_submit(),
        max_points in 0usize..16,
    ) {
        check_submit(body.render().as_bytes(), max_points)?;
    }

    #[test]
    fn any_json_is_a_submit_request_or_a_known_error(body in any_json()) {
        check_submit(body.render().as_bytes(), 8)?;
    }

    #[test]
    fn well_typed_points_parse_to_exactly_what_was_sent(
        batch in valid_batch_id(),
        points in prop::collection::vec(valid_point(), 0..16),
    ) {
        let (json, expected): (Vec<Json>, Vec<Point>) = points.into_iter().unzip();
        let body = object(
            vec![("batch", Some(Json::Text(batch.clone()))), ("points", Some(Json::Array(json)))],
            None,
        );
        let request = parse_submit(body.render().as_bytes(), 16).unwrap();
        prop_assert_eq!(request.batch, batch);
        prop_assert_eq!(request.points, expected);
    }

    #[test]
    fn every_float_parses_to_exactly_the_float_sent(
        float in any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ) {
        let body = format!(r#"{{"batch":"b","points":[{{"key":"a.b","value":{float:?},"ts":1}}]}}"#);
        let request = parse_submit(body.as_bytes(), 1).unwrap();
        prop_assert_eq!(&request.points[0].value, &Value::Float(float));
    }

    #[test]
    fn a_batch_id_is_accepted_only_if_short_and_printable(batch in odd_text()) {
        let body = object(
            vec![("batch", Some(Json::Text(batch.clone()))), ("points", Some(Json::Array(vec![])))],
            None,
        );
        let result = parse_submit(body.render().as_bytes(), 1);
        let acceptable =
            (1..=MAX_BATCH_ID_LEN).contains(&batch.len()) && !batch.chars().any(char::is_control);
        match result {
            Ok(request) => prop_assert!(acceptable && request.batch == batch),
            Err(error) => prop_assert!(!acceptable && error.code == "invalid_field", "{error:?}"),
        }
    }

    #[test]
    fn a_batch_over_max_points_is_too_large_whatever_its_points(
        max_points in 0usize..64,
        extra in 1usize..64,
        garbage in prop::collection::vec(prop::sample::select(&[
            "null", "{}", "[]", "\"x\"", "1e300", r#"{"key":1}"#,
            r#"{"key":"a.b","value":"\u0000","ts":1}"#, r#"{"key":"a.b","value":1,"ts":1.5}"#,
        ][..]), 1..4),
    ) {
        let mut points: Vec<Json> = (0..max_points as i64).map(good_point).collect();
        let at_limit = parse_submit(&submit_with(&points), max_points).unwrap();
        prop_assert_eq!(at_limit.points.len(), max_points);

        points.extend(garbage.into_iter().map(|g| Json::Literal(g.to_owned())).cycle().take(extra));
        let error = parse_submit(&submit_with(&points), max_points).unwrap_err();
        prop_assert_eq!((error.code, error.kind), ("too_many_points", ErrorKind::TooLarge));
        assert_no_leak(&error.message, b"")?;
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack(depth in 1usize..50_000) {
        check_submit(nested(depth).as_bytes(), 8)?;
        let in_a_value = format!(
            r#"{{"batch":"b","points":[{{"key":"a.b","ts":1,"value":{}}}]}}"#,
            nested(depth)
        );
        let error = parse_submit(in_a_value.as_bytes(), 8).unwrap_err();
        prop_assert!(
            ["malformed_json", "invalid_field"].contains(&error.code),
            "{error:?}"
        );
        assert_no_leak(&error.message, in_a_value.as_bytes())?;
    }
}

// ---- parse_metadata ----

proptest! {
    #[test]
    fn any_bytes_are_metadata_or_a_known_error(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_metadata(&body)?;
    }

    #[test]
    fn nearly_valid_metadata_entries_are_each_stored_or_refused_with_a_known_code(
        entries in prop::collection::vec(nearly_valid_entry(), 0..12),
    ) {
        check_metadata(Json::Array(entries).render().as_bytes())?;
    }

    #[test]
    fn any_json_is_metadata_or_a_known_error(body in any_json()) {
        check_metadata(body.render().as_bytes())?;
    }

    #[test]
    fn a_metadata_body_over_the_entry_limit_is_too_large(
        extra in 0usize..64,
        entry in prop::sample::select(&[
            r#"{"key":"meter.power","type":"f64","unit":"W"}"#,
            r#"{"key":"meter.state","type":"enum","value_map":{"0":"off"}}"#,
            r#"{"key":"weir.x","type":"f64"}"#,
            r#"{"unti":"W"}"#,
            "{}",
            "null",
        ][..]),
    ) {
        let mut entries = vec![Json::Literal(entry.to_owned()); MAX_METADATA_ENTRIES];
        let body = Json::Array(entries.clone()).render();
        let at_limit = parse_metadata(body.as_bytes()).unwrap();
        prop_assert_eq!(at_limit.records.len() + at_limit.rejected.len(), MAX_METADATA_ENTRIES);

        entries.extend((0..=extra).map(|_| Json::Null));
        let body = Json::Array(entries).render();
        let error = parse_metadata(body.as_bytes()).unwrap_err();
        prop_assert_eq!((error.code, error.kind), ("too_many_entries", ErrorKind::TooLarge));
        assert_no_leak(&error.message, b"")?;
    }

    #[test]
    fn deep_nesting_in_metadata_is_refused_without_overflowing_the_stack(
        depth in 1usize..50_000,
    ) {
        check_metadata(nested(depth).as_bytes())?;
        let in_a_field = format!(r#"[{{"key":"a.b","type":"enum","value_map":{}}}]"#, nested(depth));
        check_metadata(in_a_field.as_bytes())?;
    }
}
