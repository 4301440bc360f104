//! How names from outside (organisations, devices) go into Redis key and channel names. Weir's
//! Redis names are `:`-separated (`weir:latest:<org>:<device>`), so `%` and `:` inside a name
//! are escaped as `%25` and `%3A`: two different (org, device) pairs never share a name.

/// `name` with `%` and `:` escaped, so it cannot split a Redis key or channel name.
///
/// ```
/// use weir_contract::redis_name::escape;
/// assert_eq!(escape("m:1%"), "m%3A1%25");
/// ```
pub fn escape(name: &str) -> String {
    name.replace('%', "%25").replace(':', "%3A")
}

/// The inverse of [`escape`]: after escaping, every `%` starts `%25` or `%3A`.
pub fn unescape(name: &str) -> String {
    name.replace("%3A", ":").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for name in ["acme", "a:b", "%3A", "a%25:", "%%::", ""] {
            assert_eq!(unescape(&escape(name)), name);
            assert!(!escape(name).contains(':'));
        }
    }
}
