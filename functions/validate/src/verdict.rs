//! The outcome for one point: accepted with its normalised value, or rejected with a reason (a
//! stable code the host stores and reports, from `weir_contract::reasons`) and a message a person
//! can act on.

use std::fmt;

use crate::Value;

/// Why a point was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The key breaks the key syntax rules.
    InvalidKey,
    /// The key is `weir` or under the reserved `weir.` prefix.
    ReservedKey,
    /// No metadata for the key and the policy rejects unknown keys.
    UnknownKey,
    /// The value's kind does not fit the key's type (a float for an `i16`, text for a `bool`).
    TypeMismatch,
    /// The value fits the type but not its range or the key's min/max.
    OutOfRange,
    /// NaN or an infinity.
    NotFinite,
    /// Text longer than the policy allows.
    TextTooLong,
    /// An enum code or label missing from the key's value map.
    UnknownEnumValue,
    /// Timestamp further in the future than the allowed clock skew.
    FutureTimestamp,
    /// Timestamp older than the allowed age.
    AncientTimestamp,
}

impl Reason {
    /// The stable snake_case code for this reason, e.g. `"out_of_range"`, from the table in
    /// `weir_contract::reasons`. Codes never change: devices and dashboards match on them.
    pub fn code(self) -> &'static str {
        self.contract().code()
    }

    /// The same reason in the shared table of rejection codes.
    pub fn contract(self) -> weir_contract::reasons::Reason {
        use weir_contract::reasons::Reason as Shared;
        match self {
            Reason::InvalidKey => Shared::InvalidKey,
            Reason::ReservedKey => Shared::ReservedKey,
            Reason::UnknownKey => Shared::UnknownKey,
            Reason::TypeMismatch => Shared::TypeMismatch,
            Reason::OutOfRange => Shared::OutOfRange,
            Reason::NotFinite => Shared::NotFinite,
            Reason::TextTooLong => Shared::TextTooLong,
            Reason::UnknownEnumValue => Shared::UnknownEnumValue,
            Reason::FutureTimestamp => Shared::FutureTimestamp,
            Reason::AncientTimestamp => Shared::AncientTimestamp,
        }
    }
}

/// A rejected point's reason and a sentence naming the value and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The rule that failed.
    pub reason: Reason,
    /// A sentence a person can act on, e.g. `value 70000 is out of range for u16 (0..=65535)`.
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, message: String) -> Rejection {
        Rejection { reason, message }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

/// The outcome for one point.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Accepted, with the value normalised to the key's type.
    Accepted(Value),
    /// Rejected, with the reason and a message.
    Rejected(Rejection),
}

impl From<Result<Value, Rejection>> for Verdict {
    fn from(outcome: Result<Value, Rejection>) -> Verdict {
        match outcome {
            Ok(value) => Verdict::Accepted(value),
            Err(rejection) => Verdict::Rejected(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_stable_snake_case() {
        let codes = [
            (Reason::InvalidKey, "invalid_key"),
            (Reason::ReservedKey, "reserved_key"),
            (Reason::UnknownKey, "unknown_key"),
            (Reason::TypeMismatch, "type_mismatch"),
            (Reason::OutOfRange, "out_of_range"),
            (Reason::NotFinite, "not_finite"),
            (Reason::TextTooLong, "text_too_long"),
            (Reason::UnknownEnumValue, "unknown_enum_value"),
            (Reason::FutureTimestamp, "future_timestamp"),
            (Reason::AncientTimestamp, "ancient_timestamp"),
        ];
        for (reason, code) in codes {
            assert_eq!(reason.code(), code);
        }
    }

    #[test]
    fn rejection_displays_its_message() {
        let rejection = Rejection::new(Reason::OutOfRange, "value 3 is too big".to_owned());
        assert_eq!(rejection.to_string(), "value 3 is too big");
    }

    #[test]
    fn result_converts_to_the_matching_verdict() {
        assert_eq!(
            Verdict::from(Ok(Value::Int(1))),
            Verdict::Accepted(Value::Int(1))
        );
        let rejection = Rejection::new(Reason::NotFinite, "value NaN".to_owned());
        assert_eq!(
            Verdict::from(Err(rejection.clone())),
            Verdict::Rejected(rejection)
        );
    }
}
