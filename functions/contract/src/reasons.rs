//! The stable codes of rejected points: why one point of a batch was not stored. The validator
//! gives the first ten, storage the last two ([`Reason::Conflict`],
//! [`Reason::KeyLimitExceeded`]); the host reports each in the batch receipt and counts it in
//! its metrics. Codes never change: devices and dashboards match on them. [`TABLE`] is the one
//! list of them.

/// Why one point of a batch was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The key breaks the key syntax rules ([`crate::key`]).
    InvalidKey,
    /// The key is `weir` or under the reserved `weir.` prefix.
    ReservedKey,
    /// No metadata for the key and the policy rejects unknown keys.
    UnknownKey,
    /// The value's kind does not fit the key's type.
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
    /// A different value is already stored for the point's series and timestamp.
    Conflict,
    /// The key is new and its device or organisation already has as many keys as allowed.
    KeyLimitExceeded,
}

/// One row of [`TABLE`]: a reason, its code and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The reason.
    pub reason: Reason,
    /// Its stable snake_case code, e.g. `"out_of_range"`.
    pub code: &'static str,
    /// One line saying what it means, for documentation and people.
    pub meaning: &'static str,
}

/// Every reason, in declaration order (`TABLE[r as usize].reason == r`).
pub const TABLE: [Entry; 12] = [
    entry(
        Reason::InvalidKey,
        "invalid_key",
        "the key breaks the key syntax rules",
    ),
    entry(
        Reason::ReservedKey,
        "reserved_key",
        "the key is `weir` or under the reserved `weir.` prefix",
    ),
    entry(
        Reason::UnknownKey,
        "unknown_key",
        "the key has no metadata and the server rejects unknown keys",
    ),
    entry(
        Reason::TypeMismatch,
        "type_mismatch",
        "the value's kind does not fit the key's type",
    ),
    entry(
        Reason::OutOfRange,
        "out_of_range",
        "the value is outside its type's range or the key's min/max",
    ),
    entry(
        Reason::NotFinite,
        "not_finite",
        "the value is NaN or an infinity",
    ),
    entry(
        Reason::TextTooLong,
        "text_too_long",
        "the text is longer than the server allows",
    ),
    entry(
        Reason::UnknownEnumValue,
        "unknown_enum_value",
        "the enum code or label is not in the key's value map",
    ),
    entry(
        Reason::FutureTimestamp,
        "future_timestamp",
        "the timestamp is further ahead than the allowed clock skew",
    ),
    entry(
        Reason::AncientTimestamp,
        "ancient_timestamp",
        "the timestamp is older than the allowed age",
    ),
    entry(
        Reason::Conflict,
        "conflict",
        "a different value is already stored for this series and timestamp",
    ),
    entry(
        Reason::KeyLimitExceeded,
        "key_limit_exceeded",
        "the key is new and its device or organisation already has as many keys as the server allows",
    ),
];

const fn entry(reason: Reason, code: &'static str, meaning: &'static str) -> Entry {
    Entry {
        reason,
        code,
        meaning,
    }
}

impl Reason {
    /// The stable code, e.g. `"out_of_range"`.
    ///
    /// ```
    /// use weir_contract::reasons::Reason;
    /// assert_eq!(Reason::Conflict.code(), "conflict");
    /// ```
    pub const fn code(self) -> &'static str {
        TABLE[self as usize].code
    }

    /// One line saying what the reason means.
    pub const fn meaning(self) -> &'static str {
        TABLE[self as usize].meaning
    }

    /// The reason with this code, if any.
    pub fn from_code(code: &str) -> Option<Reason> {
        TABLE
            .iter()
            .find(|entry| entry.code == code)
            .map(|entry| entry.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order() {
        for (index, entry) in TABLE.iter().enumerate() {
            assert_eq!(entry.reason as usize, index, "{entry:?}");
        }
    }

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
            (Reason::Conflict, "conflict"),
            (Reason::KeyLimitExceeded, "key_limit_exceeded"),
        ];
        assert_eq!(codes.len(), TABLE.len());
        for (reason, code) in codes {
            assert_eq!(reason.code(), code);
            assert_eq!(Reason::from_code(code), Some(reason));
        }
        assert_eq!(Reason::from_code("Conflict"), None);
    }

    #[test]
    fn every_reason_has_a_one_line_meaning() {
        for entry in TABLE {
            assert!(!entry.meaning.is_empty() && !entry.meaning.contains('\n'));
            assert_eq!(entry.reason.meaning(), entry.meaning);
        }
    }
}
