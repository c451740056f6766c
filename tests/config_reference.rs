//! The configuration reference, `docs/configuration.md`, and its JSON Schema,
//! `docs/jarvis.schema.json`, are generated from the configuration types' own source: their
//! fields, serde attributes, defaults and doc comments. This test regenerates both and fails
//! when the committed files differ; `JARVIS_BLESS=1 cargo test --test config_reference`
//! writes them.
//!
//! Reading the source (with `syn`) rather than deriving a schema keeps the types free of a
//! schema dependency and needs no change in the modules that own them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use quote::ToTokens;
use serde_json::{Map, Value, json};

/// The files that define configuration types, searched in this order.
const SOURCES: &[&str] = &[
    "src/config.rs",
    "src/engine/pipeline.rs",
    "src/chat/roles.rs",
    "src/chat/notify.rs",
    "src/model.rs",
    "src/config/irc.rs",
    "src/config/network.rs",
    "src/config/xmpp.rs",
    "design/src/config.rs",
    "design/src/dn.rs",
    "src/secrets.rs",
    "src/retention.rs",
    "src/config/http.rs",
    "src/config/cluster.rs",
    "src/triggers/config.rs",
    "src/chat/actions.rs",
    "src/chat/environments.rs",
    "src/chat/groups.rs",
];

const REGENERATE: &str = "JARVIS_BLESS=1 cargo test --test config_reference";

struct Item {
    file: &'static str,
    doc: String,
    attrs: Vec<syn::Attribute>,
    kind: ItemKind,
}

enum ItemKind {
    Struct(syn::Fields),
    Enum(Vec<syn::Variant>),
}

struct Source {
    items: BTreeMap<String, Item>,
    /// (file, fn name) → its body, for `default = "fn"`.
    fns: BTreeMap<(&'static str, String), String>,
    /// type → field → expression, from `impl Default for T { … T { field: expr } }`.
    defaults: BTreeMap<String, BTreeMap<String, String>>,
}

fn doc_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            let line = s.value();
            lines.push(line.strip_prefix(' ').unwrap_or(&line).to_string());
        }
    }
    lines.join("\n")
}

/// `#[serde(...)]` contents as `key` / `key = "value"` pairs.
fn serde_args(attrs: &[syn::Attribute]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("serde") {
            continue;
        }
        let _ = attr.parse_nested_meta(|meta| {
            let key = meta.path.to_token_stream().to_string();
            let value = match meta.value() {
                Ok(v) => v.parse::<syn::LitStr>().ok().map(|s| s.value()),
                Err(_) => None,
            };
            out.push((key, value));
            Ok(())
        });
    }
    out
}

fn derives_deserialize(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive") && a.meta.to_token_stream().to_string().contains("Deserialize")
    })
}

/// Token text with the spaces `quote` puts everywhere taken out again.
fn tidy(tokens: String) -> String {
    let mut s = tokens;
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" (", "("),
        ("( ", "("),
        (" )", ")"),
        (" .", "."),
        (". ", "."),
        (" ,", ","),
        ("! [", "!["),
        ("[ ", "["),
        (" ]", "]"),
        ("& ", "&"),
    ] {
        s = s.replace(from, to);
    }
    s
}

