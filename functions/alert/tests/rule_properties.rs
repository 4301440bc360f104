//! Property tests ("fuzzing") of the alerter's rule files, which an operator uploads through
//! the admin API (`check_rules`, TOML or JSON), and of what evaluating an accepted rule does
//! with the points a device sends. Whatever the text — random strings, or rule files that are
//! nearly right (wrong types, missing and unknown fields, bad patterns and durations, CEL that
//! does not parse, uses unknown variables, nests deeply or overflows) — `check_rules` accepts
//! it or refuses it with a message that starts as the alerter's messages do (`invalid TOML rule
//! file: `, `invalid JSON rule file: `, `rule "<id>" ...`), holds no internal text, and never
//! panics. What it accepts is canonical: each rule's stored JSON reads back to a rule that
//! checks and writes the same JSON. Evaluating accepted rules over any points (and any stored
//! state bytes) never panics either.
//!
//! Rule files have no size or count limit of their own (the admin API's body limit bounds
//! them); their conditions do: at most `MAX_CONDITION_BYTES` long and `MAX_CONDITION_LEVELS`
//! deep, so that cel never overflows the stack. Those limits are checked here, with conditions
//! nested and chained far past them. Each property runs proptest's default 256 cases;
//! `PROPTEST_CASES=100000` runs more (see docs/FUZZING.md). A failure is saved to
//! `tests/rule_properties.proptest-regressions` and replayed first on every later run.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value as Json, json};
use weir_alert::{
    AlertRule, KeyPattern, MAX_CONDITION_BYTES, Point, RuleInput, Span, StateEntry, Value,
    check_rules, evaluate, evaluate_stale, parse_rules,
};

/// How every refusal of a rule file begins.
const PREFIXES: &[&str] = &[
    "invalid TOML rule file: ",
    "invalid JSON rule file: ",
    "rule \"",
];

/// Text that gives away internals: Rust debug dumps, source paths, panics. A message may only
/// contain one when it quotes the input that did.
const LEAKS: &[&str] = &[
    "SQL",
    "Error {",
    "Error(",
    "Some(",
    "ParseError",
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
];

fn assert_no_leak(message: &str, input: &str) -> Result<(), TestCaseError> {
    prop_assert!(!message.is_empty(), "an empty message");
    for leak in LEAKS {
        prop_assert!(
            input.contains(leak) || !message.contains(leak),
            "message {message:?} contains {leak:?}"
        );
    }
    Ok(())
}

/// `check_rules(text)` refuses with a known prefix and a clean message, or accepts rules whose
/// canonical JSON is a fixed point. `parse_rules` agrees with it on what parses.
fn check(text: &str) -> Result<(), TestCaseError> {
    let parsed = parse_rules(text);
    match check_rules(text) {
        Err(message) => {
            prop_assert!(
                PREFIXES.iter().any(|prefix| message.starts_with(prefix)),
                "unexpected refusal {message:?}"
            );
            if parsed.is_err() {
                prop_assert_eq!(Err(message.clone()), parsed.map(drop));
            }
            assert_no_leak(&message, text)
        }
        Ok(summaries) => {
            prop_assert_eq!(parsed.map(|rules| rules.len()), Ok(summaries.len()));
            let mut ids: Vec<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), summaries.len(), "duplicate ids were accepted");
            for summary in &summaries {
                prop_assert!(!summary.id.trim().is_empty());
                prop_assert!(!summary.keys.is_empty());
                prop_assert!(summary.stale_after_ms.is_none_or(|ms| ms > 0));
                let rule = AlertRule::from_json(&summary.source).unwrap();
                prop_assert!(rule.check().is_ok(), "the stored rule does not check");
                prop_assert_eq!(&rule.to_json(), &summary.source, "not canonical");
                prop_assert_eq!((&rule.id, rule.version), (&summary.id, summary.version));
            }
            Ok(())
        }
    }
}

// ---- strategies ----

/// Strings a parser may trip over.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => prop::sample::select(&[
            "", " ", "\0", "\u{feff}", "\u{202e}x", "🦀", "e\u{301}", "\u{7f}", "'", "\"", "\\",
            "${x}", "{", "[[rules]]", "SQL", "Error {",
        ][..])
        .prop_map(str::to_owned),
    ]
}

/// Numbers at the edges of u32, i64 and f64, and a few that are not numbers.
fn odd_number() -> impl Strategy<Value = Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        prop::sample::select(&[0i64, -1, u32::MAX as i64, u32::MAX as i64 + 1][..])
            .prop_map(Json::from),
        odd_text().prop_map(Json::from),
    ]
}

fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        odd_number(),
        odd_text().prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((odd_text(), inner), 0..4)
                .prop_map(|fields| Json::Object(fields.into_iter().collect())),
        ]
    })
}

