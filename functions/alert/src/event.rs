//! What an evaluation tells the host to record.

use crate::types::{Severity, Value};

/// A change in an alert's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new alert: no alert of this rule, device, key and trigger was active.
    Raise,
    /// The active alert moved to a stronger severity.
    Escalate,
    /// The active alert ended.
    Clear,
}

/// What an alert is about; a rule, device and key can have one active alert of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// The rule's severity conditions (with their `for` and `count` requirements).
    Condition,
    /// No point for the key within the rule's `stale_after` (raised by the host's timer through
    /// [`evaluate_stale`](crate::evaluate_stale), cleared by the next point).
    NoData,
}

/// One event for the host to store and publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The rule that raised it.
    pub rule_id: String,
    /// The version of that rule that was evaluated.
    pub rule_version: u32,
    /// The device the alert is about.
    pub device: String,
    /// The key the alert is about.
    pub key: String,
    /// Raise, escalate or clear.
    pub kind: EventKind,
    /// Condition or missing data.
    pub trigger: Trigger,
    /// The alert's severity after the event (for a clear: the severity it had).
    pub severity: Severity,
    /// When it happened: the timestamp of the point that caused it, or the `now` of a staleness
    /// check (unix milliseconds).
    pub ts: i64,
    /// The value of the point that caused it; `None` for a staleness event.
    pub value: Option<Value>,
    /// A sentence for people, e.g. `meter.1.temperature = 83.5: warning (value > 80) for 5m`.
    pub message: String,
}
