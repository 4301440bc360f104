//! Key syntax: the first rule every point meets, and the one the host reuses for metadata. A key
//! is a dotted ASCII name such as `modbus.pump.F1345.3.40004`; keys under `weir.` are the
//! system's own.

use crate::message::quote;
use crate::{Reason, Rejection};

/// Shortest and longest key, in characters.
const MIN_LEN: usize = 2;
const MAX_LEN: usize = 80;

/// The reserved key and the prefix of every key under it.
const RESERVED: &str = "weir";
const RESERVED_PREFIX: &str = "weir.";

/// Checks a key's syntax and that it is not reserved.
///
/// A key uses only `A-Z a-z 0-9 . _ -`, is 2 to 80 characters long, does not start or end with
/// `.`, `-` or `_`, and does not contain `..` or `--` (otherwise [`Reason::InvalidKey`]). A
/// syntactically valid key equal to `weir` or starting with `weir.` is [`Reason::ReservedKey`].
///
/// ```
/// use weir_validate::{check_key, Reason};
/// assert!(check_key("meter.energy.total").is_ok());
/// assert_eq!(check_key("a..b").unwrap_err().reason, Reason::InvalidKey);
/// assert_eq!(check_key("weir.status").unwrap_err().reason, Reason::ReservedKey);
/// ```
pub fn check_key(key: &str) -> Result<(), Rejection> {
    let invalid =
        |rule: String| Rejection::new(Reason::InvalidKey, format!("key {} {rule}", quote(key)));

    if let Some(c) = key.chars().find(|&c| !is_key_char(c)) {
        return Err(invalid(format!(
            "contains {c:?}, but keys may only use A-Z, a-z, 0-9, '.', '_' and '-'"
        )));
    }
    // Only ASCII is left, so bytes are characters.
    if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
        let unit = if key.len() == 1 {
            "character"
        } else {
            "characters"
        };
        return Err(invalid(format!(
            "is {} {unit} long, but keys must be {MIN_LEN} to {MAX_LEN} characters",
            key.len()
        )));
    }
    for c in ['.', '-', '_'] {
        if key.starts_with(c) {
            return Err(invalid(format!("must not start with {c:?}")));
        }
        if key.ends_with(c) {
            return Err(invalid(format!("must not end with {c:?}")));
        }
    }
    for pair in ["..", "--"] {
        if key.contains(pair) {
            return Err(invalid(format!("must not contain {pair:?}")));
        }
    }
    if key == RESERVED || key.starts_with(RESERVED_PREFIX) {
        return Err(Rejection::new(
            Reason::ReservedKey,
            format!(
                "key {} is reserved: \"{RESERVED}\" and keys under \"{RESERVED_PREFIX}\" belong to Weir itself",
                quote(key)
            ),
        ));
    }
    Ok(())
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(key: &str) -> Reason {
        check_key(key)
            .expect_err(&format!("{key:?} should be rejected"))
            .reason
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
        assert_eq!(reason("a"), Reason::InvalidKey);
        assert_eq!(
            check_key("a").unwrap_err().message,
            "key \"a\" is 1 character long, but keys must be 2 to 80 characters"
        );
    }

    #[test]
    fn empty_key_is_invalid() {
        assert_eq!(reason(""), Reason::InvalidKey);
    }

    #[test]
    fn key_of_80_characters_is_accepted() {
        assert_eq!(check_key(&"a".repeat(80)), Ok(()));
    }

    #[test]
    fn key_of_81_characters_is_invalid() {
        assert_eq!(reason(&"a".repeat(81)), Reason::InvalidKey);
    }

    #[test]
    fn key_starting_with_punctuation_is_invalid() {
        for key in [".ab", "-ab", "_ab"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert_eq!(
            check_key(".ab").unwrap_err().message,
            "key \".ab\" must not start with '.'"
        );
    }

    #[test]
    fn key_ending_with_punctuation_is_invalid() {
        for key in ["ab.", "ab-", "ab_"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert_eq!(
            check_key("ab_").unwrap_err().message,
            "key \"ab_\" must not end with '_'"
        );
    }

    #[test]
    fn double_dot_is_invalid() {
        let rejection = check_key("a..b").unwrap_err();
        assert_eq!(rejection.reason, Reason::InvalidKey);
        assert_eq!(rejection.message, "key \"a..b\" must not contain \"..\"");
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
            check_key("temp°C").unwrap_err().message,
            "key \"temp°C\" contains '°', but keys may only use A-Z, a-z, 0-9, '.', '_' and '-'"
        );
    }

    #[test]
    fn spaces_separators_and_control_characters_are_invalid() {
        for key in ["a b", "a/b", "a:b", "a*b", "a\nb", "a\0b"] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
        assert!(check_key("a\nb").unwrap_err().message.contains("'\\n'"));
    }

    #[test]
    fn messages_show_long_keys_cut_short() {
        let key = format!("{}!", "a".repeat(10_000));
        let rejection = check_key(&key).unwrap_err();
        assert_eq!(rejection.reason, Reason::InvalidKey);
        assert!(rejection.message.len() < 200, "{}", rejection.message);
    }

    #[test]
    fn key_weir_is_reserved() {
        assert_eq!(reason("weir"), Reason::ReservedKey);
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