/// `Some` of a right value mostly, of any JSON sometimes; or absent.
fn field(right: impl Strategy<Value = Json> + 'static, absent: f64) -> BoxedStrategy<Option<Json>> {
    let present = prop_oneof![6 => right, 1 => any_json()];
    prop::option::weighted(1.0 - absent, present).boxed()
}

fn key_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&[
            "meter.*.temperature", "meter.**", "**", "*", "a.b", "meter.1.door", "**.x.**.y",
        ][..]).prop_map(str::to_owned),
        2 => "(\\*\\*|\\*|[a-z0-9]{1,3})(\\.(\\*\\*|\\*|[a-z0-9]{1,3})){0,4}",
        1 => prop::sample::select(&["", "a..b", ".a", "a.", "a.b*", "*x", "***"][..])
            .prop_map(str::to_owned),
        1 => odd_text(),
    ]
}

fn patterns() -> impl Strategy<Value = Json> {
    prop_oneof![
        key_pattern().prop_map(Json::from),
        prop::collection::vec(key_pattern(), 0..3).prop_map(Json::from),
    ]
}

fn device_globs() -> impl Strategy<Value = Json> {
    let glob = prop_oneof!["[a-z0-9*-]{0,8}", odd_text(),];
    prop_oneof![
        glob.clone().prop_map(Json::from),
        prop::collection::vec(glob, 0..3).prop_map(Json::from),
    ]
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&["5m", "90s", "1h30m", "250ms", "1d", "1d2h3m4s5ms"][..])
            .prop_map(str::to_owned),
        2 => "[0-9]{1,20}(d|h|m|s|ms|us|)([0-9]{1,3}(d|h|m|s|ms))?",
        1 => prop::sample::select(&[
            "", "0s", "5m1h", "5", "m", "-5m", "1.5h", " 5m ", "5 m", "106751991167301d",
            "106751991167300d", "9223372036854775807ms", "9223372036854775808ms", "١m",
        ][..])
        .prop_map(str::to_owned),
        1 => odd_text(),
    ]
}

