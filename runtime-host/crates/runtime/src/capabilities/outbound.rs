//! `allowed_outbound_hosts`: the network destinations a component declared, in Spin's
//! `scheme://host:port` form, and the check every outbound capability makes before it connects.
//!
//! An entry names a scheme (`postgres`, `redis`, or `*`), a host (a name, an address, or `*`)
//! and a port (a number or `*`; left out, the scheme's default port). Hosts compare without
//! regard to case and without resolving names, as Spin does: `localhost` and `127.0.0.1` are
//! different hosts. Paths, credentials and wildcards inside names are not accepted.

use std::fmt;

/// The default port of the schemes the capabilities speak.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" | "postgresql" => Some(5432),
        "redis" => Some(6379),
        _ => None,
    }
}

/// A network destination a capability is asked to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `postgres` or `redis`.
    pub scheme: &'static str,
    /// Host name or address, lowercase, IPv6 without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint; the host is normalised (lowercase, no IPv6 brackets).
    pub fn new(scheme: &'static str, host: &str, port: u16) -> Self {
        Endpoint {
            scheme,
            host: normalize_host(host),
            port,
        }
    }

    /// The `allowed_outbound_hosts` entry that grants exactly this endpoint.
    pub fn as_allowed_host(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// One part of an entry: a value, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part<T> {
    Any,
    Exactly(T),
}

impl<T: PartialEq> Part<T> {
    fn matches(&self, value: &T) -> bool {
        match self {
            Part::Any => true,
            Part::Exactly(expected) => expected == value,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    scheme: Part<String>,
    host: Part<String>,
    port: Part<u16>,
}

/// A component's parsed `allowed_outbound_hosts`. Empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses entries such as `postgres://db:5432`, `redis://cache`, `*://10.0.0.7:*`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|entry| parse_entry(entry).map_err(|reason| format!("`{entry}`: {reason}")))
            .collect::<Result<_, _>>()?;
        Ok(AllowedHosts { entries })
    }

    /// Whether some entry allows `endpoint`.
    pub fn allows(&self, endpoint: &Endpoint) -> bool {
        self.entries.iter().any(|entry| {
            let scheme_matches = match &entry.scheme {
                Part::Any => true,
                // `postgresql://` is the same protocol as `postgres://`.
                Part::Exactly(scheme) => {
                    scheme == endpoint.scheme
                        || (scheme == "postgresql" && endpoint.scheme == "postgres")
                }
            };
            scheme_matches
                && entry.host.matches(&endpoint.host)
                && entry.port.matches(&endpoint.port)
        })
    }
}

fn parse_entry(entry: &str) -> Result<AllowedHost, &'static str> {
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or("expected scheme://host[:port]")?;
    if scheme.is_empty()
        || !(scheme == "*" || scheme.bytes().all(|b| b.is_ascii_lowercase() || b == b'+'))
    {
        return Err("the scheme must be lowercase letters or `*`");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err("only scheme, host and port are allowed (no path, credentials or query)");
    }
    let (host, port) = split_host_port(rest)?;
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host != "*" && host.contains('*') {
        return Err("a host is a name, an address or `*`, not a pattern");
    }
    let port = match port {
        Some("*") => Part::Any,
        Some(port) => Part::Exactly(port.parse().map_err(|_| "the port is not a number")?),
        None => Part::Exactly(
            default_port(scheme).ok_or("this scheme has no default port: add one, or `:*`")?,
        ),
    };
    let part = |value: &str| match value {
        "*" => Part::Any,
        value => Part::Exactly(normalize_host(value)),
    };
    Ok(AllowedHost {
        scheme: part(scheme),
        host: part(host),
        port,
    })
}

/// `host:port`, `host`, `[v6]:port` or `[v6]`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("unclosed `[`")?;
        return match after {
            "" => Ok((host, None)),
            port => Ok((host, Some(port.strip_prefix(':').ok_or("junk after `]`")?))),
        };
    }
    Ok(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        let hosts = allowed(&["postgres://DB.example:5432", "redis://cache"]);
        assert!(hosts.allows(&Endpoint::new("postgres", "db.example", 5432)));
        assert!(hosts.allows(&Endpoint::new("redis", "cache", 6379)));
        assert!(!hosts.allows(&Endpoint::new("postgres", "db.example", 5433)));
        assert!(!hosts.allows(&Endpoint::new("redis", "db.example", 5432)));
        assert!(!hosts.allows(&Endpoint::new("postgres", "other", 5432)));
    }

    #[test]
    fn wildcards_and_ipv6() {
        let hosts = allowed(&["*://[::1]:*", "postgresql://*:6000"]);
        assert!(hosts.allows(&Endpoint::new("redis", "::1", 1)));
        assert!(hosts.allows(&Endpoint::new("postgres", "anything", 6000)));
        assert!(!hosts.allows(&Endpoint::new("postgres", "anything", 5432)));
        assert_eq!(
            Endpoint::new("redis", "[::1]", 6379).to_string(),
            "redis://[::1]:6379"
        );
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        assert!(!AllowedHosts::default().allows(&Endpoint::new("redis", "localhost", 6379)));
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        for (entry, expected) in [
            ("db:5432", "scheme://"),
            ("postgres://user:pw@db:5432", "credentials"),
            ("postgres://db:port", "not a number"),
            ("https://api.example", "default port"),
            ("postgres://*.example:5432", "pattern"),
        ] {
            let error = AllowedHosts::parse(&[entry.to_string()]).unwrap_err();
            assert!(error.contains(expected), "{entry}: {error}");
        }
    }
}
