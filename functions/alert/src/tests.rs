//! Behaviour of the evaluator, one rule kind at a time, through the public API as the component
//! uses it: rule files through `check_rules`, states carried from call to call as bytes.

use crate::*;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

/// A device with its rules and the states the host would keep for it.
struct Device {
    id: &'static str,
    rules: Vec<RuleInput>,
    states: Vec<StateEntry>,
}

impl Device {
    fn new(rules: &str) -> Device {
        Device::named("dev-1", rules)
    }

    fn named(id: &'static str, rules: &str) -> Device {
        let rules = check_rules(rules)
            .unwrap()
            .into_iter()
            .map(|s| RuleInput {
                id: s.id,
                version: s.version,
                source: s.source,
            })
            .collect();
        Device {
            id,
            rules,
            states: Vec::new(),
        }
    }

    fn keep(&mut self, evaluation: Evaluation) -> Vec<Event> {
        assert_eq!(evaluation.errors, []);
        for changed in evaluation.states {
            self.states.retain(|s| s.rule_id != changed.rule_id);
            self.states.push(changed);
        }
        evaluation.events
    }

    fn send(&mut self, points: &[(&str, Value, i64)]) -> Vec<Event> {
        let points: Vec<Point> = points
            .iter()
            .map(|(key, value, ts)| Point {
                key: (*key).to_owned(),
                value: value.clone(),
                ts: *ts,
            })
            .collect();
        let evaluation = evaluate(self.id, &points, &self.rules, &self.states);
        self.keep(evaluation)
    }

    /// Sends one float reading of `meter.1.temperature`.
    fn temp(&mut self, value: f64, ts: i64) -> Vec<Event> {
        self.send(&[("meter.1.temperature", Value::Float(value), ts)])
    }

    fn stale(&mut self, now: i64) -> Vec<Event> {
        let evaluation = evaluate_stale(self.id, now, &self.rules, &self.states);
        self.keep(evaluation)
    }
}

/// The events as `(kind, severity)` pairs, the part most tests check.
fn kinds(events: &[Event]) -> Vec<(EventKind, Severity)> {
    events.iter().map(|e| (e.kind, e.severity)).collect()
}

const HOT: &str = r#"
[[rules]]
id = "hot"
version = 2
keys = "meter.*.temperature"
severity = { warning = "value > 80" }
"#;

#[test]
fn comparison_raises_once_and_clears_when_it_no_longer_holds() {
    let mut device = Device::new(HOT);
    assert_eq!(device.temp(70.0, T0), []);
    let raised = device.temp(83.5, T0 + MIN);
    assert_eq!(kinds(&raised), [(EventKind::Raise, Severity::Warning)]);
    let event = &raised[0];
    assert_eq!((event.rule_id.as_str(), event.rule_version), ("hot", 2));
    assert_eq!(
        (event.device.as_str(), event.key.as_str()),
        ("dev-1", "meter.1.temperature")
    );
    assert_eq!((event.ts, event.trigger), (T0 + MIN, Trigger::Condition));
    assert_eq!(event.value, Some(Value::Float(83.5)));
    assert_eq!(
        event.message,
        "meter.1.temperature = 83.5: warning, `value > 80`"
    );
    assert_eq!(
        device.temp(85.0, T0 + 2 * MIN),
        [],
        "an active alert is not raised twice"
    );
    let cleared = device.temp(79.0, T0 + 3 * MIN);
    assert_eq!(kinds(&cleared), [(EventKind::Clear, Severity::Warning)]);
    assert_eq!(
        cleared[0].message,
        "meter.1.temperature = 79: cleared (warning), no severity condition is met"
    );
}

#[test]
fn integers_compare_with_float_thresholds_and_other_keys_are_ignored() {
    let mut device = Device::new(HOT);
    let events = device.send(&[
        ("meter.1.humidity", Value::Int(99), T0),
        ("meter.2.temperature", Value::Int(81), T0),
    ]);
    assert_eq!(kinds(&events), [(EventKind::Raise, Severity::Warning)]);
    assert_eq!(events[0].key, "meter.2.temperature");
}

