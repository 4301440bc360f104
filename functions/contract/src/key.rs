//! Key syntax: the first rule every point meets, and the one metadata must meet too. A key is a
//! dotted ASCII name such as `modbus.pump.F1345.3.40004`; keys under `weir.` are the system's
//! own. [`check_key`] says which rule a key breaks; the caller words the message around it
//! (the validator quotes and shortens the device's key).

use std::fmt;

use crate::reasons::Reason;

/// Shortest key, in characters.
pub const MIN_LEN: usize = 2;
/// Longest key, in characters.
pub const MAX_LEN: usize = 80;

/// The reserved key.
pub const RESERVED: &str = "weir";
/// The prefix of every key under the reserved one.
pub const RESERVED_PREFIX: &str = "weir.";

/// The rule a key breaks. Its `Display` is a phrase that follows the key: `key "a..b" must not
/// contain ".."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// A character outside `A-Z a-z 0-9 . _ -`.
    ForbiddenChar(char),
    /// Shorter than [`MIN_LEN`] or longer than [`MAX_LEN`]; the key's length in characters.
    Length(usize),
    /// Starts with `.`, `-` or `_`.
    LeadingPunctuation(char),
    /// Ends with `.`, `-` or `_`.
    TrailingPunctuation(char),
    /// Contains `..` or `--`.
    DoublePunctuation(&'static str),
    /// Is `weir` or starts with `weir.`.
    Reserved,
}

impl KeyError {
    /// The rejection reason: [`Reason::ReservedKey`] for a reserved key, otherwise
    /// [`Reason::InvalidKey`].
    pub fn reason(self) -> Reason {
        match self {
            KeyError::Reserved => Reason::ReservedKey,
            _ => Reason::InvalidKey,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::ForbiddenChar(c) => write!(
                f,
                "contains {c:?}, but keys may only use A-Z, a-z, 0-9, '.', '_' and '-'"
            ),
            KeyError::Length(len) => {
                let unit = if *len == 1 { "character" } else { "characters" };
                write!(
                    f,
                    "is {len} {unit} long, but keys must be {MIN_LEN} to {MAX_LEN} characters"
                )
            }
            KeyError::LeadingPunctuation(c) => write!(f, "must not start with {c:?}"),
            KeyError::TrailingPunctuation(c) => write!(f, "must not end with {c:?}"),
            KeyError::DoublePunctuation(pair) => write!(f, "must not contain {pair:?}"),
            KeyError::Reserved => write!(
                f,
                "is reserved: \"{RESERVED}\" and keys under \"{RESERVED_PREFIX}\" belong to Weir itself"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks a key's syntax and that it is not reserved.
///
/// A key uses only `A-Z a-z 0-9 . _ -`, is 2 to 80 characters long, does not start or end with
/// `.`, `-` or `_`, and does not contain `..` or `--`. A syntactically valid key equal to `weir`
/// or starting with `weir.` is [`KeyError::Reserved`]. The rules are checked in that order; the
/// first broken one is the error.
///
/// ```
/// use weir_contract::key::{check_key, KeyError};
/// assert_eq!(check_key("meter.energy.total"), Ok(()));
/// assert_eq!(check_key("a..b"), Err(KeyError::DoublePunctuation("..")));
/// assert_eq!(check_key("weir.status"), Err(KeyError::Reserved));
/// ```
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if let Some(c) = key.chars().find(|&c| !is_key_char(c)) {
        return Err(KeyError::ForbiddenChar(c));
    }
    // Only ASCII is left, so bytes are characters.
    if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
        return Err(KeyError::Length(key.len()));
    }
    for c in ['.', '-', '_'] {
        if key.starts_with(c) {
            return Err(KeyError::LeadingPunctuation(c));
        }
        if key.ends_with(c) {
            return Err(KeyError::TrailingPunctuation(c));
        }
    }
    for pair in ["..", "--"] {
        if key.contains(pair) {
            return Err(KeyError::DoublePunctuation(pair));
        }
    }
    if key == RESERVED || key.starts_with(RESERVED_PREFIX) {
        return Err(KeyError::Reserved);
    }
    Ok(())
}

/// Whether `c` may appear in a key: `A-Z a-z 0-9 . _ -`.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(key: &str) -> Reason {
        check_key(key)
            .expect_err(&format!("{key:?} should be rejected"))
            .reason()
    }

