//! Rule durations (`for`, `within`, `stale_after`): written as `"30s"`, `"5m"`, `"1h30m"`, kept as
//! milliseconds, and written back in the same short form so that a rule's canonical JSON reads
//! like the file it came from.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A positive span of time, in milliseconds.
///
/// Parsed from one or more `<integer><unit>` groups, largest unit first, with units `d`, `h`, `m`,
/// `s` and `ms`: `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    millis: i64,
}

const UNITS: [(&str, i64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Span {
    /// A span of `millis` milliseconds.
    pub fn from_millis(millis: i64) -> Span {
        Span { millis }
    }

    /// The span in milliseconds.
    pub fn millis(self) -> i64 {
        self.millis
    }

    /// Parses `"5m"`, `"1h30m"`, ...; the error says what is wrong with the text.
    pub fn parse(text: &str) -> Result<Span, String> {
        let invalid = || {
            format!(
                "invalid duration {text:?}: write numbers with units d, h, m, s or ms, e.g. \"5m\" or \"1h30m\""
            )
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut millis: i64 = 0;
        let mut last_unit = usize::MAX;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(invalid)?;
            let number: i64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let index = UNITS
                .iter()
                .position(|(name, _)| *name == unit)
                .ok_or_else(invalid)?;
            // Largest unit first, each at most once: "5m1h" is more likely a typo than intended.
            if last_unit != usize::MAX && index <= last_unit {
                return Err(invalid());
            }
            last_unit = index;
            millis = number
                .checked_mul(UNITS[index].1)
                .and_then(|part| millis.checked_add(part))
                .ok_or_else(invalid)?;
        }
        if millis == 0 {
            return Err(format!(
                "invalid duration {text:?}: it must be longer than zero"
            ));
        }
        Ok(Span { millis })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.millis;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (name, size) in UNITS {
            if rest >= size {
                write!(f, "{}{name}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_short_form() {
        for (text, millis) in [
            ("5m", 300_000),
            ("90s", 90_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("1d", 86_400_000),
        ] {
            let span = Span::parse(text).unwrap();
            assert_eq!(span.millis(), millis, "{text}");
        }
        assert_eq!(Span::parse("90s").unwrap().to_string(), "1m30s");
        assert_eq!(Span::parse("1h30m").unwrap().to_string(), "1h30m");
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in ["", "5", "m", "5 minutes", "5m1h", "0s", "-5m", "1.5h"] {
            assert!(Span::parse(text).is_err(), "{text:?} was accepted");
        }
    }
}