#[test]
fn each_matching_key_has_its_own_alert() {
    let mut device = Device::new(HOT);
    let events = device.send(&[
        ("meter.1.temperature", Value::Float(90.0), T0),
        ("meter.2.temperature", Value::Float(91.0), T0),
    ]);
    assert_eq!(events.len(), 2);
    let cleared = device.send(&[("meter.1.temperature", Value::Float(20.0), T0 + MIN)]);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].key, "meter.1.temperature");
}

#[test]
fn range_inside_and_outside() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "outside"
        version = 1
        keys = "meter.*.voltage"
        severity = { major = "value < 207.0 || value > 253.0" }

        [[rules]]
        id = "inside"
        version = 1
        keys = "meter.*.voltage"
        severity = { minor = "value >= 0.0 && value <= 5.0" }
        "#,
    );
    let ids = |events: Vec<Event>| -> Vec<(String, EventKind)> {
        events.into_iter().map(|e| (e.rule_id, e.kind)).collect()
    };
    assert_eq!(
        device.send(&[("meter.1.voltage", Value::Float(230.0), T0)]),
        []
    );
    assert_eq!(
        ids(device.send(&[("meter.1.voltage", Value::Float(260.0), T0 + 1)])),
        [("outside".to_owned(), EventKind::Raise)]
    );
    assert_eq!(
        ids(device.send(&[("meter.1.voltage", Value::Int(2), T0 + 2)])),
        [("inside".to_owned(), EventKind::Raise)],
        "below the range is outside it too, but that alert is already active"
    );
    assert_eq!(
        ids(device.send(&[("meter.1.voltage", Value::Float(230.0), T0 + 3)])),
        [
            ("outside".to_owned(), EventKind::Clear),
            ("inside".to_owned(), EventKind::Clear)
        ]
    );
}

#[test]
fn equals_a_boolean_state_and_an_enumeration_code() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "door-open"
        version = 1
        keys = "meter.*.door"
        severity = { warning = "value == true" }

        [[rules]]
        id = "pump-fault"
        version = 1
        keys = "pump.mode"
        severity = { critical = "value == 3" }
        "#,
    );
    assert_eq!(device.send(&[("meter.1.door", Value::Bool(false), T0)]), []);
    assert_eq!(
        kinds(&device.send(&[("meter.1.door", Value::Bool(true), T0 + 1)])),
        [(EventKind::Raise, Severity::Warning)]
    );
    assert_eq!(device.send(&[("pump.mode", Value::Int(1), T0)]), []);
    let fault = device.send(&[("pump.mode", Value::Int(3), T0 + 1)]);
    assert_eq!(kinds(&fault), [(EventKind::Raise, Severity::Critical)]);
    assert_eq!(fault[0].rule_id, "pump-fault");
    assert_eq!(
        kinds(&device.send(&[("pump.mode", Value::Int(1), T0 + 2)])),
        [(EventKind::Clear, Severity::Critical)]
    );
}

const HOT_FOR_5M: &str = r#"
[[rules]]
id = "hot-5m"
version = 1
keys = "meter.*.temperature"
for = "5m"
severity = { warning = "value > 80" }
"#;

#[test]
fn duration_raises_only_once_the_condition_held_long_enough() {
    let mut device = Device::new(HOT_FOR_5M);
    assert_eq!(device.temp(85.0, T0), []);
    assert_eq!(device.temp(86.0, T0 + 2 * MIN), []);
    assert_eq!(device.temp(87.0, T0 + 4 * MIN), [], "4 minutes is not 5");
    let raised = device.temp(88.0, T0 + 5 * MIN);
    assert_eq!(kinds(&raised), [(EventKind::Raise, Severity::Warning)]);
    assert_eq!(
        raised[0].message,
        "meter.1.temperature = 88: warning, `value > 80` held for 5m"
    );
}

