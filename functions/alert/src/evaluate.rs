//! Evaluation: runs a device's points, or the host's clock, through the rules that apply to the
//! device and their states, and answers the events and the changed states.

use crate::condition::{Bindings, Conditions, Role};
use crate::event::{Event, EventKind, Trigger};
use crate::rule::AlertRule;
use crate::state::{RuleState, Seen, Series};
use crate::types::{Point, Severity, Value};

/// A rule as the host hands it over: what it stored from [`check_rules`](crate::check_rules).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInput {
    /// The rule's id ([`RuleSummary::id`](crate::RuleSummary::id)).
    pub id: String,
    /// The rule's version; must be the one in `source`.
    pub version: u32,
    /// The rule's canonical JSON ([`RuleSummary::source`](crate::RuleSummary::source)).
    pub source: String,
}

/// The stored state of one rule on the device being evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEntry {
    /// The rule the state belongs to.
    pub rule_id: String,
    /// The opaque bytes; empty for a rule with no state yet.
    pub state: Vec<u8>,
}

/// A rule that could not be evaluated; the other rules were.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The rule at fault.
    pub rule_id: String,
    /// What is wrong.
    pub message: String,
}

/// The answer of an evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// The events to record, in the order they happened.
    pub events: Vec<Event>,
    /// The new state of every rule whose state changed; the host stores these and keeps the
    /// others as they are.
    pub states: Vec<StateEntry>,
    /// Rules that could not be evaluated (a source that does not parse or check, an id or version
    /// that does not match it, an unreadable state, which is then started afresh).
    pub errors: Vec<RuleError>,
}

/// Evaluates one device's accepted points against the rules.
///
/// Rules whose `devices` do not match `device` are skipped. Points are taken in timestamp
/// order; for each rule, a point no newer than the newest point of its key that the rule's state
/// has seen is ignored (a late or repeated point neither moves a key's latest value backwards nor
/// counts for `for` or `count`). `states` holds the stored states of the rules (missing or empty
/// for a rule with none yet).
///
/// ```
/// use weir_alert::{check_rules, evaluate, EventKind, Point, RuleInput, Value};
///
/// let rules: Vec<RuleInput> = check_rules(
///     "[[rules]]\nid = 'hot'\nversion = 1\nkeys = 'meter.*.temperature'\n\
///      severity = { warning = 'value > 80' }",
/// )
/// .unwrap()
/// .into_iter()
/// .map(|rule| RuleInput { id: rule.id, version: rule.version, source: rule.source })
/// .collect();
/// let points = [Point { key: "meter.1.temperature".into(), value: Value::Float(83.5), ts: 1_000 }];
/// let evaluation = evaluate("dev-1", &points, &rules, &[]);
/// assert_eq!(evaluation.events[0].kind, EventKind::Raise);
/// assert_eq!(evaluation.events[0].message, "meter.1.temperature = 83.5: warning, `value > 80`");
/// // The host stores `evaluation.states` and passes them to the next call.
/// assert_eq!(evaluation.states[0].rule_id, "hot");
/// ```
pub fn evaluate(
    device: &str,
    points: &[Point],
    rules: &[RuleInput],
    states: &[StateEntry],
) -> Evaluation {
    let mut ordered: Vec<&Point> = points.iter().collect();
    ordered.sort_by_key(|point| point.ts);
    run(device, rules, states, |run, state| {
        for point in &ordered {
            run.point(state, point);
        }
    })
}

/// Checks the rules with a `stale_after` for keys of `device` that sent nothing since `now`
/// minus `stale_after`, raising a no-data alert for each (once: the next point of the key clears
/// it). Only keys the rule's state has seen can go stale. The host's timer calls this.
pub fn evaluate_stale(
    device: &str,
    now: i64,
    rules: &[RuleInput],
    states: &[StateEntry],
) -> Evaluation {
    run(device, rules, states, |run, state| run.stale(state, now))
}

