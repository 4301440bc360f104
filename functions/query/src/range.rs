//! Canonical time ranges. History and trend answer only ranges whose `from` and `to` lie on a
//! grid, so that equal questions are equal URLs and caches can share them. A request off the
//! grid is redirected to the canonical URL: `from` floored, `to` ceiled (`308`); a missing `to`
//! is now ceiled, a missing `from` is `to` minus a default span, floored (`302`: the answer
//! depends on the clock).
//!
//! The grid is the 5-minute UTC grid for history; for trend it is the bucket's grid on the UTC
//! epoch, or local midnights of a time zone for daily buckets, which only PostgreSQL's time
//! zone database knows: hence the [`Grid`] trait, implemented here for fixed steps and by the
//! component for days.
//!
//! A redirect always leads to a URL that is served: the canonical range lies within what the
//! parameters accept (`from` from 0, `to` up to [`MAX_TO_MS`], a line of every fixed grid).
//! Only a local-midnight grid can round past them, near the epoch or the year 10000; that is a
//! `400`, not a redirect.

use crate::answer::Answer;
use crate::params::MAX_TO_MS;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// The history grid: 5 minutes.
pub const HISTORY_GRID_MS: i64 = 300_000;

/// Grid lines a range's ends must lie on.
pub trait Grid {
    /// The grid line at or before `t` (unix ms).
    fn floor(&mut self, t: i64) -> Result<i64, Answer>;
    /// The grid line right after grid line `line`.
    fn next(&mut self, line: i64) -> Result<i64, Answer>;

    /// The grid line at or after `t`.
    fn ceil(&mut self, t: i64) -> Result<i64, Answer> {
        let line = self.floor(t)?;
        if line == t { Ok(t) } else { self.next(line) }
    }
}

/// A grid of fixed steps from the unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(pub i64);

impl Grid for Step {
    fn floor(&mut self, t: i64) -> Result<i64, Answer> {
        Ok(t.div_euclid(self.0) * self.0)
    }

    fn next(&mut self, line: i64) -> Result<i64, Answer> {
        Ok(line + self.0)
    }
}

/// A range on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Start, inclusive (unix ms).
    pub from: i64,
    /// End, exclusive (unix ms).
    pub to: i64,
    /// Whether a clock-dependent default filled `from` or `to` in.
    pub filled: bool,
}

/// The canonical range for the requested `from` and `to`: `to` (now when missing) ceiled,
/// `from` (`to − default_span_ms` when missing) floored. `from ≥ to` is `400
/// invalid_parameter`.
pub fn canonical_range(
    from: Option<i64>,
    to: Option<i64>,
    now_ms: i64,
    default_span_ms: i64,
    grid: &mut impl Grid,
) -> Result<Range, Answer> {
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(Answer::invalid_parameter(&format!(
            "parameter `from` ({from}) must be before `to` ({to})"
        )));
    }
    let to_line = grid.ceil(to.unwrap_or(now_ms))?;
    let from_line = match from {
        Some(from) => grid.floor(from)?,
        None => {
            let line = grid.floor((to_line - default_span_ms).max(0))?;
            if line < 0 { grid.next(line)? } else { line }
        }
    };
    if to_line > MAX_TO_MS {
        let to = to.map_or_else(|| format!("now, {now_ms}"), |to| to.to_string());
        return Err(Answer::invalid_parameter(&format!(
            "parameter `to` ({to}) rounds up to {to_line}, past the latest end answered \
             ({MAX_TO_MS})"
        )));
    }
    if from_line < 0 {
        return Err(Answer::invalid_parameter(&format!(
            "parameter `from` ({}) rounds down to {from_line}, before 0",
            from.unwrap_or(from_line)
        )));
    }
    if from_line >= to_line {
        return Err(Answer::invalid_parameter(&format!(
            "parameter `from` ({}) must be before `to` (now, {now_ms}, when not given)",
            from.unwrap_or(from_line)
        )));
    }
    Ok(Range {
        from: from_line,
        to: to_line,
        filled: from.is_none() || to.is_none(),
    })
}