/// CEL expressions: well-formed ones over the documented variables (and some others), with
/// literals at the edges, operators, macros and functions; and text that is not CEL.
fn cel() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        4 => prop::sample::select(&[
            "value", "previous", "key", "parts", "device", "ts", "keys", "vaule", "x",
        ][..]).prop_map(str::to_owned),
        3 => prop::sample::select(&[
            "0", "1", "-1", "80", "80.5", "1e308", "-1e308", "9223372036854775807",
            "-9223372036854775808", "18446744073709551615u", "0u", "true", "false", "null",
            "'meter.1.door'", "'on'", "\"\\u0000\"", "b'\\xff'", "'🦀'", "[]", "{}",
            "0.0", "-0.0", "1u",
        ][..]).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ];
    let expression = atom.prop_recursive(4, 24, 3, |inner| {
        let binary = prop::sample::select(
            &[
                "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in",
            ][..],
        );
        let method = prop::sample::select(
            &[
                "size()",
                "contains('a')",
                "startsWith('meter')",
                "endsWith('.door')",
                "exists(k, k == 'a')",
                "all(k, k != '')",
                "map(k, k + k)",
                "filter(k, true)",
                "exists_one(k, true)",
            ][..],
        );
        let function = prop::sample::select(
            &[
                "size", "int", "uint", "double", "string", "bool", "bytes", "type", "dyn", "has",
                "max", "matches",
            ][..],
        );
        prop_oneof![
            (inner.clone(), binary, inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("!{a}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, i)| format!("{a}[{i}]")),
            (inner.clone(), "[a-z_]{1,6}").prop_map(|(a, f)| format!("{a}.{f}")),
            (inner.clone(), method).prop_map(|(a, m)| format!("{a}.{m}")),
            (function, inner.clone()).prop_map(|(f, a)| format!("{f}({a})")),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            (inner.clone(), inner).prop_map(|(k, v)| format!("{{{k}: {v}}}")),
        ]
    });
    prop_oneof![
        6 => expression,
        1 => odd_text(),
        // Nesting within the parser's recursion limit (96); deeper nesting has properties of
        // its own, which find bugs.
        1 => nested_cel(1..90),
    ]
}

/// How a condition nests: an opening and closing text around `value`.
const NESTINGS: &[(&str, &str)] = &[
    ("(", ")"),
    ("!", ""),
    ("-", ""),
    ("[", "]"),
    ("{1:", "}"),
    ("f(", ")"),
];

/// How a condition chains: a text repeated after `value`.
const CHAINS: &[&str] = &[".x", "[0]", ".f()", " + 1", " && true", ".exists(k, true)"];

/// Conditions nested or chained `depth` times: `((value))`, `!!value`, `value.x.x`,
/// `value[0][0]`, `value + 1 + 1`, ...
fn nested_cel(depth: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let nesting =
        (prop::sample::select(NESTINGS), depth.clone()).prop_map(|((open, close), depth)| {
            format!("{}value{}", open.repeat(depth), close.repeat(depth))
        });
    prop_oneof![nesting, chained_cel(depth)]
}

/// Conditions chained `depth` times: `value.x.x`, `value[0][0]`, `value + 1 + 1`, ...
fn chained_cel(depth: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    (prop::sample::select(CHAINS), depth)
        .prop_map(|(link, depth)| format!("value{}", link.repeat(depth)))
}

fn severities() -> impl Strategy<Value = Json> {
    let level = prop::sample::select(&["critical", "major", "minor", "warning", "fatal"][..]);
    prop::collection::vec((level, cel().prop_map(Json::from)), 0..3).prop_map(|levels| {
        Json::Object(
            levels
                .into_iter()
                .map(|(name, condition)| (name.to_owned(), condition))
                .collect(),
        )
    })
}

fn rule() -> impl Strategy<Value = Json> {
    let id = prop_oneof![
        4 => "[a-z][a-z0-9-]{0,10}",
        1 => odd_text(),
    ];
    let version = prop_oneof![4 => (0u32..5).prop_map(Json::from), 1 => odd_number()];
    let severity_level =
        prop::sample::select(&["warning", "minor", "major", "critical", "fatal"][..]);
    let count = prop_oneof![3 => (0u32..5).prop_map(Json::from), 1 => odd_number()];
    (
        (
            field(id.prop_map(Json::from), 0.05),
            field(version, 0.05),
            field(patterns(), 0.05),
            field(patterns(), 0.7),
            field(device_globs(), 0.7),
        ),
        (
            field(severities(), 0.1),
            field(cel().prop_map(Json::from), 0.7),
            field(duration().prop_map(Json::from), 0.7),
            field(count, 0.8),
            field(duration().prop_map(Json::from), 0.8),
            field(duration().prop_map(Json::from), 0.7),
            field(severity_level.prop_map(Json::from), 0.8),
        ),
        prop::option::weighted(0.05, (odd_text(), any_json())),
    )
        .prop_map(
            |(
                (id, version, keys, context, devices),
                (severity, clear, hold_for, count, within, stale_after, stale_severity),
                extra,
            )| {
                let mut rule = Map::new();
                let fields = [
                    ("id", id),
                    ("version", version),
                    ("keys", keys),
                    ("context", context),
                    ("devices", devices),
                    ("severity", severity),
                    ("clear", clear),
                    ("for", hold_for),
                    ("count", count),
                    ("within", within),
                    ("stale_after", stale_after),
                    ("stale_severity", stale_severity),
                ];
                for (name, value) in fields {
                    if let Some(value) = value {
                        rule.insert(name.to_owned(), value);
                    }
                }
                if let Some((name, value)) = extra {
                    rule.insert(name, value);
                }
                Json::Object(rule)
            },
        )
}

/// A rule file as JSON, and as TOML when TOML can say it (it has no null).
fn rule_file() -> impl Strategy<Value = Vec<String>> {
    let rules = prop_oneof![
        8 => prop::collection::vec(rule(), 0..4).prop_map(Json::from),
        1 => any_json(),
    ];
    (
        rules,
        prop::option::weighted(0.05, (odd_text(), any_json())),
    )
        .prop_map(|(rules, extra)| {
            let mut file = Map::new();
            file.insert("rules".into(), rules);
            if let Some((name, value)) = extra {
                file.insert(name, value);
            }
            let file = Json::Object(file);
            let mut texts = vec![file.to_string()];
            texts.extend(toml::to_string(&file).ok());
            texts
        })
}

fn point() -> impl Strategy<Value = Point> {
    let key = prop_oneof![
        4 => prop::sample::select(&[
            "meter.1.temperature", "meter.1.door", "a.b", "meter", "x.y",
        ][..]).prop_map(str::to_owned),
        1 => odd_text(),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::Uint),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        odd_text().prop_map(Value::Text),
    ];
    let ts = prop_oneof![
        4 => 0i64..1_000_000,
        1 => any::<i64>(),
    ];
    (key, value, ts).prop_map(|(key, value, ts)| Point { key, value, ts })
}

/// A `{"rules": [rule]}` file with one rule whose warning is `condition`.
fn one_condition(condition: &str) -> String {
    json!({"rules": [{"id": "r", "version": 1, "keys": "meter.**",
                      "severity": {"warning": condition}}]})
    .to_string()
}

// ---- the properties ----

