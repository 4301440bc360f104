//! The values alerts are computed from: points and their values (`weir-guest`'s, shared with
//! every component) as CEL values, and severities.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use weir_guest::{Point, Value};

/// The value as a CEL value: `int`, `uint`, `double`, `bool` or `string`.
pub(crate) fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Int(v) => cel::Value::Int(*v),
        Value::Uint(v) => cel::Value::UInt(*v),
        Value::Float(v) => cel::Value::Float(*v),
        Value::Bool(v) => cel::Value::Bool(*v),
        Value::Text(v) => cel::Value::from(v.clone()),
    }
}

/// How bad an alert is. Ordered from the weakest (`Warning`) to the strongest (`Critical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The weakest level.
    Warning,
    /// Stronger than a warning.
    Minor,
    /// Stronger than minor.
    Major,
    /// The strongest level.
    Critical,
}

impl Severity {
    /// Every level, strongest first: the order in which a rule's conditions are tried.
    pub const STRONGEST_FIRST: [Severity; 4] = [
        Severity::Critical,
        Severity::Major,
        Severity::Minor,
        Severity::Warning,
    ];

    /// The level's name as rules spell it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
