//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document generated from the
//! route tables the router itself is built from, so it can never list a
//! route that does not exist or miss one that does. Protected routes carry
//! both security schemes (session cookie, bearer token) and the least role
//! they need (`x-required-role`: viewer, operator or admin). Request and
//! response bodies refer to schemas generated from the Rust types the
//! handlers (de)serialise (`utoipa::ToSchema`), so a field added to a type
//! is in the document too.

use std::collections::BTreeMap;

use axum::response::Json;
use serde_json::{Value, json};

use super::{Access, ErrorBody, Route, auth, body, open_routes, protected_routes};

/// A generated schema, or a reference to one.
pub(crate) type Schema = utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>;

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub(crate) async fn document() -> Json<Value> {
    Json(build())
}

pub(crate) fn build() -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut schemas: Vec<(String, Schema)> = Vec::new();
    let error = body::<ErrorBody>();
    (error.collect)(&mut schemas);
    let error_content = json!({"application/json": {"schema": reference(&(error.name)())}});
    let mut add = |route: &Route| {
        let protected = matches!(route.access, Access::Role(_));
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = serde_json::Map::new();
        let mut success = json!({"description": "Success"});
        if let Some(response) = route.response {
            (response.collect)(&mut schemas);
            success["content"] =
                json!({"application/json": {"schema": reference(&(response.name)())}});
        }
        responses.insert("200".into(), success);
        let mut failure = |status: &str, description: &str| {
            responses.insert(
                status.into(),
                json!({"description": description, "content": error_content}),
            );
        };
        if protected {
            failure("401", "No or invalid credentials");
            failure(
                "403",
                "Missing CSRF token, a role below the one required, or refused by the licence",
            );
        }
        if matches!(route.method.as_str(), "POST" | "PUT") {
            failure("400", "The body is not JSON");
            failure("422", "Field errors; nothing was changed");
        }
        let mut parameters = parameters;
        if route.method == axum::http::Method::PUT && route.path == "/api/v1/config" {
            failure(
                "409",
                "If-Match names a version other than the stored one; nothing was changed",
            );
            parameters.push(
                json!({"name": "If-Match", "in": "header", "required": false,
                "description": "The config version the change was reviewed against, e.g. \"3\"",
                "schema": {"type": "string"}}),
            );
        }
        let mut operation = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method.as_str().to_ascii_lowercase(), route.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(request) = route.request {
            (request.collect)(&mut schemas);
            let mut content = json!({"application/json": {"schema": reference(&(request.name)())}});
            if route.path.starts_with("/api/v1/config") {
                content["application/toml"] =
                    json!({"schema": {"type": "string", "description": "The same config as TOML"}});
            }
            operation["requestBody"] = json!({"required": true, "content": content});
        } else if route.path == "/api/v1/system/upgrade" {
            operation["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "description": "A signed .pgup upgrade bundle, streamed"}}}});
        } else if route.path.starts_with("/api/v1/ca-bundles/")
            && route.method == axum::http::Method::PUT
        {
            operation["requestBody"] = json!({"required": true, "content": {"application/x-pem-file": {
                "schema": {"type": "string", "description": "One or more PEM CERTIFICATE sections: the CA certificates to trust (no keys)"}}}});
        } else if matches!(route.method.as_str(), "POST" | "PUT") {
            operation["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        if let Access::Role(role) = route.access {
            operation["x-required-role"] = json!(role.as_str());
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
    for route in open_routes().iter().chain(&protected_routes()) {
        add(route);
    }
    let schemas: BTreeMap<String, Schema> = schemas.into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "poolgate admin API", "version": env!("POOLGATE_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
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

    /// Every `$ref` in the document names a schema in its components.
    fn references(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target.clone());
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn bodies_have_schemas_generated_from_the_rust_types() {
        let document = build();
        let schemas = &document["components"]["schemas"];
        let config = &schemas["ConfigFile"];
        assert_eq!(config["type"], "object", "{config}");
        for field in ["listen", "pool", "virtual_service", "monitor"] {
            assert!(
                config["properties"].get(field).is_some(),
                "ConfigFile.{field}"
            );
        }
        let member = &schemas["MemberFile"]["properties"];
        assert!(member.get("address").is_some(), "{member}");
        // Extra ports are a number or a { port, member_port } table.
        let service = &schemas["VirtualServiceFile"]["properties"];
        for field in ["member_port", "extra_ports", "send_proxy"] {
            assert!(service.get(field).is_some(), "VirtualServiceFile.{field}");
        }
        let extra = schemas["ExtraPortFile"].to_string();
        assert!(
            extra.contains("oneOf") && extra.contains("PortMapFile"),
            "{extra}"
        );
        assert!(schemas["SendProxy"].to_string().contains("v2"));
        let put = &document["paths"]["/api/v1/config"]["put"]["requestBody"]["content"];
        assert_eq!(
            put["application/json"]["schema"]["$ref"],
            "#/components/schemas/ConfigFile"
        );
        assert!(put.get("application/toml").is_some());
        let invalid = &document["paths"]["/api/v1/config"]["put"]["responses"]["422"];
        assert_eq!(
            invalid["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.len() > 20);
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .expect("a component reference");
            assert!(
                schemas.get(name).is_some(),
                "{target} is not in the components"
            );
        }
        // The JSON bodies users send are described by their types.
        for (method, path) in [
            ("post", "/api/v1/setup"),
            ("post", "/api/v1/session"),
            ("post", "/api/v1/tokens"),
            ("post", "/api/v1/config/preview"),
            ("post", "/api/v1/license"),
            ("put", "/api/v1/certificate"),
        ] {
            let body = &document["paths"][path][method]["requestBody"];
            assert!(
                body["content"]["application/json"]["schema"]["$ref"].is_string(),
                "{method} {path}: {body}"
            );
        }
    }
}