/// `Ok(())` when the request's raw query is the canonical one; else the redirect to
/// `path?canonical`.
pub fn require_canonical(
    path: &str,
    raw_query: &str,
    canonical_query: &str,
    range: &Range,
) -> Result<(), Answer> {
    if raw_query == canonical_query {
        Ok(())
    } else {
        Err(Answer::redirect(
            format!("{path}?{canonical_query}"),
            range.filled,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: i64 = HISTORY_GRID_MS;

    #[test]
    fn ends_are_floored_and_ceiled_to_the_grid() {
        let range =
            canonical_range(Some(299_999), Some(300_001), 0, DAY_MS, &mut Step(FIVE_MIN)).unwrap();
        assert_eq!(
            range,
            Range {
                from: 0,
                to: 600_000,
                filled: false
            }
        );
        let aligned = canonical_range(Some(0), Some(FIVE_MIN), 0, DAY_MS, &mut Step(FIVE_MIN));
        assert_eq!(aligned.unwrap().to, FIVE_MIN);
    }

    #[test]
    fn missing_ends_are_filled_from_the_clock() {
        let now = 10 * DAY_MS + 1;
        let range = canonical_range(None, None, now, DAY_MS, &mut Step(FIVE_MIN)).unwrap();
        assert_eq!(
            range,
            Range {
                from: 9 * DAY_MS + FIVE_MIN,
                to: 10 * DAY_MS + FIVE_MIN,
                filled: true
            }
        );
        let early = canonical_range(None, Some(1000), now, DAY_MS, &mut Step(FIVE_MIN)).unwrap();
        assert_eq!((early.from, early.to), (0, FIVE_MIN));
    }

    #[test]
    fn empty_or_reversed_ranges_are_invalid() {
        for (from, to) in [(Some(5), Some(5)), (Some(6), Some(5))] {
            let answer = canonical_range(from, to, 0, DAY_MS, &mut Step(FIVE_MIN)).unwrap_err();
            assert_eq!(answer.status, 400);
            assert!(answer.body.contains("`from`"));
        }
        let future = canonical_range(Some(2 * DAY_MS), None, DAY_MS, DAY_MS, &mut Step(FIVE_MIN));
        assert_eq!(future.unwrap_err().status, 400);
    }

    /// Local midnights of UTC−12 (12:00 UTC), as a daily grid west of UTC is.
    struct NoonUtc;

    impl Grid for NoonUtc {
        fn floor(&mut self, t: i64) -> Result<i64, Answer> {
            Ok((t - DAY_MS / 2).div_euclid(DAY_MS) * DAY_MS + DAY_MS / 2)
        }

        fn next(&mut self, line: i64) -> Result<i64, Answer> {
            Ok(line + DAY_MS)
        }
    }

    #[test]
    fn a_range_at_the_edges_of_time_stays_within_the_accepted_parameters() {
        let last = MAX_TO_MS - 1;
        let range = canonical_range(Some(0), Some(last), 0, DAY_MS, &mut Step(FIVE_MIN)).unwrap();
        assert_eq!((range.from, range.to), (0, MAX_TO_MS));
        let past = canonical_range(Some(last - DAY_MS), Some(last), 0, DAY_MS, &mut NoonUtc);
        let answer = past.unwrap_err();
        assert_eq!(answer.status, 400);
        assert!(answer.body.contains("`to`"), "{}", answer.body);
        let before = canonical_range(Some(0), Some(DAY_MS), 0, DAY_MS, &mut NoonUtc);
        let answer = before.unwrap_err();
        assert_eq!(answer.status, 400);
        assert!(answer.body.contains("`from`"), "{}", answer.body);
    }

    #[test]
    fn only_the_exact_canonical_query_is_served() {
        let range = Range {
            from: 0,
            to: FIVE_MIN,
            filled: false,
        };
        let canonical = "from=0&to=300000";
        assert!(require_canonical("/h", canonical, canonical, &range).is_ok());
        let moved = require_canonical("/h", "to=300000&from=0", canonical, &range).unwrap_err();
        assert_eq!(
            (moved.status, moved.location.as_deref()),
            (308, Some("/h?from=0&to=300000"))
        );
        let filled = Range {
            filled: true,
            ..range
        };
        assert_eq!(
            require_canonical("/h", "", canonical, &filled)
                .unwrap_err()
                .status,
            302
        );
    }
}
