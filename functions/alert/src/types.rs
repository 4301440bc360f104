//! The values alerts are computed from: points, their values, and severities.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A reading's value, as the validator accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    /// A signed integer (also the code of an enumeration key).
    Int(i64),
    /// An unsigned integer above `i64` range.
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A text reading.
    Text(String),
}

impl Value {
    /// The value as a CEL value: `int`, `uint`, `double`, `bool` or `string`.
    pub(crate) fn to_cel(&self) -> cel::Value {
        match self {
            Value::Int(v) => cel::Value::Int(*v),
            Value::Uint(v) => cel::Value::UInt(*v),
            Value::Float(v) => cel::Value::Float(*v),
            Value::Bool(v) => cel::Value::Bool(*v),
            Value::Text(v) => cel::Value::from(v.clone()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Uint(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// One accepted reading of the device being evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Dotted key, e.g. `meter.1.temperature`.
    pub key: String,
    /// The accepted (normalised) value.
    pub value: Value,
    /// Unix time in milliseconds.
    pub ts: i64,
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
