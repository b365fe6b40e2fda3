//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document generated from the
//! route tables the router itself is built from, so it can never list a
//! route that does not exist or miss one that does. Protected routes carry
//! both security schemes (session cookie, bearer token).

use std::collections::BTreeMap;

use axum::response::Json;
use serde_json::{Value, json};

use super::{Route, auth, open_routes, protected_routes};

pub async fn document() -> Json<Value> {
    Json(build())
}

pub fn build() -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut add = |route: &Route, protected: bool| {
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = serde_json::Map::new();
        responses.insert("200".into(), json!({"description": "Success"}));
        if protected {
            responses.insert(
                "401".into(),
                json!({"description": "No or invalid credentials"}),
            );
            responses.insert(
                "403".into(),
                json!({"description": "Missing CSRF token, or refused by the licence"}),
            );
        }
        if matches!(route.method.as_str(), "POST" | "PUT") {
            responses.insert("400".into(), json!({"description": "The body is not JSON"}));
            responses.insert(
                "422".into(),
                json!({"description": "Field errors; nothing was changed"}),
            );
        }
        let mut operation = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method.as_str().to_ascii_lowercase(), route.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if matches!(route.method.as_str(), "POST" | "PUT") {
            operation["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        operation["security"] = if protected {
            json!([{"session": [], "csrf": []}, {"token": []}])
        } else {
            json!([])
        };
        paths
            .entry(route.path.to_owned())
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    };
    for route in open_routes() {
        add(&route, false);
    }
    for route in protected_routes() {
        add(&route, true);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "poolgate admin API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": auth::SESSION_COOKIE},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            "token": {"type": "http", "scheme": "bearer"},
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_route_with_its_security() {
        let document = build();
        let count: usize = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|ops| ops.as_object().expect("operations").len())
            .sum();
        assert_eq!(count, open_routes().len() + protected_routes().len());
        let status = &document["paths"]["/api/v1/status"]["get"];
        assert_eq!(status["security"][1]["token"], json!([]));
        let health = &document["paths"]["/api/v1/health"]["get"];
        assert_eq!(health["security"], json!([]));
        let action = &document["paths"]["/api/v1/pools/{pool}/members/{member}/{action}"]["post"];
        assert_eq!(action["parameters"].as_array().expect("params").len(), 3);
    }
}
