//! Where webhooks may POST: the destination policy. Unless `alerting.webhook_allow_private`, an
//! address that is not on the public internet (loopback, private, link-local, carrier-grade NAT,
//! unspecified, multicast, reserved, documentation) is refused, so that a webhook cannot be made
//! to reach the hosts' own network.
//!
//! The check is made on the addresses a delivery connects to, not on the URL's text:
//! [`CheckedResolver`] is the HTTP connector's resolver. It resolves a name once, drops the
//! refused addresses and hands the connector only the checked ones, which it connects to as they
//! are, so a name cannot resolve to a public address for the check and to a private one for the
//! connection (DNS rebinding). URLs naming an IP address skip the resolver, so
//! [`check_literal_host`] checks them before the request.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::client::legacy::connect::dns::Name;

/// The reason code a refused delivery's `last_error` starts with.
pub const DESTINATION_REFUSED: &str = "destination_refused";

/// A destination the policy refuses: the host and the address it names or resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRefused {
    /// The URL's host.
    pub host: String,
    /// The refused address.
    pub addr: IpAddr,
    /// What kind of address it is (`loopback`, `private`...).
    pub kind: &'static str,
}

impl std::fmt::Display for DestinationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host == self.addr.to_string() {
            write!(
                f,
                "{DESTINATION_REFUSED}: {} is a {} address",
                self.addr, self.kind
            )
        } else {
            write!(
                f,
                "{DESTINATION_REFUSED}: {} resolves to {}, a {} address",
                self.host, self.addr, self.kind
            )
        }
    }
}

impl std::error::Error for DestinationRefused {}

/// What kind of non-public address `addr` is; `None` for a public one.
pub fn non_public(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(addr: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = addr.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn non_public_v6(addr: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let segments = addr.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        return non_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    Some(match segments[0] {
        _ if addr.is_unspecified() => "unspecified",
        _ if addr.is_loopback() => "loopback",
        // Deprecated IPv4-compatible addresses (::a.b.c.d).
        0 if segments[1..6] == [0; 5] => "reserved",
        0xfc00..=0xfdff => "unique local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        _ => return None,
    })
}

/// Refuses `addr` for `host` unless it is public.
fn check(host: &str, addr: IpAddr) -> Result<(), DestinationRefused> {
    match non_public(addr) {
        Some(kind) => Err(DestinationRefused {
            host: host.to_owned(),
            addr,
            kind,
        }),
        None => Ok(()),
    }
}

/// Refuses `uri` when its host is an IP address the policy refuses (names are checked when
/// they are resolved, by [`CheckedResolver`]).
pub fn check_literal_host(uri: &Uri) -> Result<(), DestinationRefused> {
    let Some(host) = uri.host() else {
        return Ok(());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(addr) => check(bare, addr),
        Err(_) => Ok(()),
    }
}

/// The HTTP connector's resolver: the system's (`getaddrinfo`, through tokio), keeping only
/// the addresses the policy allows. A name whose every address is refused fails with
/// [`DestinationRefused`].
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver {
    /// Allow every address (`alerting.webhook_allow_private`).
    pub allow_private: bool,
}

/// The addresses a [`CheckedResolver`] returns.
pub type Addrs = std::vec::IntoIter<SocketAddr>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for CheckedResolver {
    type Response = Addrs;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is the connector's to set.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(resolved.into_iter());
            }
            let mut refused = None;
            let mut allowed = Vec::with_capacity(resolved.len());
            for addr in resolved {
                match check(&host, addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(error) => refused = refused.or(Some(error)),
                }
            }
            match refused {
                Some(error) if allowed.is_empty() => Err(error.into()),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// The policy refusal among `error`'s causes, if any.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a DestinationRefused> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<DestinationRefused>() {
            return Some(refused);
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("192.0.2.7", "documentation"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("::127.0.0.1", "reserved"),
            ("2001:db8::1", "documentation"),
        ] {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(non_public(ip), Some(kind), "{addr}");
        }
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(non_public(ip), None, "{addr}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_names_are_left_to_the_resolver() {
        let uri = |text: &str| text.parse::<Uri>().unwrap();
        let refused = check_literal_host(&uri("http://127.0.0.1:8080/hook")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "destination_refused: 127.0.0.1 is a loopback address"
        );
        assert!(check_literal_host(&uri("http://[::1]/hook")).is_err());
        assert!(check_literal_host(&uri("https://10.0.0.5/hook")).is_err());
        check_literal_host(&uri("https://8.8.8.8/hook")).unwrap();
        check_literal_host(&uri("https://localhost/hook")).unwrap();
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        use tower_service::Service as _;
        let name: Name = "localhost".parse().unwrap();
        let error = CheckedResolver {
            allow_private: false,
        }
        .call(name.clone())
        .await
        .unwrap_err();
        let refused = refusal(&*error).expect("a policy refusal");
        assert_eq!(refused.host, "localhost");
        assert!(
            refused
                .to_string()
                .starts_with("destination_refused: localhost resolves to")
        );
        let allowed: Vec<_> = CheckedResolver {
            allow_private: true,
        }
        .call(name)
        .await
        .unwrap()
        .collect();
        assert!(
            allowed.iter().all(|addr| addr.ip().is_loopback()),
            "{allowed:?}"
        );
        assert!(!allowed.is_empty());
    }
}
