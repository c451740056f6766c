//! The API against its own OpenAPI document (`/api/v1/openapi.json`): which operation a
//! request is, whether the status it got is documented for it, and whether the body fits the
//! documented schema — a structural JSON Schema check of the parts the document uses
//! (`$ref`, `allOf`, `oneOf`, `anyOf`, `type`, `enum`, `properties`, `required`, `items`).
//! Objects with documented properties are taken as closed: a field the document does not
//! name is an error, so the document cannot fall behind the answers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The API's prefix: the document's one server.
pub const PREFIX: &str = "/api/v1";

pub struct Spec {
    pub doc: Value,
    /// (template, method, statuses seen), filled by [`Spec::check`].
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Spec {
    pub fn new(doc: Value) -> Spec {
        assert_eq!(
            doc["servers"][0]["url"], PREFIX,
            "the document's server is the API's prefix"
        );
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "an OpenAPI 3 document: {}",
            doc["openapi"]
        );
        Spec {
            doc,
            seen: BTreeMap::new(),
        }
    }

    /// Every documented (template, method), as `/runs/{id}` and `GET`.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (template, item) in paths {
                for method in ["get", "post", "put", "delete", "patch", "head", "options"] {
                    if item.get(method).is_some() {
                        out.push((template.clone(), method.to_ascii_uppercase()));
                    }
                }
            }
        }
        out
    }

    /// The documented template a concrete path (under [`PREFIX`], query allowed) matches.
    pub fn template_of(&self, path: &str) -> Option<String> {
        let path = path.split('?').next()?.strip_prefix(PREFIX)?;
        let parts: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        // Literal segments win over parameters (`/runs/{id}/log` over `/runs/{id}/{action}`).
        let mut best: Option<(usize, String)> = None;
        for template in paths.keys() {
            let t: Vec<&str> = template.split('/').collect();
            if t.len() != parts.len() {
                continue;
            }
            let mut literal = 0;
            let fits = t.iter().zip(&parts).all(|(t, p)| {
                if t.starts_with('{') && t.ends_with('}') {
                    !p.is_empty()
                } else {
                    literal += 1;
                    t == p
                }
            });
            if fits && best.as_ref().is_none_or(|(n, _)| literal > *n) {
                best = Some((literal, template.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    /// Checks one answer: the operation is documented, the status is one of its documented
    /// answers, and the JSON body fits that answer's schema.
    pub fn check(&mut self, method: &str, path: &str, status: u16, body: &Value) {
        let template = self
            .template_of(path)
            .unwrap_or_else(|| panic!("{method} {path}: no such path in the OpenAPI document"));
        let op = &self.doc["paths"][&template][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path}: {template} documents no {method}"
        );
        let answer = &op["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {path}: status {status} is not documented for {method} {template} (body {body})"
        );
        let schema = &answer["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path}: {status} has no JSON schema in the document"
        );
        if let Err(e) = validate(&self.doc, schema, body, "$", true) {
            panic!(
                "{method} {path} ({status}): the body does not fit the documented schema: {e}\nbody: {body}"
            );
        }
        self.seen
            .entry((template, method.to_string()))
            .or_default()
            .insert(status);
    }

    /// The statuses seen per operation, for coverage checks.
    pub fn seen(&self) -> &BTreeMap<(String, String), BTreeSet<u16>> {
        &self.seen
    }
}

/// Every `$ref` in `v`, wherever it is (bodies, parameters, components).
pub fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> Result<&'a Value, String> {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .ok_or_else(|| format!("a $ref outside the components: {r}"))?;
            let target = &doc["components"]["schemas"][name];
            if target.is_null() {
                return Err(format!("$ref to an undefined schema {name}"));
            }
            resolve(doc, target)
        }
        None => Ok(schema),
    }
}

/// The property names an object schema allows, its `allOf` members' included; `None` when
/// it names none (an open object).
fn allowed(doc: &Value, schema: &Value) -> Option<BTreeSet<String>> {
    let schema = resolve(doc, schema).ok()?;
    let mut names: Option<BTreeSet<String>> = None;
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        names
            .get_or_insert_with(BTreeSet::new)
            .extend(props.keys().cloned());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for member in all {
            if let Some(more) = allowed(doc, member) {
                names.get_or_insert_with(BTreeSet::new).extend(more);
            }
        }
    }
    names
}

fn type_fits(t: &str, value: &Value) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// Whether `value` fits `schema`; `closed` says whether fields the schema does not name are
/// errors (not for `allOf` members, which name only their part).
pub fn validate(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    closed: bool,
) -> Result<(), String> {
    let schema = resolve(doc, schema)?;
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for member in all {
            validate(doc, member, value, at, false)?;
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = one
            .iter()
            .filter(|s| validate(doc, s, value, at, closed).is_ok())
            .count();
        if fits != 1 {
            return Err(format!("{at}: fits {fits} of oneOf's schemas, not one"));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any
            .iter()
            .any(|s| validate(doc, s, value, at, closed).is_ok())
    {
        return Err(format!("{at}: fits none of anyOf's schemas"));
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_fits(t, value) => {
            return Err(format!("{at}: {value} is not of type {t}"));
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .any(|t| t.as_str().is_some_and(|t| type_fits(t, value))) =>
        {
            return Err(format!("{at}: {value} is of none of the types {ts:?}"));
        }
        _ => {}
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is none of {options:?}"));
    }
    if let Value::Object(map) = value {
        check_object(doc, schema, map, at, closed)?;
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            validate(doc, item, v, &format!("{at}[{i}]"), true)?;
        }
    }
    Ok(())
}

fn check_object(
    doc: &Value,
    schema: &Value,
    map: &Map<String, Value>,
    at: &str,
    closed: bool,
) -> Result<(), String> {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                return Err(format!("{at}: the required field '{name}' is missing"));
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            if let Some(v) = map.get(name) {
                validate(doc, sub, v, &format!("{at}.{name}"), true)?;
            }
        }
    }
    let open = schema
        .get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false));
    if closed
        && !open
        && let Some(names) = allowed(doc, schema)
        && let Some(extra) = map.keys().find(|k| !names.contains(*k))
    {
        return Err(format!("{at}: the field '{extra}' is not documented"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_check_catches_what_it_should() {
        let doc = json!({
            "components": {"schemas": {
                "E": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "run": {"type": ["integer", "null"]}}},
                "D": {"allOf": [{"$ref": "#/components/schemas/E"},
                    {"type": "object", "properties": {"more": {"type": "array", "items": {"type": "integer"}}}}]},
            }}
        });
        let e = json!({"$ref": "#/components/schemas/E"});
        let d = json!({"$ref": "#/components/schemas/D"});
        assert!(validate(&doc, &e, &json!({"error": "x"}), "$", true).is_ok());
        assert!(validate(&doc, &e, &json!({"error": "x", "run": null}), "$", true).is_ok());
        assert!(validate(&doc, &e, &json!({"run": 1}), "$", true).is_err());
        assert!(validate(&doc, &e, &json!({"error": 1}), "$", true).is_err());
        assert!(validate(&doc, &e, &json!({"error": "x", "extra": 1}), "$", true).is_err());
        assert!(validate(&doc, &d, &json!({"error": "x", "more": [1, 2]}), "$", true).is_ok());
        assert!(validate(&doc, &d, &json!({"error": "x", "more": ["a"]}), "$", true).is_err());
        assert!(validate(&doc, &d, &json!({"error": "x", "other": 1}), "$", true).is_err());
    }
}
