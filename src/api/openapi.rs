//! The OpenAPI 3.0 document, made from the same route table that builds the router (see
//! `routes.rs`): a route cannot exist without its description, nor the reverse. Schemas
//! come from the Rust types themselves (schemars, in its OpenAPI 3.0 dialect).

use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::{Schema, SchemaObject};
use serde_json::{json, Map, Value};

/// A schema made by the generator (a `$ref` into `components/schemas` for structs).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

pub fn schema_of<T: schemars::JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The documentation of one route.
#[derive(Clone)]
pub struct Doc {
    pub method: axum::http::Method,
    /// As axum and OpenAPI both write it: `/api/v1/tenants/{tenant}`.
    pub path: &'static str,
    pub summary: &'static str,
    /// Only an operator key may call it (a tenant key gets 403).
    pub operator_only: bool,
    /// No key needed.
    pub public: bool,
    /// A struct whose fields are the query parameters.
    pub query: Option<SchemaFn>,
    pub body: Option<SchemaFn>,
    pub status: u16,
    /// `None`: a `text/plain` response (metrics).
    pub response: Option<SchemaFn>,
}

impl Doc {
    pub fn new(method: axum::http::Method, path: &'static str, summary: &'static str) -> Doc {
        Doc { method, path, summary, operator_only: false, public: false, query: None, body: None, status: 200, response: None }
    }
    pub fn operator(mut self) -> Doc {
        self.operator_only = true;
        self
    }
    pub fn public(mut self) -> Doc {
        self.public = true;
        self
    }
    pub fn query(mut self, q: SchemaFn) -> Doc {
        self.query = Some(q);
        self
    }
    pub fn body(mut self, b: SchemaFn) -> Doc {
        self.body = Some(b);
        self
    }
    pub fn ok(mut self, status: u16, r: SchemaFn) -> Doc {
        self.status = status;
        self.response = Some(r);
        self
    }
    /// `METHOD path`, as the isolation test names routes.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn to_value(s: &Schema) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The query parameters of a query struct: its top-level properties.
fn query_parameters(g: &mut SchemaGenerator, q: SchemaFn) -> Vec<Value> {
    let schema = q(g);
    let object: SchemaObject = match &schema {
        Schema::Object(o) if o.reference.is_some() => {
            let name = o.reference.as_deref().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
            match g.definitions().get(&name) {
                Some(Schema::Object(o)) => o.clone(),
                _ => return Vec::new(),
            }
        }
        Schema::Object(o) => o.clone(),
        Schema::Bool(_) => return Vec::new(),
    };
    let Some(obj) = object.object else { return Vec::new() };
    obj.properties
        .iter()
        .map(|(name, s)| {
            let mut schema = to_value(s);
            let description = schema.get("description").cloned();
            if let Some(m) = schema.as_object_mut() {
                m.remove("description");
                m.remove("default");
                m.remove("nullable");
            }
            let mut p = json!({ "name": name, "in": "query", "required": obj.required.contains(name), "schema": schema });
            if let Some(d) = description {
                p["description"] = d;
            }
            p
        })
        .collect()
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } })
}

/// The whole document.
pub fn document(docs: &[Doc]) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    g.subschema_for::<super::error::ErrorBody>();
    let mut paths: Map<String, Value> = Map::new();
    for d in docs {
        let mut params: Vec<Value> = d
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "minLength": 1 } }))
            .collect();
        if let Some(q) = d.query {
            params.extend(query_parameters(&mut g, q));
        }
        let ok = match d.response {
            Some(r) => json!({ "description": "OK", "content": { "application/json": { "schema": to_value(&r(&mut g)) } } }),
            None => json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } }),
        };
        let mut responses = Map::new();
        responses.insert(d.status.to_string(), ok);
        if !d.public {
            responses.insert("401".into(), error_response("No key, or a wrong, expired, revoked or address-disallowed key"));
            responses.insert("403".into(), error_response("The key's scope does not cover this operation"));
        }
        responses.insert("400".into(), error_response("Malformed request"));
        responses.insert("404".into(), error_response("No such object (or another tenant's)"));
        responses.insert("408".into(), error_response("The request took too long"));
        if d.body.is_some() {
            responses.insert("413".into(), error_response("The body is too large"));
            responses.insert("415".into(), error_response("The body is not JSON"));
        }
        if d.body.is_some() || d.query.is_some() || d.path.contains('{') {
            responses.insert("422".into(), error_response("A value is wrong; the error names the field"));
        }
        if d.method != axum::http::Method::GET {
            responses.insert("409".into(), error_response("The object exists already, or its state forbids the change"));
        }
        responses.insert("500".into(), error_response("The server could not complete the request"));
        let mut op = json!({
            "summary": d.summary,
            "operationId": format!("{}{}", d.method.as_str().to_lowercase(), d.path.replace(['/', '{', '}', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(b) = d.body {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": to_value(&b(&mut g)) } } });
        }
        if d.public {
            op["security"] = json!([]);
        }
        let entry = paths.entry(d.path.to_string()).or_insert_with(|| json!({}));
        entry[d.method.as_str().to_lowercase()] = op;
    }
    let schemas: Map<String, Value> = g.definitions().iter().map(|(k, v)| (k.clone(), to_value(v))).collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Mailgate admin API",
            "version": "1",
            "description": "Tenants, users, legacy TLS settings, TLS usage reports, the queue, API keys and the audit log. See docs/admin-api.md."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "An API key: mgk_<id>_<secret> (mailgate apikey add)" } }
        },
        "security": [{ "bearer": [] }]
    })
}
