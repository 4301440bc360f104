//! The query API's URL space: every path the query function serves (all `GET`), which the host
//! also reads to cache answers. [`Endpoint::template`] gives each path in OpenAPI's syntax
//! (`{device}` is one segment); [`parse`] splits a request path into its endpoint and its
//! `device` and `key` segments, still percent-encoded: decoding is the caller's business.

/// The path of the public OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// What a path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/devices`: the organisation's devices.
    Devices,
    /// `GET /v1/devices/{device}/keys`: a device's keys with their metadata.
    Keys,
    /// `GET /v1/devices/{device}/latest`: a device's latest values.
    Latest,
    /// `GET /v1/devices/{device}/keys/{key}`: one key's metadata and latest value.
    Key,
    /// `GET /v1/devices/{device}/keys/{key}/history`: one key's points.
    History,
    /// `GET /v1/devices/{device}/keys/{key}/trend`: one key's points aggregated per bucket.
    Trend,
    /// `GET /openapi.json`: the API's description (public).
    OpenApi,
}

impl Endpoint {
    /// Every endpoint, in the order a router tries them.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Devices,
        Endpoint::Keys,
        Endpoint::Latest,
        Endpoint::Key,
        Endpoint::History,
        Endpoint::Trend,
        Endpoint::OpenApi,
    ];

    /// The path template, in OpenAPI's syntax: `/v1/devices/{device}/keys/{key}`.
    pub const fn template(self) -> &'static str {
        match self {
            Endpoint::Devices => "/v1/devices",
            Endpoint::Keys => "/v1/devices/{device}/keys",
            Endpoint::Latest => "/v1/devices/{device}/latest",
            Endpoint::Key => "/v1/devices/{device}/keys/{key}",
            Endpoint::History => "/v1/devices/{device}/keys/{key}/history",
            Endpoint::Trend => "/v1/devices/{device}/keys/{key}/trend",
            Endpoint::OpenApi => OPENAPI_PATH,
        }
    }
}

/// A path split into its endpoint and its named segments, as they appear in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The endpoint serving the path.
    pub endpoint: Endpoint,
    /// The `{device}` segment, still percent-encoded; `None` for endpoints without one.
    pub device: Option<&'a str>,
    /// The `{key}` segment, still percent-encoded; `None` for endpoints without one.
    pub key: Option<&'a str>,
}

/// The endpoint serving `path` (without its query) and its raw segments, if any endpoint does
/// (whatever the method). A named segment is never empty.
///
/// ```
/// use weir_contract::routes::{parse, Endpoint};
/// let route = parse("/v1/devices/m%2F1/keys/power/trend").unwrap();
/// assert_eq!(route.endpoint, Endpoint::Trend);
/// assert_eq!((route.device, route.key), (Some("m%2F1"), Some("power")));
/// assert_eq!(parse("/v1/devices//keys"), None);
/// ```
pub fn parse(path: &str) -> Option<Route<'_>> {
    Endpoint::ALL
        .into_iter()
        .find_map(|endpoint| capture(endpoint, path))
}

/// `path` read against `endpoint`'s template, if it fits.
fn capture(endpoint: Endpoint, path: &str) -> Option<Route<'_>> {
    let mut route = Route {
        endpoint,
        device: None,
        key: None,
    };
    let mut template = endpoint.template().split('/');
    let mut path = path.split('/');
    loop {
        match (template.next(), path.next()) {
            (None, None) => return Some(route),
            (Some("{device}"), Some(s)) if !s.is_empty() => route.device = Some(s),
            (Some("{key}"), Some(s)) if !s.is_empty() => route.key = Some(s),
            (Some(t), Some(s)) if t == s => {}
            _ => return None,
        }
    }
}

/// Decodes the `%XX` escapes of a path segment or query value: the one decoding both sides
/// apply to names in URLs. `None` for a broken escape (`%zz`, a trailing `%`, `%+f`) or bytes
/// that are not UTF-8, so a malformed name is refused rather than read as something else.
///
/// ```
/// use weir_contract::routes::percent_decode;
/// assert_eq!(percent_decode("m%3A1").as_deref(), Some("m:1"));
/// assert_eq!(percent_decode("a%zz"), None);
/// ```
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(path: &str) -> Option<Endpoint> {
        parse(path).map(|route| route.endpoint)
    }

    #[test]
    fn paths_find_their_endpoint() {
        assert_eq!(endpoint("/v1/devices"), Some(Endpoint::Devices));
        assert_eq!(endpoint("/v1/devices/m1/keys"), Some(Endpoint::Keys));
        assert_eq!(endpoint("/v1/devices/m1/latest"), Some(Endpoint::Latest));
        assert_eq!(endpoint("/v1/devices/m1/keys/power"), Some(Endpoint::Key));
        assert_eq!(
            endpoint("/v1/devices/m1/keys/power/history"),
            Some(Endpoint::History)
        );
        assert_eq!(
            endpoint("/v1/devices/m1/keys/power/trend"),
            Some(Endpoint::Trend)
        );
        assert_eq!(endpoint("/openapi.json"), Some(Endpoint::OpenApi));
    }

    #[test]
    fn other_paths_have_no_endpoint() {
        for path in [
            "/v1/devices//keys",
            "/v1/devices/m1/nothing",
            "/v1/devices/m1/keys/power/history/x",
            "/v1/devices/",
            "/v1/devices/m1/keys//trend",
            "",
            "/",
        ] {
            assert_eq!(parse(path), None, "{path:?}");
        }
    }

    #[test]
    fn segments_come_back_raw() {
        assert_eq!(
            parse("/v1/devices/m%2F1/keys/a%20b/history"),
            Some(Route {
                endpoint: Endpoint::History,
                device: Some("m%2F1"),
                key: Some("a%20b"),
            })
        );
        assert_eq!(
            parse("/v1/devices/m1/latest"),
            Some(Route {
                endpoint: Endpoint::Latest,
                device: Some("m1"),
                key: None,
            })
        );
        assert_eq!(
            parse("/v1/devices"),
            Some(Route {
                endpoint: Endpoint::Devices,
                device: None,
                key: None,
            })
        );
    }

    #[test]
    fn every_template_parses_as_its_own_endpoint() {
        for endpoint in Endpoint::ALL {
            let example = endpoint
                .template()
                .replace("{device}", "d")
                .replace("{key}", "k");
            assert_eq!(parse(&example).map(|r| r.endpoint), Some(endpoint));
        }
    }
}