#[test]
fn duration_restarts_after_a_point_that_breaks_it() {
    let mut device = Device::new(HOT_FOR_5M);
    assert_eq!(device.temp(85.0, T0), []);
    assert_eq!(device.temp(70.0, T0 + 3 * MIN), []);
    assert_eq!(device.temp(85.0, T0 + 4 * MIN), []);
    assert_eq!(
        device.temp(85.0, T0 + 6 * MIN),
        [],
        "the streak started again at 4 minutes"
    );
    assert_eq!(
        kinds(&device.temp(85.0, T0 + 9 * MIN)),
        [(EventKind::Raise, Severity::Warning)]
    );
}

#[test]
fn count_within_a_window_raises_at_the_third_hit() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "door-bounce"
        version = 1
        keys = "meter.*.door"
        count = 3
        within = "10m"
        severity = { minor = "value == true" }
        "#,
    );
    let door = |device: &mut Device, open: bool, ts: i64| {
        device.send(&[("meter.1.door", Value::Bool(open), ts)])
    };
    assert_eq!(door(&mut device, true, T0), []);
    assert_eq!(door(&mut device, false, T0 + MIN), []);
    assert_eq!(door(&mut device, true, T0 + 2 * MIN), []);
    assert_eq!(door(&mut device, false, T0 + 3 * MIN), []);
    // The first hit is exactly 10 minutes old: out of the window, two hits within it.
    assert_eq!(door(&mut device, true, T0 + 10 * MIN), []);
    let raised = door(&mut device, true, T0 + 11 * MIN);
    assert_eq!(kinds(&raised), [(EventKind::Raise, Severity::Minor)]);
    assert!(
        raised[0].message.ends_with("3 times within 10m"),
        "{}",
        raised[0].message
    );
    assert_eq!(
        door(&mut device, false, T0 + 11 * MIN + 30_000),
        [],
        "3 hits are still within 10 minutes"
    );
    let cleared = door(&mut device, false, T0 + 12 * MIN);
    assert_eq!(
        kinds(&cleared),
        [(EventKind::Clear, Severity::Minor)],
        "a hit left the window"
    );
}

#[test]
fn and_across_two_keys_of_the_same_device() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "hot-and-open"
        version = 1
        keys = "meter.*.temperature"
        context = "meter.*.door"
        severity = { major = "value > 80 && keys['meter.' + parts[1] + '.door'] == true" }
        "#,
    );
    assert_eq!(device.send(&[("meter.1.door", Value::Bool(false), T0)]), []);
    assert_eq!(device.temp(85.0, T0 + 1), [], "hot but closed");
    let raised = device.send(&[("meter.1.door", Value::Bool(true), T0 + 2)]);
    assert_eq!(
        kinds(&raised),
        [(EventKind::Raise, Severity::Major)],
        "opening the door completes the condition"
    );
    assert_eq!(raised[0].key, "meter.1.temperature");
    assert_eq!(raised[0].value, Some(Value::Float(85.0)));
    let cleared = device.send(&[("meter.1.door", Value::Bool(false), T0 + 3)]);
    assert_eq!(kinds(&cleared), [(EventKind::Clear, Severity::Major)]);
    // A door of another meter is no part of meter 1's condition.
    assert_eq!(
        device.send(&[("meter.2.door", Value::Bool(true), T0 + 4)]),
        []
    );
}

#[test]
fn a_missing_key_in_keys_means_the_condition_does_not_hold() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "needs-door"
        version = 1
        keys = "meter.*.temperature"
        context = "meter.*.door"
        severity = { major = "value > 80 && keys['meter.1.door']" }
        "#,
    );
    assert_eq!(device.temp(85.0, T0), []);
}

#[test]
fn clear_condition_gives_hysteresis_without_flapping() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "hot"
        version = 1
        keys = "meter.*.temperature"
        clear = "value < 75"
        severity = { warning = "value > 80" }
        "#,
    );
    assert_eq!(
        kinds(&device.temp(81.0, T0)),
        [(EventKind::Raise, Severity::Warning)]
    );
    for (i, value) in [79.0, 81.0, 76.0, 80.5, 75.0].into_iter().enumerate() {
        assert_eq!(
            device.temp(value, T0 + i as i64 + 1),
            [],
            "{value} is between the thresholds"
        );
    }
    let cleared = device.temp(74.9, T0 + 10);
    assert_eq!(kinds(&cleared), [(EventKind::Clear, Severity::Warning)]);
    assert_eq!(
        cleared[0].message,
        "meter.1.temperature = 74.9: cleared (warning), `value < 75`"
    );
    assert_eq!(
        device.temp(79.0, T0 + 11),
        [],
        "nor raised again below the raise threshold"
    );
}