/// A manual clear: ends the active alert of `key` for `trigger` in a stored state and returns the
/// new state for the host to store. The history is kept, so a condition that still holds raises
/// the alert again at the key's next point (a no-data alert: at the next staleness check).
pub fn manual_clear(state: &[u8], key: &str, trigger: Trigger) -> Result<Vec<u8>, String> {
    let mut state = RuleState::decode(state)?;
    if let Some(series) = state.series.get_mut(key) {
        match trigger {
            Trigger::Condition => series.active = None,
            Trigger::NoData => series.stale = false,
        }
    }
    Ok(state.encode())
}

/// Loads every rule that applies to the device and its state, applies `step`, and collects
/// the events and the changed states.
fn run(
    device: &str,
    rules: &[RuleInput],
    states: &[StateEntry],
    mut step: impl FnMut(&mut RuleRun<'_>, &mut RuleState),
) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for input in rules {
        let fail = |message: String| RuleError {
            rule_id: input.id.clone(),
            message,
        };
        let (rule, conditions) = match load(input) {
            Ok(loaded) => loaded,
            Err(message) => {
                evaluation.errors.push(fail(message));
                continue;
            }
        };
        if !rule.applies_to(device) {
            continue;
        }
        let stored = states.iter().find(|s| s.rule_id == input.id);
        let (mut state, unreadable) = match RuleState::decode(stored.map_or(&[][..], |s| &s.state))
        {
            Ok(state) => (state, false),
            Err(message) => {
                evaluation.errors.push(fail(message));
                (RuleState::fresh(), true)
            }
        };
        let before = state.clone();
        let mut rule_run = RuleRun {
            rule: &rule,
            conditions: &conditions,
            device,
            events: &mut evaluation.events,
        };
        step(&mut rule_run, &mut state);
        if unreadable || state != before {
            evaluation.states.push(StateEntry {
                rule_id: input.id.clone(),
                state: state.encode(),
            });
        }
    }
    evaluation
}

fn load(input: &RuleInput) -> Result<(AlertRule, Conditions), String> {
    let rule = AlertRule::from_json(&input.source)?;
    if rule.id != input.id || rule.version != input.version {
        return Err(format!(
            "the rule is {:?} v{} but its source is {:?} v{}",
            input.id, input.version, rule.id, rule.version
        ));
    }
    let conditions = rule.compile()?;
    Ok((rule, conditions))
}

/// One rule on one device during one call.
struct RuleRun<'a> {
    rule: &'a AlertRule,
    conditions: &'a Conditions,
    device: &'a str,
    events: &'a mut Vec<Event>,
}

