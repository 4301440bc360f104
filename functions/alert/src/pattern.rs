//! Which keys and devices a rule watches.
//!
//! A key pattern is matched segment by segment on the dotted key: a literal segment matches
//! itself, `*` matches exactly one segment and `**` matches any number of segments, none
//! included. `meter.*.temperature` matches `meter.1.temperature` but neither
//! `meter.temperature` nor `meter.1.a.temperature`; `meter.**` matches every key under `meter.`
//! and `meter` itself. A device pattern is a plain glob on the device id: `*` matches any run of
//! characters (`site-4-*`).

/// A parsed key pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

impl KeyPattern {
    /// Parses a pattern; the error names what is wrong with it.
    pub fn parse(text: &str) -> Result<KeyPattern, String> {
        if text.is_empty() {
            return Err("a key pattern cannot be empty".to_owned());
        }
        let segments = text
            .split('.')
            .map(|segment| match segment {
                "" => Err(format!("key pattern {text:?} has an empty segment")),
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::Any),
                s if s.contains('*') => Err(format!(
                    "key pattern {text:?}: `*` must be a whole segment (`a.*.b`), not part of one ({s:?})"
                )),
                s => Ok(Segment::Literal(s.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyPattern { segments })
    }

    /// Whether `key` matches the pattern.
    pub fn matches(&self, key: &str) -> bool {
        let parts: Vec<&str> = key.split('.').collect();
        match_segments(&self.segments, &parts)
    }
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((segment, rest)) => match parts.split_first() {
            None => false,
            Some((part, parts)) => {
                let here = match segment {
                    Segment::Literal(literal) => literal == part,
                    _ => true,
                };
                here && match_segments(rest, parts)
            }
        },
    }
}

/// Whether `device` matches the glob `pattern` (`*` = any run of characters, possibly empty).
pub fn device_matches(pattern: &str, device: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = device.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        KeyPattern::parse(pattern).unwrap().matches(key)
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(matches("meter.*.temperature", "meter.1.temperature"));
        assert!(!matches("meter.*.temperature", "meter.temperature"));
        assert!(!matches("meter.*.temperature", "meter.1.a.temperature"));
        assert!(!matches("meter.*.temperature", "meter.1.humidity"));
        assert!(matches("meter.1.door", "meter.1.door"));
    }

    #[test]
    fn double_star_matches_any_number_of_segments() {
        assert!(matches("meter.**", "meter"));
        assert!(matches("meter.**", "meter.a.b.c"));
        assert!(matches("**.temperature", "a.b.temperature"));
        assert!(!matches("**.temperature", "a.b.humidity"));
    }

    #[test]
    fn malformed_key_patterns_are_refused() {
        for text in ["", "meter..x", "meter.t*", "meter.*x.y"] {
            assert!(KeyPattern::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn device_globs_match_runs_of_characters() {
        assert!(device_matches("site-4-*", "site-4-pump"));
        assert!(device_matches("*", "anything"));
        assert!(device_matches("dev-1", "dev-1"));
        assert!(!device_matches("dev-1", "dev-10"));
        assert!(device_matches("a*b*c", "aXXbYYc"));
        assert!(!device_matches("a*b*c", "aXXbYY"));
        assert!(!device_matches("ab*ba", "aba"));
    }
}
