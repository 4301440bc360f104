//! Weir's query API as a Spin HTTP component. Every answer is computed here from PostgreSQL and
//! the Redis cache of latest values; the caller's organisation comes from the `weir-org` header,
//! which Weir's host sets from the bearer token (and strips from client input). A device or key
//! of another organisation is answered exactly like one that does not exist.
//!
//! The plain-Rust modules below hold everything that can be decided without I/O and are
//! unit-tested natively: the route table ([`routes`], over the paths of
//! `weir_contract::routes`), query parameters ([`params`]), canonical
//! ranges and redirects ([`range`]), paging cursors ([`cursor`]), each endpoint's SQL and JSON
//! ([`metadata`], [`history`], [`trend`]), the cache format ([`cache`]), answers and their
//! `Cache-Control` ([`answer`]) and the OpenAPI document ([`openapi`]). The `component` module
//! (wasm only) wires them to spin-sdk's router, variables, Postgres and Redis. See docs/SPIN.md
//! for why spin-sdk 5 (WASI 0.2) and what the component imports.

#![warn(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod component;

pub mod answer;
pub mod cache;
pub mod cursor;
pub mod history;
pub mod latest;
pub mod metadata;
pub mod openapi;
pub mod params;
pub mod range;
pub mod routes;
pub mod trend;
pub mod value;

pub use answer::{Answer, device_not_found_body, error_body};
pub use cache::decode_cached;
pub use latest::latest_body;

/// The header carrying the caller's organisation, set by the host.
pub const ORG_HEADER: &str = "weir-org";

/// The `lateness_window_ms` used when the variable is missing or not a number: one day. Points
/// may arrive this late, so a range that ended longer ago than this no longer changes.
pub const DEFAULT_LATENESS_WINDOW_MS: i64 = 86_400_000;

/// Reads the `lateness_window_ms` variable's value; missing or unparsable gives the default.
pub fn lateness_window_ms(variable: Option<&str>) -> i64 {
    variable
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .unwrap_or(DEFAULT_LATENESS_WINDOW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_window_falls_back_to_one_day() {
        assert_eq!(lateness_window_ms(Some("60000")), 60_000);
        assert_eq!(lateness_window_ms(Some("soon")), 86_400_000);
        assert_eq!(lateness_window_ms(Some("-5")), 86_400_000);
        assert_eq!(lateness_window_ms(None), 86_400_000);
    }
}
