//! The rule model: what a rule file holds, how it is parsed (TOML or JSON), and what makes a
//! rule valid. A rule set file is a list of rules under `rules`; see the crate documentation for
//! the format.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Conditions};
use crate::duration::Span;
use crate::types::Severity;
use weir_contract::pattern::KeyPattern;

/// One alert rule, as written in a rule file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Stable identifier, unique within the organisation's rule set.
    pub id: String,
    /// Bumped on every change; events carry the version that raised them.
    pub version: u32,
    /// The keys the rule alerts on (each matching key has its own alert), as patterns.
    #[serde(deserialize_with = "one_or_many")]
    pub keys: Vec<String>,
    /// Further keys of the same device whose latest values the conditions may read through
    /// `keys[...]`; a point of one re-evaluates the rule's alerts but has no alert of its own.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub context: Vec<String>,
    /// Device id globs the rule is limited to; empty means every device.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub devices: Vec<String>,
    /// The raise condition of each severity level.
    #[serde(default)]
    pub severity: SeverityConditions,
    /// The clear condition (hysteresis); without it an alert clears when no level is met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
    /// How long a level's condition must hold, without a break, before it is met.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<Span>,
    /// How many points must meet a level's condition within `within` for the level to be met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The sliding window of `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Span>,
    /// Raise a no-data alert for a key that sent nothing for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<Span>,
    /// The severity of no-data alerts (default `warning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_severity: Option<Severity>,
}

/// A CEL raise condition per severity level; at least one level or `stale_after` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityConditions {
    /// The condition of a critical alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<String>,
    /// The condition of a major alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<String>,
    /// The condition of a minor alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<String>,
    /// The condition of a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl SeverityConditions {
    /// The levels that have a condition, strongest first.
    pub fn levels(&self) -> impl Iterator<Item = (Severity, &str)> {
        Severity::STRONGEST_FIRST.into_iter().filter_map(|level| {
            let condition = match level {
                Severity::Critical => &self.critical,
                Severity::Major => &self.major,
                Severity::Minor => &self.minor,
                Severity::Warning => &self.warning,
            };
            condition.as_deref().map(|c| (level, c))
        })
    }
}

/// A rule file: `[[rules]]` tables in TOML, `{"rules": [...]}` in JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<AlertRule>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// What `check_rules` says about one valid rule: what the host needs to store and schedule it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSummary {
    /// The rule's id.
    pub id: String,
    /// The rule's version.
    pub version: u32,
    /// Its key patterns (alerting keys, then context keys).
    pub keys: Vec<String>,
    /// Its device globs; empty means every device.
    pub devices: Vec<String>,
    /// Its `stale_after` in milliseconds, when it has one: the host's timer calls
    /// [`evaluate_stale`](crate::evaluate_stale) for it.
    pub stale_after_ms: Option<i64>,
    /// The rule alone as canonical JSON: what the host stores and hands back to
    /// [`evaluate`](crate::evaluate).
    pub source: String,
}

/// Parses a rule file, TOML or JSON: text whose first non-blank character is `{` is JSON.
/// Only the syntax is checked; [`check_rules`] checks the rules too.
pub fn parse_rules(text: &str) -> Result<Vec<AlertRule>, String> {
    let file: RuleFile = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON rule file: {e}"))?
    } else {
        toml::from_str(text).map_err(|e| format!("invalid TOML rule file: {e}"))?
    };
    Ok(file.rules)
}

/// Parses and checks a rule file: every rule must be valid (patterns, durations, CEL conditions
/// that parse and use only the documented variables) and ids must be unique. The error names the
/// rule at fault, e.g. `rule "hot-meter" v3: severity.warning: ...`.
pub fn check_rules(text: &str) -> Result<Vec<RuleSummary>, String> {
    let rules = parse_rules(text)?;
    let mut ids = BTreeSet::new();
    let mut summaries = Vec::with_capacity(rules.len());
    for rule in rules {
        rule.check()?;
        if !ids.insert(rule.id.clone()) {
            return Err(format!("rule {:?} appears more than once", rule.id));
        }
        summaries.push(rule.summary());
    }
    Ok(summaries)
}

impl AlertRule {
    /// Reads one rule from its canonical JSON (a [`RuleSummary::source`]).
    pub fn from_json(source: &str) -> Result<AlertRule, String> {
        serde_json::from_str(source).map_err(|e| format!("invalid rule JSON: {e}"))
    }

    /// The rule as canonical JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a rule always serialises")
    }

    /// Checks everything but the conditions' CEL, which [`AlertRule::compile`] checks.
    fn check_shape(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("a rule has an empty id".to_owned());
        }
        if self.keys.is_empty() {
            return Err("`keys` needs at least one key pattern".to_owned());
        }
        for pattern in self.keys.iter().chain(&self.context) {
            KeyPattern::parse(pattern).map_err(|e| e.to_string())?;
        }
        if self.devices.iter().any(|d| d.is_empty()) {
            return Err("a device pattern cannot be empty".to_owned());
        }
        if self.severity.levels().next().is_none() && self.stale_after.is_none() {
            return Err(
                "the rule raises nothing: give at least one `severity` condition or `stale_after`"
                    .to_owned(),
            );
        }
        match (self.count, self.within) {
            (Some(0), _) => return Err("`count` must be at least 1".to_owned()),
            (Some(_), None) => return Err("`count` needs `within` (its window)".to_owned()),
            (None, Some(_)) => return Err("`within` needs `count`".to_owned()),
            _ => {}
        }
        if self.severity.levels().next().is_none()
            && (self.clear.is_some() || self.hold_for.is_some() || self.count.is_some())
        {
            return Err("`clear`, `for` and `count` need a `severity` condition".to_owned());
        }
        Ok(())
    }

    /// Checks the rule, naming it in the error.
    pub fn check(&self) -> Result<(), String> {
        self.compile().map(drop)
    }

    /// Checks the rule and compiles its conditions, naming the rule in the error.
    pub(crate) fn compile(&self) -> Result<Conditions, String> {
        let named = |e: String| format!("rule {:?} v{}: {e}", self.id, self.version);
        self.check_shape().map_err(named)?;
        let levels = self
            .severity
            .levels()
            .map(|(level, source)| {
                Condition::compile(source)
                    .map(|condition| (level, condition))
                    .map_err(|e| named(format!("severity.{level}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let clear = match &self.clear {
            Some(source) => {
                Some(Condition::compile(source).map_err(|e| named(format!("clear: {e}")))?)
            }
            None => None,
        };
        let keys = self
            .keys
            .iter()
            .map(|p| KeyPattern::parse(p).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map_err(named)?;
        let context = self
            .context
            .iter()
            .map(|p| KeyPattern::parse(p).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map_err(named)?;
        Ok(Conditions {
            levels,
            clear,
            keys,
            context,
        })
    }

    fn summary(&self) -> RuleSummary {
        RuleSummary {
            id: self.id.clone(),
            version: self.version,
            keys: self.keys.iter().chain(&self.context).cloned().collect(),
            devices: self.devices.clone(),
            stale_after_ms: self.stale_after.map(Span::millis),
            source: self.to_json(),
        }
    }

    /// Whether the rule applies to `device`.
    pub fn applies_to(&self, device: &str) -> bool {
        self.devices.is_empty()
            || self
                .devices
                .iter()
                .any(|pattern| weir_contract::pattern::device_matches(pattern, device))
    }
}