#[test]
fn escalation_goes_up_and_stays_until_clear() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "hot"
        version = 1
        keys = "meter.*.temperature"
        [rules.severity]
        critical = "value > 90"
        major = "value > 85"
        warning = "value > 80"
        "#,
    );
    assert_eq!(
        kinds(&device.temp(82.0, T0)),
        [(EventKind::Raise, Severity::Warning)]
    );
    let escalated = device.temp(95.0, T0 + 1);
    assert_eq!(
        kinds(&escalated),
        [(EventKind::Escalate, Severity::Critical)]
    );
    assert_eq!(
        escalated[0].message,
        "meter.1.temperature = 95: escalated from warning to critical, `value > 90`"
    );
    assert_eq!(device.temp(86.0, T0 + 2), [], "no de-escalation");
    assert_eq!(device.temp(82.0, T0 + 3), []);
    assert_eq!(
        kinds(&device.temp(70.0, T0 + 4)),
        [(EventKind::Clear, Severity::Critical)]
    );
    assert_eq!(
        kinds(&device.temp(87.0, T0 + 5)),
        [(EventKind::Raise, Severity::Major)],
        "a new alert starts at the strongest met level"
    );
}

#[test]
fn stale_raises_once_without_data_and_clears_when_data_returns() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "silent"
        version = 1
        keys = "meter.*.temperature"
        stale_after = "15m"
        stale_severity = "major"
        "#,
    );
    assert_eq!(device.stale(T0), [], "a key never seen cannot go stale");
    assert_eq!(device.temp(20.0, T0), []);
    assert_eq!(device.stale(T0 + 14 * MIN), []);
    let raised = device.stale(T0 + 15 * MIN);
    assert_eq!(kinds(&raised), [(EventKind::Raise, Severity::Major)]);
    assert_eq!(
        (raised[0].trigger, raised[0].ts, raised[0].value.clone()),
        (Trigger::NoData, T0 + 15 * MIN, None)
    );
    assert_eq!(
        raised[0].message,
        format!("meter.1.temperature: no data for 15m (last point at {T0})")
    );
    assert_eq!(device.stale(T0 + 16 * MIN), [], "raised once");
    let cleared = device.temp(21.0, T0 + 20 * MIN);
    assert_eq!(kinds(&cleared), [(EventKind::Clear, Severity::Major)]);
    assert_eq!(cleared[0].trigger, Trigger::NoData);
    assert_eq!(
        cleared[0].message,
        "meter.1.temperature = 21: data again after 20m without"
    );
}

#[test]
fn out_of_order_points_are_evaluated_in_time_order_and_late_ones_ignored() {
    let mut device = Device::new(HOT_FOR_5M);
    // Sent newest first: evaluated T0, T0+3m, T0+5m, so the duration is met at the last one.
    let raised = device.send(&[
        ("meter.1.temperature", Value::Float(88.0), T0 + 5 * MIN),
        ("meter.1.temperature", Value::Float(85.0), T0),
        ("meter.1.temperature", Value::Float(86.0), T0 + 3 * MIN),
    ]);
    assert_eq!(kinds(&raised), [(EventKind::Raise, Severity::Warning)]);
    assert_eq!(raised[0].ts, T0 + 5 * MIN);
    // A late point older than what the state has seen clears nothing.
    assert_eq!(device.temp(20.0, T0 + 4 * MIN), []);
    assert_eq!(
        device.temp(20.0, T0 + 5 * MIN),
        [],
        "nor does a repeated timestamp"
    );
    assert_eq!(
        kinds(&device.temp(20.0, T0 + 6 * MIN)),
        [(EventKind::Clear, Severity::Warning)]
    );
}