proptest! {
    #[test]
    fn any_text_is_rules_or_a_refusal(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn nearly_valid_rule_files_are_rules_or_a_refusal_in_toml_and_json(texts in rule_file()) {
        for text in &texts {
            check(text)?;
        }
    }

    #[test]
    fn any_cel_condition_compiles_or_is_refused_naming_the_rule_and_level(condition in cel()) {
        let text = one_condition(&condition);
        check(&text)?;
        if let Err(message) = check_rules(&text) {
            prop_assert!(message.starts_with("rule \"r\" v1: severity.warning: "), "{message}");
        }
    }

    #[test]
    fn deeply_nested_cel_is_refused_with_a_clean_message(condition in nested_cel(90..1_000)) {
        let text = one_condition(&condition);
        check(&text)?;
        if let Err(message) = check_rules(&text) {
            prop_assert!(message.starts_with("rule \"r\" v1: severity.warning: "), "{message}");
        }
    }

    #[test]
    fn very_long_cel_chains_are_refused_without_overflowing_the_stack(
        condition in chained_cel(1..20_000),
    ) {
        let text = one_condition(&condition);
        check(&text)?;
        match check_rules(&text) {
            Ok(summaries) => {
                prop_assert!(condition.len() <= MAX_CONDITION_BYTES);
                // What is accepted also evaluates, which recurses as deep as parsing.
                let rules: Vec<RuleInput> = summaries
                    .into_iter()
                    .map(|s| RuleInput { id: s.id, version: s.version, source: s.source })
                    .collect();
                let point = Point { key: "meter.1".into(), value: Value::Int(1), ts: 1 };
                let evaluation = evaluate("dev-1", &[point], &rules, &[]);
                prop_assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
            }
            Err(message) => {
                prop_assert!(message.starts_with("rule \"r\" v1: severity.warning: "), "{message}");
                prop_assert!(message.contains("at most"), "{message}");
            }
        }
    }

    #[test]
    fn accepted_rules_evaluate_any_points_and_states_without_panicking(
        condition in cel(),
        clear in prop::option::of(cel()),
        points in prop::collection::vec(point(), 0..6),
        state in prop_oneof![
            4 => Just(Vec::new()),
            1 => prop::collection::vec(any::<u8>(), 0..64),
            1 => any_json().prop_map(|json| json.to_string().into_bytes()),
        ],
        now in any::<i64>(),
    ) {
        let mut rule = json!({"id": "r", "version": 1, "keys": "meter.**", "context": "a.b",
                              "stale_after": "1m", "severity": {"warning": condition}});
        if let Some(clear) = clear {
            rule["clear"] = Json::from(clear);
        }
        let Ok(summaries) = check_rules(&json!({"rules": [rule]}).to_string()) else {
            return Ok(());
        };
        let rules: Vec<RuleInput> = summaries
            .into_iter()
            .map(|s| RuleInput { id: s.id, version: s.version, source: s.source })
            .collect();
        let states = [StateEntry { rule_id: "r".into(), state }];
        let evaluation = evaluate("dev-1", &points, &rules, &states);
        for event in &evaluation.events {
            assert_no_leak(&event.message, &format!("{points:?}"))?;
        }
        let states: Vec<StateEntry> = evaluation.states;
        let stale = evaluate_stale("dev-1", now, &rules, &states);
        prop_assert!(stale.errors.is_empty(), "{:?}", stale.errors);
    }

    #[test]
    fn durations_parse_to_a_positive_span_that_prints_back_or_are_refused(text in duration()) {
        match Span::parse(&text) {
            Ok(span) => {
                prop_assert!(span.millis() > 0);
                prop_assert_eq!(Span::parse(&span.to_string()), Ok(span));
            }
            Err(message) => {
                prop_assert!(message.starts_with("invalid duration "), "{message}");
                assert_no_leak(&message, &text)?;
            }
        }
    }

    #[test]
    fn key_patterns_match_any_valid_key_in_bounded_time(
        stars in 0usize..8,
        segments in 1usize..=40,
    ) {
        let pattern = KeyPattern::parse(&format!("{}z", "**.".repeat(stars))).unwrap();
        let key = vec!["a"; segments].join(".");
        let started = std::time::Instant::now();
        prop_assert!(!pattern.matches(&key));
        let took = started.elapsed();
        prop_assert!(took < std::time::Duration::from_millis(50), "{took:?}");
    }

    #[test]
    fn key_patterns_parse_or_are_refused_and_a_literal_matches_itself(text in key_pattern()) {
        match KeyPattern::parse(&text) {
            Ok(pattern) => {
                prop_assert!(!text.is_empty() && !text.split('.').any(str::is_empty));
                if !text.contains('*') {
                    prop_assert!(pattern.matches(&text));
                    let longer = format!("{text}.x");
                    prop_assert!(!pattern.matches(&longer));
                }
            }
            Err(error) => assert_no_leak(&error.to_string(), &text)?,
        }
    }
}
