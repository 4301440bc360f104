//! The OpenAPI 3.0 document of the query API (`src/openapi.json`), served at `/openapi.json`.
//! A unit test keeps it in step with the route table.

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use weir_contract::routes::Endpoint;

    fn document() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses")
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for endpoint in Endpoint::ALL {
            let path = endpoint.template();
            assert!(
                paths[path]["get"].is_object(),
                "{path} is not in openapi.json"
            );
        }
        assert_eq!(paths.len(), Endpoint::ALL.len(), "{:?}", paths.keys());
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        fn walk(doc: &Value, node: &Value) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.strip_prefix('#').expect("local reference");
                        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
                    }
                    map.values().for_each(|v| walk(doc, v));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
                _ => {}
            }
        }
        walk(&doc, &doc);
    }

    #[test]
    fn the_api_needs_a_bearer_token_except_for_this_document() {
        let doc = document();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(
            doc["paths"]["/openapi.json"]["get"]["security"],
            serde_json::json!([])
        );
        let history = &doc["paths"]["/v1/devices/{device}/keys/{key}/history"]["get"]["responses"];
        for status in ["200", "302", "308", "400", "401", "404", "503"] {
            assert!(history[status].is_object(), "history documents {status}");
        }
    }
}