#[test]
fn a_condition_that_still_holds_after_a_manual_clear_raises_again() {
    let mut device = Device::new(HOT_FOR_5M);
    device.temp(85.0, T0);
    assert_eq!(device.temp(85.0, T0 + 5 * MIN).len(), 1);
    let state = &mut device.states[0];
    state.state = manual_clear(&state.state, "meter.1.temperature", Trigger::Condition).unwrap();
    let again = device.temp(85.0, T0 + 6 * MIN);
    assert_eq!(
        kinds(&again),
        [(EventKind::Raise, Severity::Warning)],
        "the streak was kept"
    );
    let state = &mut device.states[0];
    state.state = manual_clear(&state.state, "meter.1.temperature", Trigger::Condition).unwrap();
    assert_eq!(
        device.temp(70.0, T0 + 7 * MIN),
        [],
        "a cleared alert does not clear again"
    );
}

#[test]
fn a_deleted_state_starts_afresh() {
    let mut device = Device::new(HOT);
    assert_eq!(device.temp(85.0, T0).len(), 1);
    device.states.clear();
    assert_eq!(
        kinds(&device.temp(85.0, T0 + 1)),
        [(EventKind::Raise, Severity::Warning)]
    );
}

#[test]
fn rules_limited_to_devices_skip_the_others() {
    let rules = r#"
        [[rules]]
        id = "site-4"
        version = 1
        keys = "**.temperature"
        devices = ["site-4-*"]
        severity = { warning = "value > 80" }
    "#;
    assert_eq!(Device::named("site-5-a", rules).temp(85.0, T0), []);
    assert_eq!(Device::named("site-4-a", rules).temp(85.0, T0).len(), 1);
}

#[test]
fn only_changed_states_are_returned() {
    let mut device = Device::new(HOT);
    device.temp(70.0, T0);
    let evaluation = evaluate("dev-1", &[], &device.rules, &device.states);
    assert_eq!(evaluation.states, []);
    let points = [Point {
        key: "other".to_owned(),
        value: Value::Int(1),
        ts: T0 + 1,
    }];
    assert_eq!(
        evaluate("dev-1", &points, &device.rules, &device.states).states,
        []
    );
}

#[test]
fn a_bad_cel_expression_is_refused_with_its_rule_id() {
    let error = check_rules(
        r#"
        [[rules]]
        id = "good"
        version = 1
        keys = "a.b"
        severity = { warning = "value > 1" }

        [[rules]]
        id = "broken-one"
        version = 7
        keys = "a.b"
        severity = { warning = "value > 80", critical = "value >> 90" }
        "#,
    )
    .unwrap_err();
    assert!(
        error.starts_with(
            "rule \"broken-one\" v7: severity.critical: invalid CEL expression `value >> 90`"
        ),
        "{error}"
    );
}

#[test]
fn unknown_variables_and_malformed_rules_are_refused() {
    let refused = |body: &str, expected: &str| {
        let text = format!("[[rules]]\nid = \"r\"\nversion = 1\n{body}");
        let error = check_rules(&text).unwrap_err();
        assert!(error.contains(expected), "{body:?} gave {error:?}");
    };
    refused(
        "keys = \"a\"\nseverity = { warning = \"vaule > 1\" }",
        "unknown variable(s) vaule",
    );
    refused(
        "keys = \"a\"\nclear = \"value <\"\nseverity = { warning = \"value > 1\" }",
        "clear: invalid CEL",
    );
    refused(
        "keys = \"a.*x\"\nseverity = { warning = \"value > 1\" }",
        "`*` must be a whole segment",
    );
    refused(
        "keys = \"a\"\nfor = \"5 minutes\"\nseverity = { warning = \"value > 1\" }",
        "invalid duration",
    );
    refused(
        "keys = \"a\"\ncount = 3\nseverity = { warning = \"value > 1\" }",
        "`count` needs `within`",
    );
    refused("keys = \"a\"", "the rule raises nothing");
    refused(
        "keys = \"a\"\nseverity = { fatal = \"value > 1\" }",
        "unknown field `fatal`",
    );
    refused(
        "keys = \"a\"\nsevertiy = { warning = \"value > 1\" }",
        "unknown field `severtiy`",
    );
    let twice = "[[rules]]\nid = \"r\"\nversion = 1\nkeys = \"a\"\nstale_after = \"1m\"\n";
    assert_eq!(
        check_rules(&format!("{twice}{twice}")).unwrap_err(),
        "rule \"r\" appears more than once"
    );
}