impl RuleRun<'_> {
    fn point(&mut self, state: &mut RuleState, point: &Point) {
        let Some(role) = self.conditions.role(&point.key) else {
            return;
        };
        let seen = Seen {
            value: point.value.clone(),
            ts: point.ts,
        };
        let before = match state.latest.get(&point.key) {
            Some(last) if point.ts <= last.ts => return,
            _ => state.latest.insert(point.key.clone(), seen),
        };
        match role {
            Role::Alerting => {
                let series = state.series.entry(point.key.clone()).or_default();
                if series.stale {
                    series.stale = false;
                    let silent = before.as_ref().map_or(String::new(), |last| {
                        format!(
                            " after {} without",
                            crate::duration::Span::from_millis(point.ts - last.ts)
                        )
                    });
                    let severity = self.stale_severity();
                    let message = format!("{} = {}: data again{silent}", point.key, point.value);
                    self.emit(
                        &point.key,
                        EventKind::Clear,
                        Trigger::NoData,
                        severity,
                        point.ts,
                        Some(&point.value),
                        message,
                    );
                }
                series.previous = before.map(|last| last.value);
                self.condition(&point.key, series, &state.latest, point.ts, true);
            }
            Role::Context => {
                for (key, series) in state.series.iter_mut() {
                    self.condition(key, series, &state.latest, point.ts, false);
                }
            }
        }
    }

    /// Evaluates the severity levels and the clear condition of one alert series at `ts`;
    /// `sample` is true for a point of the key itself (which counts as a hit) and false for a
    /// re-evaluation caused by a context key.
    fn condition(
        &mut self,
        key: &str,
        series: &mut Series,
        latest: &std::collections::BTreeMap<String, Seen>,
        ts: i64,
        sample: bool,
    ) {
        let Some(current) = latest.get(key) else {
            return;
        };
        // A context point older than the series' own newest point would rewind its history.
        if ts < current.ts {
            return;
        }
        let bindings = Bindings {
            value: &current.value,
            previous: series.previous.as_ref(),
            key,
            device: self.device,
            ts,
            keys: latest,
        };
        let conditions = self.conditions;
        let mut met: Option<(Severity, &str)> = None;
        for (level, condition) in &conditions.levels {
            let holds = condition.holds(&bindings);
            let history = series.levels.entry(*level).or_default();
            if holds {
                history.since.get_or_insert(ts);
                if sample && self.rule.count.is_some() {
                    history.hits.push(ts);
                }
            } else {
                history.since = None;
            }
            if let Some(within) = self.rule.within {
                history.hits.retain(|&hit| hit > ts - within.millis());
            }
            let long_enough = self.rule.hold_for.is_none_or(|span| {
                holds
                    && history
                        .since
                        .is_some_and(|since| ts - since >= span.millis())
            });
            let often_enough = match self.rule.count {
                Some(count) => history.hits.len() >= count as usize,
                None => holds,
            };
            if long_enough && often_enough && met.is_none() {
                met = Some((*level, condition.source()));
            }
        }
        let value = Some(&current.value);
        let shown = format!("{key} = {}", current.value);
        match (series.active, met) {
            (None, Some((level, source))) => {
                series.active = Some(level);
                let message = format!("{shown}: {level}, `{source}`{}", self.requirement());
                self.emit(
                    key,
                    EventKind::Raise,
                    Trigger::Condition,
                    level,
                    ts,
                    value,
                    message,
                );
            }
            (Some(active), Some((level, source))) if level > active => {
                series.active = Some(level);
                let message = format!(
                    "{shown}: escalated from {active} to {level}, `{source}`{}",
                    self.requirement()
                );
                self.emit(
                    key,
                    EventKind::Escalate,
                    Trigger::Condition,
                    level,
                    ts,
                    value,
                    message,
                );
            }
            (Some(active), None) => {
                let reason = match &conditions.clear {
                    Some(clear) if clear.holds(&bindings) => format!("`{}`", clear.source()),
                    Some(_) => return,
                    None => "no severity condition is met".to_owned(),
                };
                series.active = None;
                let message = format!("{shown}: cleared ({active}), {reason}");
                self.emit(
                    key,
                    EventKind::Clear,
                    Trigger::Condition,
                    active,
                    ts,
                    value,
                    message,
                );
            }
            _ => {}
        }
    }

    fn stale(&mut self, state: &mut RuleState, now: i64) {
        let Some(after) = self.rule.stale_after else {
            return;
        };
        let severity = self.stale_severity();
        for (key, series) in state.series.iter_mut() {
            let Some(last) = state.latest.get(key) else {
                continue;
            };
            if series.stale || now - last.ts < after.millis() {
                continue;
            }
            series.stale = true;
            let message = format!("{key}: no data for {after} (last point at {})", last.ts);
            self.emit(
                key,
                EventKind::Raise,
                Trigger::NoData,
                severity,
                now,
                None,
                message,
            );
        }
    }

    fn stale_severity(&self) -> Severity {
        self.rule.stale_severity.unwrap_or(Severity::Warning)
    }

    /// How a level is met beyond its condition, for messages.
    fn requirement(&self) -> String {
        let mut text = String::new();
        if let Some(span) = self.rule.hold_for {
            text.push_str(&format!(" held for {span}"));
        }
        if let (Some(count), Some(within)) = (self.rule.count, self.rule.within) {
            text.push_str(&format!(" {count} times within {within}"));
        }
        text
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        key: &str,
        kind: EventKind,
        trigger: Trigger,
        severity: Severity,
        ts: i64,
        value: Option<&Value>,
        message: String,
    ) {
        self.events.push(Event {
            rule_id: self.rule.id.clone(),
            rule_version: self.rule.version,
            device: self.device.to_owned(),
            key: key.to_owned(),
            kind,
            trigger,
            severity,
            ts,
            value: value.cloned(),
            message,
        });
    }
}
