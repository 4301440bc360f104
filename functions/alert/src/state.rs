//! The state of one rule on one device, kept by the host between calls as opaque bytes (JSON).
//!
//! It remembers the latest value of every key in the rule's scope, and per alerting key the
//! alert series: the active severity, the no-data flag, the previous value, and per severity
//! level since when its condition holds (`for`) and the recent times it held (`count`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Severity, Value};

/// Format version of the encoded state; a state of another version is started afresh.
const FORMAT: u32 = 1;

/// The state of one rule on one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// Format version ([`FORMAT`]).
    #[serde(rename = "v")]
    pub format: u32,
    /// The latest value and timestamp of every key of the rule's scope seen so far.
    #[serde(default)]
    pub latest: BTreeMap<String, Seen>,
    /// The alert series of every alerting key seen so far.
    #[serde(default)]
    pub series: BTreeMap<String, Series>,
}

/// A key's latest value and its timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The value.
    pub value: Value,
    /// Unix milliseconds.
    pub ts: i64,
}

/// The alerts of one alerting key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The active condition alert's severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Severity>,
    /// Whether a no-data alert is active.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stale: bool,
    /// The value before the latest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
    /// Per severity level with a condition: its holding streak and recent hits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub levels: BTreeMap<Severity, Level>,
}

/// The history of one severity level's condition for one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// The timestamp from which the condition held without a break, if it holds now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Timestamps of the points at which it held, within the rule's `within` window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hits: Vec<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RuleState {
    /// Decodes a stored state; empty bytes are a fresh state.
    pub fn decode(bytes: &[u8]) -> Result<RuleState, String> {
        if bytes.is_empty() {
            return Ok(RuleState::fresh());
        }
        let state: RuleState =
            serde_json::from_slice(bytes).map_err(|e| format!("unreadable rule state: {e}"))?;
        if state.format != FORMAT {
            return Err(format!("rule state of unknown format {}", state.format));
        }
        Ok(state)
    }

    /// A state with nothing seen.
    pub fn fresh() -> RuleState {
        RuleState {
            format: FORMAT,
            ..RuleState::default()
        }
    }

    /// The bytes the host stores.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a rule state always serialises")
    }
}
