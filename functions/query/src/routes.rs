//! The route table: every path the component serves (all `GET`), in spin-sdk's router syntax
//! (`:name` captures one segment). The component registers exactly these; the OpenAPI document
//! is checked against them.

/// What a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Every route, in spin-sdk's router syntax.
pub const ROUTES: &[(&str, Endpoint)] = &[
    ("/v1/devices", Endpoint::Devices),
    ("/v1/devices/:device/keys", Endpoint::Keys),
    ("/v1/devices/:device/latest", Endpoint::Latest),
    ("/v1/devices/:device/keys/:key", Endpoint::Key),
    ("/v1/devices/:device/keys/:key/history", Endpoint::History),
    ("/v1/devices/:device/keys/:key/trend", Endpoint::Trend),
    ("/openapi.json", Endpoint::OpenApi),
];

/// The endpoint serving `path`, if any (whatever the method): tells a 405 from a 404.
pub fn route_of(path: &str) -> Option<Endpoint> {
    ROUTES
        .iter()
        .find(|(pattern, _)| matches(pattern, path))
        .map(|(_, endpoint)| *endpoint)
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut pattern = pattern.split('/');
    let mut path = path.split('/');
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with(':') && !s.is_empty() => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

/// A route in OpenAPI's syntax: `:device` becomes `{device}`.
pub fn openapi_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_endpoint() {
        assert_eq!(route_of("/v1/devices"), Some(Endpoint::Devices));
        assert_eq!(route_of("/v1/devices/m1/keys"), Some(Endpoint::Keys));
        assert_eq!(route_of("/v1/devices/m1/keys/power"), Some(Endpoint::Key));
        assert_eq!(
            route_of("/v1/devices/m1/keys/power/trend"),
            Some(Endpoint::Trend)
        );
        assert_eq!(route_of("/v1/devices//keys"), None);
        assert_eq!(route_of("/v1/devices/m1/nothing"), None);
        assert_eq!(route_of("/openapi.json"), Some(Endpoint::OpenApi));
    }

    #[test]
    fn captures_become_openapi_parameters() {
        assert_eq!(
            openapi_path("/v1/devices/:device/keys/:key"),
            "/v1/devices/{device}/keys/{key}"
        );
    }
}