    fn rule(key: &str) -> String {
        check_key(key).unwrap_err().to_string()
    }

    #[test]
    fn field_keys_are_accepted() {
        for key in [
            "modbus.pump.F1345.3.40004",
            "ruuvi.c4f3a1b2.temperature",
            "meter.energy.total",
            "Room_2-B.temp9",
        ] {
            assert_eq!(check_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn key_of_two_characters_is_accepted() {
        assert_eq!(check_key("ab"), Ok(()));
    }

    #[test]
    fn key_of_one_character_is_invalid() {
        assert_eq!(check_key("a"), Err(KeyError::Length(1)));
        assert_eq!(
            rule("a"),
            "is 1 character long, but keys must be 2 to 80 characters"
        );
    }

    #[test]
    fn empty_key_is_invalid() {
        assert_eq!(check_key(""), Err(KeyError::Length(0)));
        assert_eq!(
            rule(""),
            "is 0 characters long, but keys must be 2 to 80 characters"
        );
    }

    #[test]
    fn key_of_80_characters_is_accepted() {
        assert_eq!(check_key(&"a".repeat(80)), Ok(()));
    }

    #[test]
    fn key_of_81_characters_is_invalid() {
        assert_eq!(check_key(&"a".repeat(81)), Err(KeyError::Length(81)));
    }

    #[test]
    fn key_starting_with_punctuation_is_invalid() {
        for key in [".ab", "-ab", "_ab"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert_eq!(rule(".ab"), "must not start with '.'");
    }

    #[test]
    fn key_ending_with_punctuation_is_invalid() {
        for key in ["ab.", "ab-", "ab_"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert_eq!(rule("ab_"), "must not end with '_'");
    }

    #[test]
    fn double_dot_is_invalid() {
        assert_eq!(check_key("a..b"), Err(KeyError::DoublePunctuation("..")));
        assert_eq!(rule("a..b"), "must not contain \"..\"");
    }

    #[test]
    fn double_dash_is_invalid() {
        assert_eq!(reason("a--b"), Reason::InvalidKey);
        assert_eq!(reason("a.b--c.d"), Reason::InvalidKey);
    }

    #[test]
    fn other_inner_punctuation_pairs_are_allowed() {
        for key in ["a__b", "a.-b", "a-.b", "a._b", "a_-b"] {
            assert_eq!(check_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn non_ascii_characters_are_invalid() {
        for key in ["temp°C", "café.x", "éé", "a\u{200b}b"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert_eq!(
            rule("temp°C"),
            "contains '°', but keys may only use A-Z, a-z, 0-9, '.', '_' and '-'"
        );
    }

    #[test]
    fn spaces_separators_and_control_characters_are_invalid() {
        for key in ["a b", "a/b", "a:b", "a*b", "a\nb", "a\0b"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert!(rule("a\nb").contains("'\\n'"));
    }

    #[test]
    fn key_weir_is_reserved() {
        assert_eq!(reason("weir"), Reason::ReservedKey);
        assert_eq!(
            rule("weir"),
            "is reserved: \"weir\" and keys under \"weir.\" belong to Weir itself"
        );
    }

    #[test]
    fn keys_under_the_weir_prefix_are_reserved() {
        assert_eq!(reason("weir.status"), Reason::ReservedKey);
        assert_eq!(reason("weir.x.y"), Reason::ReservedKey);
    }

    #[test]
    fn keys_that_merely_start_with_weir_are_allowed() {
        for key in ["weirdo.x", "weir-x", "weir_x", "my.weir.x", "Weir.x"] {
            assert_eq!(check_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn syntax_is_checked_before_the_reserved_prefix() {
        assert_eq!(reason("weir."), Reason::InvalidKey);
        assert_eq!(reason("weir..x"), Reason::InvalidKey);
    }
}