/// A rule file whose critical condition is `condition`.
fn critical(condition: &str) -> String {
    serde_json::json!({"rules": [{"id": "r", "version": 1, "keys": "a",
                                  "severity": {"critical": condition}}]})
    .to_string()
}

#[test]
fn conditions_past_the_limits_are_refused_naming_the_rule_level_and_limit() {
    let chain = |links: usize| format!("value{}", ".x".repeat(links));
    assert!(check_rules(&critical(&chain(MAX_CONDITION_LEVELS))).is_ok());
    assert_eq!(
        check_rules(&critical(&chain(MAX_CONDITION_LEVELS + 1))).unwrap_err(),
        format!(
            "rule \"r\" v1: severity.critical: the CEL expression is nested or chained too \
             deeply: {} levels, at most {MAX_CONDITION_LEVELS} are accepted (a level is a `.`, an \
             operator, a ternary; a bracket is two)",
            MAX_CONDITION_LEVELS + 1
        )
    );
    let long = vec!["value > 1"; 100].join(" || ");
    assert_eq!(
        check_rules(&critical(&long)).unwrap_err(),
        format!(
            "rule \"r\" v1: severity.critical: the CEL expression is {} bytes long; at most \
             {MAX_CONDITION_BYTES} are accepted",
            long.len()
        )
    );
    // Long enough for real conditions: a dozen clauses, nested brackets, macros.
    let clauses: Vec<String> = (0..12)
        .map(|i| format!("(keys['meter.{i}.temperature'] > 80 || keys['meter.{i}.door'] == true)"))
        .collect();
    let real = format!(
        "{} && [1, 2, 3].exists(i, keys['meter.' + string(i) + '.temperature'] > 90)",
        clauses.join(" && ")
    );
    assert!(real.len() <= MAX_CONDITION_BYTES);
    assert!(check_rules(&critical(&real)).is_ok());
}

#[test]
fn conditions_nested_past_cels_own_limit_are_refused_without_its_debug_dump() {
    for (open, close) in [("[", "]"), ("(", ")"), ("{1:", "}"), ("f(", ")")] {
        let nested = format!("{}value{}", open.repeat(96), close.repeat(96));
        let error = check_rules(&critical(&nested)).unwrap_err();
        assert!(
            error.starts_with("rule \"r\" v1: severity.critical: the CEL expression is nested")
                && !error.contains("Error"),
            "{error}"
        );
    }
}

#[test]
fn cel_syntax_errors_say_what_and_where_on_one_line() {
    let error = check_rules(&critical("value > 1 &&")).unwrap_err();
    assert!(
        error.starts_with(
            "rule \"r\" v1: severity.critical: invalid CEL expression `value > 1 &&`: \
             Syntax error: mismatched input '<EOF>'"
        ) && error.contains("(line 1, column 13)")
            && !error.contains('\n'),
        "{error}"
    );
    let error = check_rules(&critical("'abc")).unwrap_err();
    assert_eq!(
        error,
        "rule \"r\" v1: severity.critical: invalid CEL expression `'abc`: the string literal at \
         byte 0 is never closed"
    );
}

#[test]
fn comprehensions_may_use_their_own_variables() {
    let text = r#"{"rules": [{"id": "any-hot", "version": 1, "keys": "a.*",
        "severity": {"warning": "keys.exists(k, k.endsWith('.temperature') && keys[k] > 80)"}}]}"#;
    let mut device = Device::new(text);
    assert_eq!(
        device.send(&[("a.temperature", Value::Int(81), T0)]).len(),
        1
    );
}

