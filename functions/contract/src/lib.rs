//! The contract between Weir's host and its functions for everything WIT cannot carry: the syntax
//! of keys ([`key`]), the key patterns and device globs alert rules use ([`pattern`]), the Redis
//! names and the latest-value format both sides read and write ([`latest`], [`events`],
//! [`redis_name`]), the URL space of the query API ([`routes`]) and the stable codes of rejected
//! points ([`reasons`]). WIT says which functions exist and what their arguments look like; this
//! crate says what a valid key is, which Redis hash holds a device's latest values and how a
//! query URL splits into its parts. Architecture invariant: no dependencies; guests and host
//! both use it, each rule exists once.

#![warn(missing_docs)]

pub mod events;
pub mod key;
pub mod latest;
pub mod pattern;
pub mod reasons;
pub mod redis_name;
pub mod routes;
