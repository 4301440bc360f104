//! The Redis pub/sub channels of alert events: alerting publishes every recorded event of an
//! organisation, one JSON message each, on `weir:events:<org>` (the organisation escaped as in
//! [`crate::redis_name`]); live streams subscribe to all of them with [`CHANNEL_PATTERN`].

use crate::redis_name::escape;

/// The prefix of every event channel.
pub const CHANNEL_PREFIX: &str = "weir:events:";

/// The `PSUBSCRIBE` pattern matching every organisation's event channel.
pub const CHANNEL_PATTERN: &str = "weir:events:*";

/// The pub/sub channel of `org`'s alert events.
///
/// ```
/// use weir_contract::events::channel;
/// assert_eq!(channel("a:b%"), "weir:events:a%3Ab%25");
/// ```
pub fn channel(org: &str) -> String {
    format!("{CHANNEL_PREFIX}{}", escape(org))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_escape_the_organisation() {
        assert_eq!(channel("acme"), "weir:events:acme");
        assert_eq!(channel("a:b%"), "weir:events:a%3Ab%25");
        assert_eq!(CHANNEL_PATTERN, format!("{CHANNEL_PREFIX}*"));
    }
}