#[test]
fn toml_and_json_rule_files_parse_to_the_same_rules() {
    let toml = r#"
        [[rules]]
        id = "meter-hot"
        version = 3
        keys = "meter.*.temperature"
        context = ["meter.*.door"]
        devices = ["site-4-*"]
        clear = "value < 75"
        for = "5m"
        stale_after = "15m"
        stale_severity = "major"
        [rules.severity]
        critical = "value > 90"
        warning = "value > 80 && keys['meter.' + parts[1] + '.door'] == true"

        [[rules]]
        id = "door-bounce"
        version = 1
        keys = "meter.*.door"
        count = 3
        within = "10m"
        severity = { minor = "value == true && previous == false" }
    "#;
    let json = r#"{"rules": [
        {"id": "meter-hot", "version": 3, "keys": ["meter.*.temperature"], "context": "meter.*.door",
         "devices": "site-4-*", "clear": "value < 75", "for": "300s", "stale_after": "15m",
         "stale_severity": "major",
         "severity": {"critical": "value > 90",
                      "warning": "value > 80 && keys['meter.' + parts[1] + '.door'] == true"}},
        {"id": "door-bounce", "version": 1, "keys": "meter.*.door", "count": 3, "within": "10m",
         "severity": {"minor": "value == true && previous == false"}}
    ]}"#;
    assert_eq!(parse_rules(toml).unwrap(), parse_rules(json).unwrap());
    let summaries = check_rules(toml).unwrap();
    assert_eq!(summaries, check_rules(json).unwrap());
    assert_eq!(summaries[0].keys, ["meter.*.temperature", "meter.*.door"]);
    assert_eq!(summaries[0].stale_after_ms, Some(15 * MIN));
    assert_eq!(summaries[1].stale_after_ms, None);
    // The canonical source reads back to the same rule.
    let rule = AlertRule::from_json(&summaries[0].source).unwrap();
    assert_eq!(rule, parse_rules(toml).unwrap()[0]);
    assert!(
        summaries[0].source.contains(r#""for":"5m""#),
        "{}",
        summaries[0].source
    );
}

#[test]
fn a_rule_whose_source_does_not_match_its_id_is_reported_and_the_others_run() {
    let mut device = Device::new(HOT);
    let mut rules = device.rules.clone();
    rules.insert(
        0,
        RuleInput {
            id: "ghost".to_owned(),
            version: 1,
            source: rules[0].source.clone(),
        },
    );
    rules.push(RuleInput {
        id: "junk".to_owned(),
        version: 1,
        source: "{".to_owned(),
    });
    let points = [Point {
        key: "meter.1.temperature".to_owned(),
        value: Value::Int(90),
        ts: T0,
    }];
    let evaluation = evaluate("dev-1", &points, &rules, &device.states);
    assert_eq!(evaluation.events.len(), 1);
    let failed: Vec<&str> = evaluation
        .errors
        .iter()
        .map(|e| e.rule_id.as_str())
        .collect();
    assert_eq!(failed, ["ghost", "junk"]);
    device.states.push(StateEntry {
        rule_id: "hot".to_owned(),
        state: b"garbage".to_vec(),
    });
    let evaluation = evaluate("dev-1", &points, &device.rules, &device.states);
    assert_eq!(
        evaluation.errors.len(),
        1,
        "an unreadable state is reported"
    );
    assert_eq!(evaluation.events.len(), 1, "and started afresh");
    assert_eq!(evaluation.states.len(), 1);
}

#[test]
fn previous_value_is_visible_to_conditions() {
    let mut device = Device::new(
        r#"
        [[rules]]
        id = "jump"
        version = 1
        keys = "meter.*.energy"
        severity = { major = "previous != null && value - previous > 100" }
        "#,
    );
    assert_eq!(device.send(&[("meter.1.energy", Value::Int(1000), T0)]), []);
    assert_eq!(
        device.send(&[("meter.1.energy", Value::Int(1050), T0 + 1)]),
        []
    );
    assert_eq!(
        device
            .send(&[("meter.1.energy", Value::Int(1200), T0 + 2)])
            .len(),
        1
    );
}
