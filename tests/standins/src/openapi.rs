//! The operations an OpenAPI 3 document publishes (method, path template, query and header
//! parameters, required and known JSON body fields), read at test time, to check that every
//! request a worker makes is one the published API defines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// One published operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub operation_id: String,
    segments: Vec<Segment>,
    pub query: BTreeSet<String>,
    pub headers: BTreeSet<String>,
    pub body_required: bool,
    pub required_fields: BTreeSet<String>,
    /// The fields the body may have; `None` when the schema leaves it open.
    pub known_fields: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// A path parameter; `Some` lists the only values it takes.
    Parameter(Option<Vec<String>>),
}

/// The operations of one OpenAPI document.
#[derive(Debug)]
pub struct Spec {
    pub operations: Vec<Operation>,
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

impl Spec {
    /// Reads the OpenAPI document (YAML or JSON) at `path`.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // A trusted, published document of several MB: the budget for untrusted YAML
        // would refuse it.
        let options = serde_saphyr::options! { budget: None };
        let document: Value = serde_saphyr::from_str_with_options(&text, options)
            .with_context(|| format!("{} is not YAML", path.display()))?;
        Spec::from_document(&document)
    }

    /// The operations of an already parsed document.
    pub fn from_document(document: &Value) -> Result<Spec> {
        let paths = document
            .get("paths")
            .and_then(Value::as_object)
            .context("the document has no paths")?;
        let mut operations = Vec::new();
        for (template, item) in paths {
            let shared_params = item.get("parameters").cloned().unwrap_or(Value::Null);
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let mut params = Vec::new();
                for list in [&shared_params, op.get("parameters").unwrap_or(&Value::Null)] {
                    if let Some(list) = list.as_array() {
                        params.extend(list.iter().map(|p| resolve(document, p)));
                    }
                }
                operations.push(operation(document, template, method, op, &params));
            }
        }
        Ok(Spec { operations })
    }

    /// The operation a request with this method and path (e.g. `/v4/linode/instances/7`)
    /// would reach, preferring the template with the most literal segments.
    pub fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.operations
            .iter()
            .filter(|op| op.method.eq_ignore_ascii_case(method) && op.matches(&parts))
            .max_by_key(|op| {
                op.segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            })
    }

    /// Checks one request: its method and path, its query parameter names, an `X-Filter`
    /// header, and its JSON body's required and known fields.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &[String],
        x_filter: bool,
        body: Option<&Value>,
    ) -> Result<&Operation, String> {
        let op = self
            .find(method, path)
            .ok_or_else(|| format!("{method} {path} is no published operation"))?;
        let what = format!("{method} {path} ({})", op.operation_id);
        if let Some(name) = query.iter().find(|q| !op.query.contains(*q)) {
            return Err(format!("{what} has no query parameter {name}"));
        }
        if x_filter && !op.headers.contains("x-filter") {
            return Err(format!("{what} takes no X-Filter header"));
        }
        match body {
            None if op.body_required => return Err(format!("{what} needs a body")),
            None => {}
            Some(body) => {
                let Some(fields) = body.as_object() else {
                    return Err(format!("{what}: the body is not a JSON object"));
                };
                if let Some(missing) = op.required_fields.iter().find(|f| !fields.contains_key(*f))
                {
                    return Err(format!("{what}: the body lacks required field {missing}"));
                }
                if let Some(known) = &op.known_fields
                    && let Some(extra) = fields.keys().find(|f| !known.contains(*f))
                {
                    return Err(format!("{what}: the body has unpublished field {extra}"));
                }
            }
        }
        Ok(op)
    }

    /// Checks a request as a stand-in recorded it: `{method, path, query: [[k, v]…],
    /// x_filter, body}`.
    pub fn check_recorded(&self, request: &Value) -> Result<&Operation, String> {
        let text = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("");
        let query: Vec<String> = request
            .get("query")
            .and_then(Value::as_array)
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|pair| pair.get(0).and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let x_filter = request.get("x_filter").is_some_and(|v| !v.is_null());
        let body = request.get("body").filter(|b| !b.is_null());
        self.check(text("method"), text("path"), &query, x_filter, body)
    }
}

impl Operation {
    fn matches(&self, parts: &[&str]) -> bool {
        parts.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(parts)
                .all(|(segment, part)| match segment {
                    Segment::Literal(text) => text == part,
                    Segment::Parameter(None) => !part.is_empty(),
                    Segment::Parameter(Some(values)) => values.iter().any(|v| v == part),
                })
    }
}

fn operation(
    document: &Value,
    template: &str,
    method: &str,
    op: &Value,
    params: &[&Value],
) -> Operation {
    let mut path_enums: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut query = BTreeSet::new();
    let mut headers = BTreeSet::new();
    for param in params {
        let name = param.get("name").and_then(Value::as_str).unwrap_or("");
        match param.get("in").and_then(Value::as_str) {
            Some("query") => {
                query.insert(name.to_string());
            }
            Some("header") => {
                headers.insert(name.to_ascii_lowercase());
            }
            Some("path") => {
                let values = param
                    .get("schema")
                    .map(|s| resolve(document, s))
                    .and_then(|s| s.get("enum"))
                    .and_then(Value::as_array);
                if let Some(values) = values {
                    path_enums.insert(
                        name.to_string(),
                        values
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    let segments = template
        .trim_matches('/')
        .split('/')
        .map(
            |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => Segment::Parameter(path_enums.get(name).cloned()),
                None => Segment::Literal(part.to_string()),
            },
        )
        .collect();
    let body = op.get("requestBody").map(|b| resolve(document, b));
    let body_required = body
        .and_then(|b| b.get("required"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let schema = body
        .and_then(|b| b.get("content"))
        .and_then(|c| c.get("application/json"))
        .and_then(|c| c.get("schema"));
    let mut required_fields = BTreeSet::new();
    let mut known = BTreeSet::new();
    let mut open = schema.is_none();
    if let Some(schema) = schema {
        collect_fields(
            document,
            schema,
            &mut required_fields,
            &mut known,
            &mut open,
            true,
        );
    }
    Operation {
        method: method.to_ascii_uppercase(),
        path: template.to_string(),
        operation_id: op
            .get("operationId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        segments,
        query,
        headers,
        body_required,
        required_fields,
        known_fields: if open { None } else { Some(known) },
    }
}

/// Gathers the fields a body schema defines. `all` is false inside `oneOf`/`anyOf`, whose
/// branches are alternatives: their fields are known, but none of them is required.
fn collect_fields(
    document: &Value,
    schema: &Value,
    required: &mut BTreeSet<String>,
    known: &mut BTreeSet<String>,
    open: &mut bool,
    all: bool,
) {
    let schema = resolve(document, schema);
    let mut structured = false;
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        known.extend(properties.keys().cloned());
        structured = true;
    }
    if all && let Some(list) = schema.get("required").and_then(Value::as_array) {
        required.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    for (key, every) in [("allOf", all), ("oneOf", false), ("anyOf", false)] {
        if let Some(parts) = schema.get(key).and_then(Value::as_array) {
            structured = true;
            for part in parts {
                collect_fields(document, part, required, known, open, every);
            }
        }
    }
    if !structured {
        *open = true;
    }
}

/// Follows a local `$ref` (`#/components/…`); anything else is returned as it is.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    let mut current = value;
    for _ in 0..32 {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return current;
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return current;
        };
        match document.pointer(pointer) {
            Some(target) => current = target,
            None => return current,
        }
    }
    current
}
