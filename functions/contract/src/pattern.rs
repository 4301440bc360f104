//! Which keys and devices an alert rule watches. The alerter evaluates rules with these patterns
//! and the host uses the same ones to pick the rules a batch must go through, so both must read
//! them alike.
//!
//! A key pattern is matched segment by segment on the dotted key: a literal segment matches
//! itself, `*` matches exactly one segment and `**` matches any number of segments, none
//! included. `meter.*.temperature` matches `meter.1.temperature` but neither
//! `meter.temperature` nor `meter.1.a.temperature`; `meter.**` matches every key under `meter.`
//! and `meter` itself. A device pattern is a plain glob on the device id: `*` matches any run of
//! characters (`site-4-*`).

use std::fmt;

/// A parsed key pattern.
///
/// ```
/// use weir_contract::pattern::KeyPattern;
/// let pattern = KeyPattern::parse("meter.*.temperature").unwrap();
/// assert!(pattern.matches("meter.1.temperature"));
/// assert!(!pattern.matches("meter.temperature"));
/// ```
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

/// What is wrong with a key pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern is empty.
    Empty,
    /// The pattern (held here) has an empty segment (`a..b`, `.a`, `a.`).
    EmptySegment(String),
    /// A `*` is part of a segment instead of the whole of it: the pattern and the segment.
    PartialStar {
        /// The whole pattern.
        pattern: String,
        /// The segment holding the `*`.
        segment: String,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Empty => f.write_str("a key pattern cannot be empty"),
            PatternError::EmptySegment(pattern) => {
                write!(f, "key pattern {pattern:?} has an empty segment")
            }
            PatternError::PartialStar { pattern, segment } => write!(
                f,
                "key pattern {pattern:?}: `*` must be a whole segment (`a.*.b`), not part of one ({segment:?})"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

impl KeyPattern {
    /// Parses a pattern; the error names what is wrong with it.
    pub fn parse(text: &str) -> Result<KeyPattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let segments = text
            .split('.')
            .map(|segment| match segment {
                "" => Err(PatternError::EmptySegment(text.to_owned())),
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::Any),
                s if s.contains('*') => Err(PatternError::PartialStar {
                    pattern: text.to_owned(),
                    segment: s.to_owned(),
                }),
                s => Ok(Segment::Literal(s.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyPattern { segments })
    }

    /// Whether `key` matches the pattern.
    ///
    /// Runs in O(segments of the key × segments of the pattern), whatever the pattern: the host
    /// matches every point's key, and a pattern such as `**.**.**.z` must not make it backtrack
    /// exponentially. This is the greedy glob match (`**` as `*`, `*` as `?`, over segments
    /// instead of characters): on a mismatch, only the latest `**` takes one more segment and
    /// the pattern after it starts again. Earlier `**`s never need to give back what they took:
    /// whatever the latest `**` cannot absorb, they could not either.
    pub fn matches(&self, key: &str) -> bool {
        let pattern = &self.segments;
        // The next pattern segment, and the key's segments left to match (`None` is no segment
        // at all, which `Some("")`, one empty segment, is not). The key is walked in place.
        let mut at = 0;
        let mut rest = Some(key);
        // The latest `**`: the pattern segment after it, and where the key resumes when it
        // takes one more segment.
        let mut latest_any: Option<(usize, Option<&str>)> = None;
        loop {
            match (pattern.get(at), rest) {
                (None, None) => return true,
                (Some(Segment::Any), _) => {
                    at += 1;
                    latest_any = Some((at, rest));
                    continue;
                }
                (Some(segment), Some(parts)) => {
                    let (part, after) = next_segment(parts);
                    let here = match segment {
                        Segment::Literal(literal) => literal == part,
                        _ => true,
                    };
                    if here {
                        at += 1;
                        rest = after;
                        continue;
                    }
                }
                (Some(_), None) | (None, Some(_)) => {}
            }
            match latest_any {
                Some((after_any, Some(parts))) => {
                    let resume = next_segment(parts).1;
                    latest_any = Some((after_any, resume));
                    at = after_any;
                    rest = resume;
                }
                _ => return false,
            }
        }
    }
}

/// The first segment of `parts` and the segments after it, if any.
fn next_segment(parts: &str) -> (&str, Option<&str>) {
    match parts.split_once('.') {
        Some((part, after)) => (part, Some(after)),
        None => (parts, None),
    }
}

/// Whether `device` matches the glob `pattern` (`*` = any run of characters, possibly empty).
///
/// ```
/// use weir_contract::pattern::device_matches;
/// assert!(device_matches("site-4-*", "site-4-pump"));
/// assert!(!device_matches("dev-1", "dev-10"));
/// ```
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
        assert!(!matches("meter.1.door", "meter.1.doors"));
    }

    #[test]
    fn double_star_matches_any_number_of_segments() {
        assert!(matches("meter.**", "meter"));
        assert!(matches("meter.**", "meter.a.b.c"));
        assert!(matches("**.temperature", "a.b.temperature"));
        assert!(!matches("**.temperature", "a.b.humidity"));
        assert!(matches("**", "anything.at.all"));
        assert!(matches("a.**.b.**.c", "a.x.b.y.z.c"));
        assert!(!matches("a.**.b", "a.x.c"));
    }

    /// The definition, matched by plain backtracking (exponential in the number of `**`):
    /// the reference the linear matcher must agree with.
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"**", tail)) => (0..=key.len()).any(|taken| reference(tail, &key[taken..])),
            Some((segment, tail)) => key.split_first().is_some_and(|(part, after)| {
                (*segment == "*" || segment == part) && reference(tail, after)
            }),
        }
    }

    /// Every sequence of up to `max_len` items of `alphabet`.
    fn sequences<'a>(alphabet: &[&'a str], max_len: usize) -> Vec<Vec<&'a str>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..max_len {
            last = last
                .iter()
                .flat_map(|prefix: &Vec<&'a str>| {
                    alphabet.iter().map(move |item| {
                        let mut longer = prefix.clone();
                        longer.push(item);
                        longer
                    })
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn matching_agrees_with_the_definition_on_every_small_pattern_and_key() {
        let patterns = sequences(&["a", "b", "*", "**"], 5);
        let keys = sequences(&["a", "b", ""], 5);
        for pattern in patterns.iter().filter(|p| !p.is_empty()) {
            let parsed = KeyPattern::parse(&pattern.join(".")).unwrap();
            for key in keys.iter().filter(|k| !k.is_empty()) {
                assert_eq!(
                    parsed.matches(&key.join(".")),
                    reference(pattern, key),
                    "{pattern:?} against {key:?}"
                );
            }
        }
    }

    #[test]
    fn many_double_stars_match_long_keys_without_backtracking() {
        let key = vec!["a"; 200].join(".");
        let pattern = KeyPattern::parse(&format!("{}z", "**.".repeat(50))).unwrap();
        assert!(!pattern.matches(&key));
        let pattern = KeyPattern::parse(&format!("{}a", "**.".repeat(50))).unwrap();
        assert!(pattern.matches(&key));
    }

    #[test]
    fn empty_segments_of_a_key_are_segments() {
        assert!(matches("a.*", "a."));
        assert!(!matches("a", "a."));
        assert!(matches("*", ""));
        assert!(matches("**", ""));
        assert!(!matches("a.*", "a"));
    }

    #[test]
    fn malformed_key_patterns_are_refused() {
        for text in ["", "meter..x", "meter.t*", "meter.*x.y", "a.b*", ".a", "a."] {
            assert!(KeyPattern::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn pattern_errors_name_the_pattern() {
        assert_eq!(
            KeyPattern::parse("").unwrap_err().to_string(),
            "a key pattern cannot be empty"
        );
        assert_eq!(
            KeyPattern::parse("a..b").unwrap_err().to_string(),
            "key pattern \"a..b\" has an empty segment"
        );
        assert_eq!(
            KeyPattern::parse("a.b*").unwrap_err().to_string(),
            "key pattern \"a.b*\": `*` must be a whole segment (`a.*.b`), not part of one (\"b*\")"
        );
    }

    #[test]
    fn device_globs_match_runs_of_characters() {
        assert!(device_matches("site-4-*", "site-4-pump"));
        assert!(device_matches("*", "anything"));
        assert!(device_matches("*", ""));
        assert!(device_matches("dev-1", "dev-1"));
        assert!(!device_matches("dev-1", "dev-10"));
        assert!(device_matches("a*b*c", "aXXbYYc"));
        assert!(!device_matches("a*b*c", "aXXbYY"));
        assert!(!device_matches("ab*ba", "aba"));
    }
}