fn load() -> Source {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut source = Source {
        items: BTreeMap::new(),
        fns: BTreeMap::new(),
        defaults: BTreeMap::new(),
    };
    for &file in SOURCES {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let parsed = syn::parse_file(&text).unwrap();
        for item in parsed.items {
            match item {
                syn::Item::Struct(s) => {
                    source.items.entry(s.ident.to_string()).or_insert(Item {
                        file,
                        doc: doc_of(&s.attrs),
                        attrs: s.attrs,
                        kind: ItemKind::Struct(s.fields),
                    });
                }
                syn::Item::Enum(e) => {
                    source.items.entry(e.ident.to_string()).or_insert(Item {
                        file,
                        doc: doc_of(&e.attrs),
                        attrs: e.attrs,
                        kind: ItemKind::Enum(e.variants.into_iter().collect()),
                    });
                }
                syn::Item::Fn(f) => {
                    let body = match f.block.stmts.as_slice() {
                        [syn::Stmt::Expr(e, None)] => tidy(e.to_token_stream().to_string()),
                        _ => tidy(f.block.to_token_stream().to_string()),
                    };
                    source.fns.insert((file, f.sig.ident.to_string()), body);
                }
                syn::Item::Impl(i) => {
                    let is_default = i.trait_.as_ref().is_some_and(|(_, path, _)| {
                        path.segments.last().is_some_and(|s| s.ident == "Default")
                    });
                    if !is_default {
                        continue;
                    }
                    let ty = i.self_ty.to_token_stream().to_string();
                    for impl_item in &i.items {
                        let syn::ImplItem::Fn(f) = impl_item else {
                            continue;
                        };
                        if let Some(syn::Stmt::Expr(syn::Expr::Struct(s), None)) =
                            f.block.stmts.last()
                        {
                            let fields = s
                                .fields
                                .iter()
                                .filter_map(|fv| match &fv.member {
                                    syn::Member::Named(n) => Some((
                                        n.to_string(),
                                        tidy(fv.expr.to_token_stream().to_string()),
                                    )),
                                    _ => None,
                                })
                                .collect();
                            source.defaults.insert(ty.clone(), fields);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    source
}

/// A field's type as the reference tells it.
enum Shape {
    Optional(Box<Shape>),
    List(Box<Shape>),
    Map(Box<Shape>),
    Scalar(&'static str, Value),
    Duration,
    Secret,
    AnyMapping,
    Named(String),
}

fn shape(ty: &syn::Type) -> Shape {
    let syn::Type::Path(path) = ty else {
        return Shape::Scalar("value", json!({}));
    };
    let Some(last) = path.path.segments.last() else {
        return Shape::Scalar("value", json!({}));
    };
    let args: Vec<&syn::Type> = match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let name = last.ident.to_string();
    match (name.as_str(), args.as_slice()) {
        ("Option", [t]) => Shape::Optional(Box::new(shape(t))),
        ("Vec", [t]) => Shape::List(Box::new(shape(t))),
        ("BTreeMap" | "HashMap", [_, t]) => Shape::Map(Box::new(shape(t))),
        ("Map", _) => Shape::AnyMapping,
        ("String", _) => Shape::Scalar("text", json!({"type": "string"})),
        ("PathBuf", _) => Shape::Scalar("path", json!({"type": "string"})),
        ("bool", _) => Shape::Scalar("true or false", json!({"type": "boolean"})),
        ("usize" | "u64" | "u32" | "u16" | "u8", _) => {
            Shape::Scalar("integer", json!({"type": "integer", "minimum": 0}))
        }
        ("f64" | "f32", _) => Shape::Scalar("number", json!({"type": "number"})),
        ("Duration", _) => Shape::Duration,
        ("Secret", _) => Shape::Secret,
        _ => Shape::Named(name),
    }
}

struct Generator {
    source: Source,
    /// Type name → the heading of its section.
    sections: BTreeMap<String, String>,
    /// Sections in the order they are written: (type, heading).
    order: Vec<(String, String)>,
    definitions: Map<String, Value>,
}

impl Generator {
    /// Whether `name` is a mapping of its own fields (else it is written as one scalar).
    fn is_section(&self, name: &str) -> bool {
        let Some(item) = self.source.items.get(name) else {
            return false;
        };
        let custom = serde_args(&item.attrs)
            .iter()
            .any(|(k, _)| matches!(k.as_str(), "try_from" | "from" | "transparent"));
        match &item.kind {
            ItemKind::Struct(syn::Fields::Named(_)) => derives_deserialize(&item.attrs) && !custom,
            _ => false,
        }
    }

    /// The values of an enum of unit variants, as written in YAML.
    fn enum_values(&self, name: &str) -> Option<Vec<String>> {
        let item = self.source.items.get(name)?;
        let ItemKind::Enum(variants) = &item.kind else {
            return None;
        };
        let rename_all = serde_args(&item.attrs)
            .into_iter()
            .find(|(k, _)| k == "rename_all")
            .and_then(|(_, v)| v);
        variants
            .iter()
            // A variant serde never reads is no value of the configuration.
            .filter(|v| {
                !serde_args(&v.attrs)
                    .iter()
                    .any(|(k, _)| k == "skip" || k == "skip_deserializing")
            })
            .map(|v| {
                if !matches!(v.fields, syn::Fields::Unit) {
                    return None;
                }
                if let Some((_, Some(r))) = serde_args(&v.attrs)
                    .into_iter()
                    .find(|(k, _)| k == "rename")
                {
                    return Some(r);
                }
                let ident = v.ident.to_string();
                Some(match rename_all.as_deref() {
                    Some("lowercase") => ident.to_lowercase(),
                    Some("snake_case") => snake(&ident),
                    _ => ident,
                })
            })
            .collect()
    }

    /// Walks from `name` (whose section is `heading`) and registers every section it needs.
    fn visit(&mut self, name: &str, heading: &str) {
        if self.sections.contains_key(name) {
            return;
        }
        self.sections.insert(name.to_string(), heading.to_string());
        self.order.push((name.to_string(), heading.to_string()));
        let Some(Item {
            kind: ItemKind::Struct(syn::Fields::Named(fields)),
            ..
        }) = self.source.items.get(name)
        else {
            return;
        };
        let mut children = Vec::new();
        for field in &fields.named {
            let key = field_key(field);
            let (sub_heading, inner) = nested(&shape(&field.ty), &join(heading, &key));
            if let Some(inner) = inner {
                children.push((inner, sub_heading));
            }
        }
        for (inner, sub_heading) in children {
            if self.is_section(&inner) {
                self.visit(&inner, &sub_heading);
            }
        }
    }

    fn describe(&self, shape: &Shape) -> String {
        match shape {
            Shape::Optional(s) => self.describe(s),
            Shape::List(s) => format!("list of {}", self.describe(s)),
            Shape::Map(s) => format!("mapping of names to {}", self.describe(s)),
            Shape::Scalar(name, _) => (*name).to_string(),
            Shape::Duration => "[duration](#durations)".into(),
            Shape::Secret => "[secret](#variables-and-secrets) text".into(),
            Shape::AnyMapping => "mapping (any keys)".into(),
            Shape::Named(name) => {
                if let Some(heading) = self.sections.get(name) {
                    format!("[{}](#{})", heading_title(heading), anchor(heading))
                } else if let Some(values) = self.enum_values(name) {
                    format!(
                        "one of {}",
                        values
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    let doc = self
                        .source
                        .items
                        .get(name)
                        .map(|i| first_sentence(&i.doc))
                        .unwrap_or_default();
                    if doc.is_empty() {
                        "text".into()
                    } else {
                        format!("text: {doc}")
                    }
                }
            }
        }
    }

    fn schema(&self, shape: &Shape) -> Value {
        match shape {
            Shape::Optional(s) => self.schema(s),
            Shape::List(s) => json!({"type": "array", "items": self.schema(s)}),
            Shape::Map(s) => json!({"type": "object", "additionalProperties": self.schema(s)}),
            Shape::Scalar(_, schema) => schema.clone(),
            Shape::Duration => json!({"$ref": "#/$defs/Duration"}),
            Shape::Secret => json!({"type": "string"}),
            Shape::AnyMapping => json!({"type": "object"}),
            Shape::Named(name) => {
                if self.sections.contains_key(name) {
                    json!({"$ref": format!("#/$defs/{name}")})
                } else if let Some(values) = self.enum_values(name) {
                    json!({"enum": values})
                } else {
                    let mut s = json!({"type": "string"});
                    if let Some(item) = self.source.items.get(name)
                        && !item.doc.is_empty()
                    {
                        s["description"] = json!(item.doc);
                    }
                    s
                }
            }
        }
    }

    /// The default of `field` of `type_name`, as written in the source.
    fn default_of(
        &self,
        type_name: &str,
        field: &syn::Field,
        struct_default: bool,
    ) -> Option<String> {
        let item = &self.source.items[type_name];
        let ident = field.ident.as_ref()?.to_string();
        for (k, v) in serde_args(&field.attrs) {
            if k != "default" {
                continue;
            }
            return Some(match v {
                Some(f) => self
                    .source
                    .fns
                    .get(&(item.file, f.clone()))
                    .cloned()
                    .map(|body| readable_default(&body))
                    .unwrap_or(f),
                None => self
                    .source
                    .defaults
                    .get(type_name)
                    .and_then(|d| d.get(&ident))
                    .map(|e| readable_default(e))
                    .unwrap_or_else(|| empty_default(&shape(&field.ty))),
            });
        }
        if struct_default {
            return Some(
                self.source
                    .defaults
                    .get(type_name)
                    .and_then(|d| d.get(&ident))
                    .map(|e| readable_default(e))
                    .unwrap_or_else(|| empty_default(&shape(&field.ty))),
            );
        }
        None
    }

    fn write(&mut self) -> (String, String) {
        let mut md = String::new();
        let preamble = PREAMBLE
            .replace("{REGENERATE}", REGENERATE)
            .replace("{DURATIONS}", &module_doc("design/src/duration.rs"));
        md.push_str(&preamble);
        let order = self.order.clone();
        for (name, heading) in &order {
            let item = &self.source.items[name];
            let ItemKind::Struct(syn::Fields::Named(fields)) = &item.kind else {
                continue;
            };
            let struct_default = serde_args(&item.attrs)
                .iter()
                .any(|(k, v)| k == "default" && v.is_none());
            let _ = writeln!(md, "\n## {}\n", heading_title(heading));
            let _ = writeln!(md, "<a id=\"{}\"></a>", anchor(heading));
            let doc = strip_yaml_examples(&item.doc);
            if !doc.is_empty() {
                let _ = writeln!(md, "\n{doc}");
            }
            let _ = writeln!(md, "\n| key | type | default | description |");
            let _ = writeln!(md, "| --- | --- | --- | --- |");
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in &fields.named {
                let key = field_key(field);
                let field_shape = shape(&field.ty);
                let default = self.default_of(name, field, struct_default);
                let optional = matches!(field_shape, Shape::Optional(_));
                let default_text = match (&default, optional) {
                    (Some(d), _) if !d.is_empty() => format!("`{}`", d.replace('|', "\\|")),
                    (_, true) | (Some(_), false) => "—".to_string(),
                    (None, false) => {
                        required.push(json!(key));
                        "**required**".to_string()
                    }
                };
                let doc = doc_of(&field.attrs);
                let _ = writeln!(
                    md,
                    "| `{key}` | {} | {default_text} | {} |",
                    self.describe(&field_shape),
                    one_line(&doc).replace('|', "\\|")
                );
                let mut schema = self.schema(&field_shape);
                if !doc.is_empty()
                    && let Some(obj) = schema.as_object_mut()
                    && !obj.contains_key("$ref")
                {
                    obj.insert("description".into(), json!(doc));
                } else if !doc.is_empty() {
                    schema = json!({"allOf": [schema], "description": doc});
                }
                properties.insert(key, schema);
            }
            let mut def = json!({
                "type": "object",
                "additionalProperties": false,
                "properties": properties,
            });
            if !item.doc.is_empty() {
                def["description"] = json!(item.doc);
            }
            if !required.is_empty() {
                def["required"] = json!(required);
            }
            self.definitions.insert(name.clone(), def);
        }
        self.definitions.insert(
            "Duration".into(),
            json!({
                "description": module_doc("design/src/duration.rs"),
                "anyOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "pattern": "^\\s*(\\d+(\\.\\d+)?\\s*|(\\d+(\\.\\d+)?\\s*[a-z]+\\s*)+)$"}
                ]
            }),
        );
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "jarvis configuration",
            "description": format!("Generated from the configuration types by `{REGENERATE}`; do not edit."),
            "$ref": "#/$defs/Settings",
        });
        schema["$defs"] = Value::Object(std::mem::take(&mut self.definitions));
        let json = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        (md, json)
    }
}

const PREAMBLE: &str = r##"# Configuration reference

<!-- Generated from the configuration types' source by `{REGENERATE}`: do not edit. -->

jarvis reads one YAML file (`--config FILE` or `JARVIS_CONFIG`); `jarvis check-config`
checks it and names file, line and column of each problem. Unknown keys are refused. Every
key is described below, section by section, with its type, its default and what it does;
`docs/jarvis.schema.json` is the same as a JSON Schema (for editors). The built-in workers'
own settings (the environment a module is granted under `workers.modules`) are in
[workers-settings.md](workers-settings.md). `config/example.yaml` is a complete example.

A small configuration:

```yaml
name: jarvis
data_dir: /var/lib/jarvis
pipelines:
  demo:
    command: deploy
    providers: [demo]
    stages:
      - { task: "local:provision", timeout: 2m, retries: 1, backoff: 5 }
chat:
  irc:
    - name: libera
      server: irc.libera.chat
      port: 6697
      tls: true
      sasl: { account: jarvis, password: "${IRC_PASSWORD}" }
      channels: ["#ops"]
roles:
  grants:
    - { console: "*", roles: [admin] }
limits:
  default_timeout: 30m
```

## Variables and secrets

Any scalar may read the environment: `${VAR}` is VAR's value, `${VAR:-default}` is the
default when VAR is unset or empty, `$${` is a literal `${`. This works in every scalar style:
plain, `'single'` and `"double"` quoted, block (`|`, `>`), and inside `{ flow }` mappings and
`[ flow ]` lists. `${…}` in comments is not read. The value is substituted into the parsed
scalar, so a value with YAML syntax in it (`: `, `#`, quotes, newlines) stays one string;
a plain `port: ${PORT}` whose value is a number is read as a number.

`check-config` lists every variable that is not set at once, each with the file, line and
column that needs it, and fails.

Secrets (passwords, tokens) belong in the environment, never in the file; values of type
*secret* below are never printed (`***`) and are masked in everything jarvis says.

## Durations

{DURATIONS}
"##;

/// The `//!` documentation of a source file, as markdown.
fn module_doc(file: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    text.lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            let l = l.trim_start_matches("//!");
            l.strip_prefix(' ').unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn field_key(field: &syn::Field) -> String {
    serde_args(&field.attrs)
        .into_iter()
        .find(|(k, _)| k == "rename")
        .and_then(|(_, v)| v)
        .unwrap_or_else(|| {
            field
                .ident
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_default()
        })
}

fn join(heading: &str, key: &str) -> String {
    if heading.is_empty() {
        key.to_string()
    } else {
        format!("{heading}.{key}")
    }
}

/// The heading of the section a field's type needs, and that type.
fn nested(shape: &Shape, path: &str) -> (String, Option<String>) {
    match shape {
        Shape::Optional(s) => nested(s, path),
        Shape::List(s) => nested(s, &format!("{path}[]")),
        Shape::Map(s) => nested(s, &format!("{path}.NAME")),
        Shape::Named(n) => (path.to_string(), Some(n.clone())),
        _ => (path.to_string(), None),
    }
}

fn heading_title(heading: &str) -> String {
    if heading.is_empty() {
        "Top level".into()
    } else {
        format!("`{heading}`")
    }
}

fn anchor(heading: &str) -> String {
    if heading.is_empty() {
        return "top-level".into();
    }
    heading
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn first_sentence(doc: &str) -> String {
    let line = one_line(doc);
    match line.find(". ") {
        Some(i) => line[..=i].to_string(),
        None => line,
    }
}

/// A type's doc without its ```yaml examples (they are fragments of other sections).
fn strip_yaml_examples(doc: &str) -> String {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            if !in_block && line.trim() == "```yaml" {
                // A fragment of one section, not a whole configuration: the docs test
                // checks only blocks marked plain ```yaml.
                out.push("```yaml fragment");
            } else {
                out.push("```");
            }
            in_block = !in_block;
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

fn readable_default(expr: &str) -> String {
    let expr = expr.trim();
    if let Some(inner) = expr
        .strip_prefix("Duration::from_secs(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let product: Option<u64> = inner
            .split('*')
            .map(|p| p.trim().replace('_', "").parse::<u64>().ok())
            .product();
        if let Some(seconds) = product {
            return match seconds {
                s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
                s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            };
        }
    }
    if let Some(inner) = expr
        .strip_prefix("Duration::from_millis(")
        .and_then(|s| s.strip_suffix(')'))
    {
        return format!("{inner}ms");
    }
    if let Some(inner) = expr.strip_suffix(".into()") {
        return inner.trim_matches('"').to_string();
    }
    if let Some(inner) = expr.strip_suffix(".to_string()") {
        return inner.trim_matches('"').to_string();
    }
    if expr == "Vec::new()" || expr == "vec![]" || expr == "BTreeMap::new()" {
        return String::new();
    }
    if expr == "None" || expr.ends_with("::default()") {
        return String::new();
    }
    // `HttpBase::parse("https://…")…`, `vec![HostPort::named("a")]`: the text written.
    let literals: Vec<&str> = expr.split('"').skip(1).step_by(2).collect();
    if expr.starts_with("vec") && !literals.is_empty() {
        return format!("[{}]", literals.join(", "));
    }
    if expr.contains("::parse(") && literals.len() == 1 {
        return literals[0].to_string();
    }
    let product: Option<u64> = expr
        .split('*')
        .map(|p| p.trim().replace('_', "").parse::<u64>().ok())
        .product();
    if let Some(n) = product {
        return n.to_string();
    }
    if expr.contains('(') || expr.contains('{') {
        return "see description".into();
    }
    expr.to_string()
}

fn empty_default(shape: &Shape) -> String {
    match shape {
        Shape::Scalar("true or false", _) => "false".into(),
        Shape::Scalar("integer", _) => "0".into(),
        _ => String::new(),
    }
}

fn snake(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

fn generate() -> (String, String) {
    let mut generator = Generator {
        source: load(),
        sections: BTreeMap::new(),
        order: Vec::new(),
        definitions: Map::new(),
    };
    generator.visit("Settings", "");
    generator.write()
}

#[test]
fn the_committed_reference_is_generated_from_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (md, json) = generate();
    let md_path = root.join("docs/configuration.md");
    let json_path = root.join("docs/jarvis.schema.json");
    if std::env::var_os("JARVIS_BLESS").is_some() {
        std::fs::write(&md_path, &md).unwrap();
        std::fs::write(&json_path, &json).unwrap();
        return;
    }
    let committed_md = std::fs::read_to_string(&md_path).unwrap_or_default();
    let committed_json = std::fs::read_to_string(&json_path).unwrap_or_default();
    assert!(
        committed_md == md && committed_json == json,
        "docs/configuration.md or docs/jarvis.schema.json is stale: regenerate with\n    {REGENERATE}"
    );
}

#[test]
fn every_configuration_type_has_a_section_and_every_key_a_row() {
    let (md, json) = generate();
    let schema: Value = serde_json::from_str(&json).unwrap();
    let defs = schema["$defs"].as_object().unwrap();
    let mut sections = BTreeSet::new();
    for name in [
        "Settings",
        "WorkersConfig",
        "Limits",
        "PipelineConfig",
        "StageConfig",
        "IrcNetworkConfig",
        "RateConfig",
        "XmppAccountConfig",
        "RolesConfig",
        "Grant",
        "DesignsConfig",
        "LdapConfig",
        "UrlsConfig",
        "GistConfig",
        "HookConfig",
        "TriggerConfig",
        "ScheduleConfig",
        "ActionConfig",
    ] {
        assert!(defs.contains_key(name), "{name} has no schema");
        sections.insert(name);
    }
    for key in [
        "default_timeout",
        "allow_addresses",
        "per_second",
        "irc_hostmask",
        "approval_if",
        "catch_up",
        "max_body",
    ] {
        assert!(md.contains(&format!("| `{key}` |")), "{key} has no row");
    }
}
