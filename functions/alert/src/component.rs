//! The WASM component face of the alert evaluator: maps the `weir:functions/alert` WIT types to
//! the library's types and back. Compiled only for `wasm32`; all logic lives in the library so
//! that `cargo test` exercises it natively.

wit_bindgen::generate!({
    world: "alerter",
    path: "../../wit",
    with: { "weir:functions/types@0.1.0": weir_guest::wit::types },
});

use exports::weir::functions::alert as wit;
use weir_guest::wit::types as wit_types;

struct Component;

impl wit::Guest for Component {
    fn check_rules(rules: String) -> Result<Vec<wit::RuleSummary>, String> {
        Ok(crate::check_rules(&rules)?
            .into_iter()
            .map(|summary| wit::RuleSummary {
                id: summary.id,
                version: summary.version,
                keys: summary.keys,
                devices: summary.devices,
                stale_after_ms: summary.stale_after_ms,
                source: summary.source,
            })
            .collect())
    }

    fn evaluate(
        device: String,
        points: Vec<wit_types::Point>,
        rules: Vec<wit::Rule>,
        states: Vec<wit::RuleState>,
    ) -> wit::Evaluation {
        let points: Vec<crate::Point> = points.into_iter().map(Into::into).collect();
        let rules: Vec<crate::RuleInput> = rules.into_iter().map(rule_from_wit).collect();
        let states: Vec<crate::StateEntry> = states.into_iter().map(state_from_wit).collect();
        evaluation_to_wit(crate::evaluate(&device, &points, &rules, &states))
    }

    fn evaluate_stale(
        device: String,
        now: i64,
        rules: Vec<wit::Rule>,
        states: Vec<wit::RuleState>,
    ) -> wit::Evaluation {
        let rules: Vec<crate::RuleInput> = rules.into_iter().map(rule_from_wit).collect();
        let states: Vec<crate::StateEntry> = states.into_iter().map(state_from_wit).collect();
        evaluation_to_wit(crate::evaluate_stale(&device, now, &rules, &states))
    }

    fn manual_clear(state: Vec<u8>, key: String, trigger: wit::Trigger) -> Result<Vec<u8>, String> {
        crate::manual_clear(&state, &key, trigger_from_wit(trigger))
    }
}

export!(Component);

fn rule_from_wit(rule: wit::Rule) -> crate::RuleInput {
    crate::RuleInput {
        id: rule.id,
        version: rule.version,
        source: rule.source,
    }
}

fn state_from_wit(state: wit::RuleState) -> crate::StateEntry {
    crate::StateEntry {
        rule_id: state.rule_id,
        state: state.state,
    }
}

fn trigger_from_wit(trigger: wit::Trigger) -> crate::Trigger {
    match trigger {
        wit::Trigger::Condition => crate::Trigger::Condition,
        wit::Trigger::NoData => crate::Trigger::NoData,
    }
}

fn evaluation_to_wit(evaluation: crate::Evaluation) -> wit::Evaluation {
    wit::Evaluation {
        events: evaluation.events.into_iter().map(event_to_wit).collect(),
        states: evaluation
            .states
            .into_iter()
            .map(|s| wit::RuleState {
                rule_id: s.rule_id,
                state: s.state,
            })
            .collect(),
        errors: evaluation
            .errors
            .into_iter()
            .map(|e| wit::RuleError {
                rule_id: e.rule_id,
                message: e.message,
            })
            .collect(),
    }
}

fn event_to_wit(event: crate::Event) -> wit::Event {
    wit::Event {
        rule_id: event.rule_id,
        rule_version: event.rule_version,
        device: event.device,
        key: event.key,
        kind: match event.kind {
            crate::EventKind::Raise => wit::EventKind::Raise,
            crate::EventKind::Escalate => wit::EventKind::Escalate,
            crate::EventKind::Clear => wit::EventKind::Clear,
        },
        trigger: match event.trigger {
            crate::Trigger::Condition => wit::Trigger::Condition,
            crate::Trigger::NoData => wit::Trigger::NoData,
        },
        severity: match event.severity {
            crate::Severity::Critical => wit::Severity::Critical,
            crate::Severity::Major => wit::Severity::Major,
            crate::Severity::Minor => wit::Severity::Minor,
            crate::Severity::Warning => wit::Severity::Warning,
        },
        ts: event.ts,
        value: event.value.map(Into::into),
        message: event.message,
    }
}
