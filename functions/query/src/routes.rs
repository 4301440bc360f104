//! The route table as spin-sdk's router reads it: the query API's paths are
//! `weir_contract::routes` (shared with the host, which caches answers by them), written here in
//! the router's syntax, where `:name` captures one segment. The component registers exactly
//! these; the OpenAPI document is checked against the contract's templates.

use weir_contract::routes::Endpoint;

/// `endpoint`'s path in spin-sdk's router syntax: `{device}` becomes `:device`.
pub fn router_pattern(endpoint: Endpoint) -> String {
    endpoint
        .template()
        .split('/')
        .map(|segment| match segment.strip_prefix('{') {
            Some(name) => format!(":{}", name.trim_end_matches('}')),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_become_router_parameters() {
        assert_eq!(
            router_pattern(Endpoint::Key),
            "/v1/devices/:device/keys/:key"
        );
        assert_eq!(router_pattern(Endpoint::Devices), "/v1/devices");
        assert_eq!(router_pattern(Endpoint::OpenApi), "/openapi.json");
    }
}
