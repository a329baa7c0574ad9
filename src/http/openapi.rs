//! The OpenAPI document served at `/api/v1/openapi.json`: what the route
//! annotations say, completed with the answers every route shares.
//!
//! The annotations name each route's own outcomes. Errors raised before a
//! handler runs (a credential refused, a rate limit, a body that is too
//! large or of another type, a query that cannot be read) are the same on
//! every route, so they are added here once, with their headers. Every error
//! is `application/problem+json` (the SCIM routes are described by SCIM's
//! own `/Schemas`, not here).

use serde_json::{json, Map, Value};

/// The document, completed.
pub fn document(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).unwrap_or_else(|_| json!({}));
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (_, operation) in item.iter_mut() {
                complete_operation(path, operation);
            }
        }
    }
    // Bodies that must name at least one field. (utoipa's derive writes its
    // `min_properties` attribute as `maxProperties`, so it is set here.)
    for schema in ["RoleAssignment"] {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{schema}")).and_then(Value::as_object_mut) {
            schema.insert("minProperties".into(), json!(1));
        }
    }
    doc
}

/// The shared errors of the admin API, by status: what they mean.
const SHARED: [(&str, &str); 5] = [
    ("400", "The request cannot be read: a malformed query string or path, or a NUL character in the query."),
    ("401", "No credential, or one that is unknown, revoked or expired."),
    ("403", "The credential's role is below what the route needs."),
    (
        "429",
        "Too many failed authentications from this address or for this credential; retry after `Retry-After` seconds.",
    ),
    ("500", "An internal error; the server log has the cause."),
];

fn complete_operation(path: &str, operation: &mut Value) {
    let admin = path.starts_with("/api/v1/");
    let has_body = operation.get("requestBody").is_some();
    let has_query =
        operation.get("parameters").and_then(Value::as_array).is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    if admin {
        let mut add = |status: &str, description: &str| {
            responses.entry(status.to_string()).or_insert_with(|| json!({ "description": description }));
        };
        for (status, description) in SHARED {
            add(status, description);
        }
        if path.contains('{') {
            add("404", "Nothing with this id in the organization.");
        }
        if has_body {
            add("413", "The body is larger than `request_body_limit_bytes`.");
            add("415", "The body is not of the documented content type.");
        }
        if has_body || has_query {
            add("422", "A value is out of range or invalid; `field` names it.");
        }
        add("408", "The request took longer than `request_timeout_secs`.");
        add("414", "The request target is longer than 8 KiB.");
        add("431", "The request's header fields are too many or too large.");
    }
    for (status, response) in responses.iter_mut() {
        let error = status.starts_with('4') || status.starts_with('5');
        let Some(response) = response.as_object_mut() else { continue };
        if error && !is_page(response) {
            response.insert(
                "content".into(),
                json!({ "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }),
            );
        }
        let headers = match status.as_str() {
            "401" => {
                Some(("WWW-Authenticate", "The scheme to authenticate with: `Bearer`.", json!({ "type": "string" })))
            }
            "429" => Some((
                "Retry-After",
                "Seconds until a request from this client may succeed.",
                json!({ "type": "integer", "minimum": 1 }),
            )),
            _ => None,
        };
        if let Some((name, description, schema)) = headers {
            let headers = response.entry("headers").or_insert_with(|| Value::Object(Map::new()));
            if let Some(headers) = headers.as_object_mut() {
                headers.entry(name).or_insert_with(|| json!({ "description": description, "schema": schema }));
            }
        }
    }
}

/// Whether a response is a page for a person (the sign-in routes' HTML),
/// left as its route describes it.
fn is_page(response: &Map<String, Value>) -> bool {
    response.get("content").and_then(Value::as_object).is_some_and(|c| c.contains_key("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_errors_are_added_as_problems_and_own_ones_kept() {
        let api: utoipa::openapi::OpenApi = serde_json::from_value(json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "1" },
            "paths": {
                "/api/v1/things/{id}": { "patch": {
                    "requestBody": { "content": { "application/json": { "schema": { "type": "object" } } } },
                    "responses": {
                        "200": { "description": "ok" },
                        "409": { "description": "taken", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }
                    }
                } },
                "/sso/authorize": { "get": { "responses": {
                    "400": { "description": "stopped", "content": { "text/html": { "schema": { "type": "string" } } } }
                } } }
            }
        }))
        .unwrap();
        let doc = document(api);
        let patch = &doc["paths"]["/api/v1/things/{id}"]["patch"]["responses"];
        for status in ["400", "401", "403", "404", "408", "409", "413", "414", "415", "422", "429", "431", "500"] {
            assert!(patch[status]["content"]["application/problem+json"].is_object(), "{status}: {patch}");
            assert!(patch[status]["content"].get("application/json").is_none(), "{status}");
        }
        assert_eq!(patch["409"]["description"], "taken");
        assert!(patch["429"]["headers"]["Retry-After"].is_object());
        assert!(patch["200"].get("content").is_none());
        let sso = &doc["paths"]["/sso/authorize"]["get"]["responses"];
        assert!(sso["400"]["content"]["text/html"].is_object());
        assert!(sso.get("401").is_none(), "the admin API's shared errors are not the sign-in routes'");
    }
}
