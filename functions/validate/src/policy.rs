//! The host's settings for one validation call, and the timestamp rule they drive. The host passes
//! its clock in, so validation stays pure and deterministic.

use crate::{Reason, Rejection};

const MINUTE_MS: i64 = 60 * 1000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// What to do with a point whose key has no metadata yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKeyPolicy {
    /// Store the value as sent, untyped (still rejecting NaN, infinities and over-long text).
    AcceptUntyped,
    /// Reject the point with [`Reason::UnknownKey`].
    Reject,
}

/// Host-side settings for one validation call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The host's current time, unix milliseconds.
    pub now_ms: i64,
    /// How far in the future a timestamp may be (device clock skew), in milliseconds.
    pub max_future_skew_ms: i64,
    /// How old a timestamp may be, in milliseconds.
    pub max_age_ms: i64,
    /// What to do with keys that have no metadata.
    pub unknown_keys: UnknownKeyPolicy,
    /// Longest accepted text value, in characters.
    pub max_text_length: u32,
}

impl Policy {
    /// The default policy at `now_ms`: 5 minutes of clock skew, points up to 10 years (3650 days)
    /// old, unknown keys accepted untyped, text up to 1024 characters.
    pub fn with_now(now_ms: i64) -> Policy {
        Policy {
            now_ms,
            max_future_skew_ms: 5 * MINUTE_MS,
            max_age_ms: 3650 * DAY_MS,
            unknown_keys: UnknownKeyPolicy::AcceptUntyped,
            max_text_length: 1024,
        }
    }

    /// Rejects a timestamp beyond the allowed skew ahead of `now_ms` or older than the allowed
    /// age; both limits are inclusive.
    pub(crate) fn check_timestamp(&self, ts: i64) -> Result<(), Rejection> {
        // Distances in i128 so that messages stay right even for absurd clocks.
        let offset = i128::from(ts) - i128::from(self.now_ms);
        if ts > self.now_ms.saturating_add(self.max_future_skew_ms) {
            return Err(Rejection::new(
                Reason::FutureTimestamp,
                format!(
                    "timestamp {ts} is {offset} ms ahead of the server clock (allowed skew {} ms)",
                    self.max_future_skew_ms
                ),
            ));
        }
        if ts < self.now_ms.saturating_sub(self.max_age_ms) {
            return Err(Rejection::new(
                Reason::AncientTimestamp,
                format!(
                    "timestamp {ts} is {} ms behind the server clock (allowed age {} ms)",
                    -offset, self.max_age_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_893_452_400_000;

    fn reason(policy: &Policy, ts: i64) -> Reason {
        policy
            .check_timestamp(ts)
            .expect_err(&format!("{ts} should be rejected"))
            .reason
    }

    #[test]
    fn with_now_sets_the_documented_defaults() {
        assert_eq!(
            Policy::with_now(NOW),
            Policy {
                now_ms: NOW,
                max_future_skew_ms: 300_000,
                max_age_ms: 315_360_000_000,
                unknown_keys: UnknownKeyPolicy::AcceptUntyped,
                max_text_length: 1024,
            }
        );
    }

    #[test]
    fn timestamp_at_the_skew_limit_is_accepted() {
        let policy = Policy::with_now(NOW);
        assert_eq!(policy.check_timestamp(NOW + 300_000), Ok(()));
        assert_eq!(policy.check_timestamp(NOW), Ok(()));
    }

    #[test]
    fn timestamp_one_ms_beyond_the_skew_is_in_the_future() {
        let policy = Policy::with_now(NOW);
        assert_eq!(reason(&policy, NOW + 300_001), Reason::FutureTimestamp);
    }

    #[test]
    fn future_timestamp_message_says_how_far_ahead() {
        let rejection = Policy::with_now(NOW)
            .check_timestamp(1_893_456_000_000)
            .unwrap_err();
        assert_eq!(
            rejection.message,
            "timestamp 1893456000000 is 3600000 ms ahead of the server clock (allowed skew 300000 ms)"
        );
    }

    #[test]
    fn timestamp_at_the_age_limit_is_accepted() {
        let policy = Policy::with_now(NOW);
        assert_eq!(policy.check_timestamp(NOW - 315_360_000_000), Ok(()));
    }

    #[test]
    fn timestamp_one_ms_beyond_the_age_limit_is_ancient() {
        let policy = Policy::with_now(NOW);
        assert_eq!(
            reason(&policy, NOW - 315_360_000_001),
            Reason::AncientTimestamp
        );
        assert_eq!(
            policy
                .check_timestamp(NOW - 315_360_000_001)
                .unwrap_err()
                .message,
            "timestamp 1578092399999 is 315360000001 ms behind the server clock (allowed age 315360000000 ms)"
        );
    }

    #[test]
    fn limits_saturate_instead_of_overflowing() {
        let late = Policy::with_now(i64::MAX - 10);
        assert_eq!(late.check_timestamp(i64::MAX), Ok(()));

        let early = Policy::with_now(i64::MIN + 10);
        assert_eq!(early.check_timestamp(i64::MIN), Ok(()));
    }

    #[test]
    fn messages_for_extreme_timestamps_do_not_overflow() {
        let policy = Policy {
            max_future_skew_ms: 0,
            max_age_ms: 0,
            ..Policy::with_now(i64::MIN)
        };
        let rejection = policy.check_timestamp(i64::MAX).unwrap_err();
        assert_eq!(rejection.reason, Reason::FutureTimestamp);
        assert!(rejection.message.contains("18446744073709551615 ms ahead"));

        let policy = Policy {
            max_age_ms: 0,
            ..Policy::with_now(i64::MAX)
        };
        let rejection = policy.check_timestamp(i64::MIN).unwrap_err();
        assert_eq!(rejection.reason, Reason::AncientTimestamp);
        assert!(rejection.message.contains("18446744073709551615 ms behind"));
    }
}
