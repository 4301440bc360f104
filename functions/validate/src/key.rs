//! Key syntax: the first rule every point meets, and the one the host reuses for metadata. The
//! rules themselves live in `weir_contract::key`, shared with the host; this module words the
//! contract's answer as a rejection naming the (quoted, shortened) key.

use weir_contract::key::KeyError;

use crate::message::quote;
use crate::{Reason, Rejection};

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
    weir_contract::key::check_key(key).map_err(|error| {
        let reason = match error {
            KeyError::Reserved => Reason::ReservedKey,
            _ => Reason::InvalidKey,
        };
        Rejection::new(reason, format!("key {} {error}", quote(key)))
    })
}

#[cfg(test)]
mod tests {
    //! The rules are tested in `weir_contract::key`; these test the reasons and the wording.

    use super::*;

    fn reason(key: &str) -> Reason {
        check_key(key)
            .expect_err(&format!("{key:?} should be rejected"))
            .reason
    }

    fn message(key: &str) -> String {
        check_key(key).unwrap_err().message
    }

    #[test]
    fn valid_keys_are_accepted() {
        for key in ["modbus.pump.F1345.3.40004", "ab", "weirdo.x", "Weir.x"] {
            assert_eq!(check_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn broken_syntax_is_an_invalid_key() {
        for key in [
            "", "a", ".ab", "ab_", "a..b", "a--b", "temp°C", "a b", "weir.",
        ] {
            assert_eq!(reason(key), Reason::InvalidKey, "{key:?}");
        }
    }

    #[test]
    fn keys_under_weir_are_reserved() {
        assert_eq!(reason("weir"), Reason::ReservedKey);
        assert_eq!(reason("weir.status"), Reason::ReservedKey);
    }

    #[test]
    fn messages_name_the_key_and_the_rule() {
        assert_eq!(
            message("a"),
            "key \"a\" is 1 character long, but keys must be 2 to 80 characters"
        );
        assert_eq!(message(".ab"), "key \".ab\" must not start with '.'");
        assert_eq!(message("ab_"), "key \"ab_\" must not end with '_'");
        assert_eq!(message("a..b"), "key \"a..b\" must not contain \"..\"");
        assert_eq!(
            message("temp°C"),
            "key \"temp°C\" contains '°', but keys may only use A-Z, a-z, 0-9, '.', '_' and '-'"
        );
        assert!(message("a\nb").contains("'\\n'"));
        assert_eq!(
            message("weir.x"),
            "key \"weir.x\" is reserved: \"weir\" and keys under \"weir.\" belong to Weir itself"
        );
    }

    #[test]
    fn messages_show_long_keys_cut_short() {
        let key = format!("{}!", "a".repeat(10_000));
        let rejection = check_key(&key).unwrap_err();
        assert_eq!(rejection.reason, Reason::InvalidKey);
        assert!(rejection.message.len() < 200, "{}", rejection.message);
    }
}
