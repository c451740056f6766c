//! The strict checks of SPEC 3: a design is a YAML mapping with an `instance` mapping whose
//! fields are well-formed, read under budgets that stop alias bombs, deep nesting and
//! oversized documents before they cost anything.

use serde_json::Value;
use serde_saphyr::budget::{Budget, BudgetBreach};
use serde_saphyr::{DuplicateKeyPolicy, Error as YamlError, MergeKeyPolicy, Options};

use crate::config::YamlLimits;
use crate::error::{DesignError, QUOTE_MAX_CHARS, is_unsafe_char, printable, printable_max};
use crate::names::{check_dns_name, check_label};
use crate::{Design, Document};

/// Why a design was refused: the field (`instance.hostname`, or `design` for the document as
/// a whole) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub reason: String,
}

impl Refusal {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn design(reason: impl Into<String>) -> Refusal {
        Refusal::new("design", reason)
    }
}

impl From<Refusal> for DesignError {
    fn from(r: Refusal) -> DesignError {
        // A secret's name followed by ": " reads as `key: value` to every masker on the way
        // to chat, which would hide the first word of the reason; quoted, it reads as a name.
        if r.reason == NOT_SECRETS {
            return DesignError::Invalid(format!("'{}': {}", r.field, r.reason));
        }
        DesignError::Invalid(format!("{}: {}", r.field, r.reason))
    }
}

/// Parses and validates a design document with the default parser budgets.
pub fn parse(reference: &str, text: &str, max_bytes: usize) -> Result<Design, DesignError> {
    parse_with_limits(reference, text, max_bytes, &YamlLimits::default())
}

/// Parses and validates a design document under explicit budgets.
pub fn parse_with_limits(
    reference: &str,
    text: &str,
    max_bytes: usize,
    limits: &YamlLimits,
) -> Result<Design, DesignError> {
    let document = parse_document(text, max_bytes, limits)?;
    Ok(validate_with_limits(reference, document, limits)?)
}

/// [`parse_with_limits`] for bytes from the network or a file, which must be UTF-8.
pub fn parse_bytes(
    reference: &str,
    bytes: &[u8],
    max_bytes: usize,
    limits: &YamlLimits,
) -> Result<Design, DesignError> {
    check_size(bytes.len(), max_bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Refusal::design(format!(
            "is not UTF-8 text (bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    parse_with_limits(reference, text, max_bytes, limits)
}

pub(crate) fn check_size(len: usize, max_bytes: usize) -> Result<(), Refusal> {
    if len > max_bytes {
        return Err(Refusal::design(format!(
            "is {len} bytes, over the limit of {max_bytes} bytes"
        )));
    }
    Ok(())
}

/// The YAML parser's options: every budget on, duplicate keys refused, no YAML 1.1 booleans
/// (`country: NO` stays text), no unknown tags, no snippets of the input in errors.
fn yaml_options(limits: &YamlLimits) -> Options {
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_events = limits.max_nodes.saturating_mul(4);
    budget.max_documents = 1;
    budget.max_merge_keys = limits.max_aliases;
    budget.max_recorded_anchor_events = limits.max_alias_expansion;
    // One above the depth budget, so that the budget (with its clear reason) trips first.
    budget.flow_nesting_limit = limits.max_depth.saturating_add(1);
    budget.alias_anchor_min_aliases = 16;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options.merge_keys = MergeKeyPolicy::Merge;
    options.strict_booleans = true;
    options.reject_unsupported_tags = true;
    options.with_snippet = false;
    options.alias_limits.max_total_replayed_events = limits.max_alias_expansion;
    options.alias_limits.max_replay_stack_depth = limits.max_depth;
    options
}

/// Reads `text` as one YAML mapping under the budgets; refuses anything else.
pub fn parse_document(
    text: &str,
    max_bytes: usize,
    limits: &YamlLimits,
) -> Result<Document, Refusal> {
    check_size(text.len(), max_bytes)?;
    if text.trim().is_empty() {
        return Err(Refusal::design("is empty"));
    }
    let value: Value = serde_saphyr::from_str_with_options(text, yaml_options(limits))
        .map_err(|e| yaml_refusal(&e, limits))?;
    match value {
        Value::Object(document) if document.is_empty() => Err(Refusal::design(
            "is an empty mapping; it needs an 'instance' mapping with hostname and provider",
        )),
        Value::Object(document) => Ok(document),
        Value::Null => Err(Refusal::design(
            "has no content (only comments or a null); it must be a YAML mapping with an 'instance' mapping",
        )),
        other => Err(Refusal::design(format!(
            "must be a YAML mapping with an 'instance' mapping, not {}",
            kind(&other)
        ))),
    }
}

fn yaml_refusal(error: &YamlError, limits: &YamlLimits) -> Refusal {
    let mut error = error;
    // Errors met while replaying an alias come wrapped; the cause is inside.
    while let YamlError::AliasError { error: inner, .. }
    | YamlError::WithSnippet { error: inner, .. } = error
    {
        error = inner;
    }
    tracing::debug!(error = %printable(&error.to_string()), "design YAML refused");
    let at = error
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
        .unwrap_or_default();
    let reason = match error {
        YamlError::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => {
                format!("is nested deeper than {} levels", limits.max_depth)
            }
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
                format!("has more than {} nodes", limits.max_nodes)
            }
            BudgetBreach::Documents { .. } => "holds more than one YAML document".to_string(),
            BudgetBreach::Aliases { .. }
            | BudgetBreach::Anchors { .. }
            | BudgetBreach::AliasAnchorRatio { .. }
            | BudgetBreach::MergeKeys { .. }
            | BudgetBreach::RecordedAnchorEvents { .. }
            | BudgetBreach::RecordedAnchorBytes { .. } => alias_reason(limits),
            _ => "is too large for the parser's budget".to_string(),
        },
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => alias_reason(limits),
        YamlError::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!("has the key '{}' twice", printable(key)),
            None => "has a duplicate key".to_string(),
        },
        YamlError::MultipleDocuments { .. } => "holds more than one YAML document".to_string(),
        YamlError::UnknownAnchor { .. } => "uses an alias (*name) with no anchor".to_string(),
        YamlError::UnsupportedTag { .. } => "uses a YAML tag jarvis does not accept".to_string(),
        other if other.to_string().contains("recursion limit") => {
            format!("is nested deeper than {} levels", limits.max_depth)
        }
        other => format!("is not valid YAML: {}", first_line(&other.to_string())),
    };
    Refusal::design(format!("{reason}{at}"))
}

fn alias_reason(limits: &YamlLimits) -> String {
    format!(
        "anchors and aliases expand past the budget ({} aliases, {} replayed nodes); an alias bomb?",
        limits.max_aliases, limits.max_alias_expansion
    )
}

/// The parser's own message, on one line, without the location it appends (we add ours).
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    let line = line.split(" at line ").next().unwrap_or(line);
    printable(line)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Checks the fields of a parsed document and builds the [`Design`], with no reserved keys
/// besides the built-in ones.
pub fn validate(reference: &str, document: Document) -> Result<Design, Refusal> {
    validate_with_limits(reference, document, &YamlLimits::default())
}

/// [`validate`], refusing also the top-level keys of `limits.reserved_keys`.
pub fn validate_with_limits(
    reference: &str,
    document: Document,
    limits: &YamlLimits,
) -> Result<Design, Refusal> {
    let whole = Value::Object(document.clone());
    check_keys(&whole, "")?;
    check_reserved(&document, &limits.reserved_keys)?;
    check_secrets(&whole, "")?;
    let instance = match document.get("instance") {
        Some(Value::Object(instance)) if instance.is_empty() => {
            return Err(Refusal::new(
                "instance",
                "is an empty mapping; it needs at least hostname and provider",
            ));
        }
        Some(Value::Object(instance)) => instance,
        Some(other) => {
            return Err(Refusal::new(
                "instance",
                format!("must be a mapping, not {}", kind(other)),
            ));
        }
        None => {
            return Err(Refusal::new(
                "instance",
                "is missing; a design needs an 'instance' mapping with hostname and provider",
            ));
        }
    };
    let hostname = required_text(instance, "hostname")?;
    check_label(&hostname).map_err(|why| {
        Refusal::new(
            "instance.hostname",
            format!("'{}' {why}", printable(&hostname)),
        )
    })?;
    let provider = required_text(instance, "provider")?;
    if let Some(fqdn) = optional_text(instance, "fqdn")? {
        check_dns_name(&fqdn).map_err(|why| {
            Refusal::new("instance.fqdn", format!("'{}' {why}", printable(&fqdn)))
        })?;
        let first = fqdn.split('.').next().unwrap_or_default();
        if !first.eq_ignore_ascii_case(&hostname) {
            return Err(Refusal::new(
                "instance.fqdn",
                format!(
                    "'{}' does not start with the hostname '{hostname}'",
                    printable(&fqdn)
                ),
            ));
        }
    }
    for key in ["guestid", "datacenter", "gitosis-admin"] {
        optional_text(instance, key)?;
    }
    check_size_field(instance)?;
    check_ssh_keys(instance)?;
    let pipeline = match document.get("pipeline") {
        None => None,
        Some(Value::String(p)) if is_pipeline_name(p) => Some(p.clone()),
        Some(Value::String(p)) => {
            return Err(Refusal::new(
                "pipeline",
                format!(
                    "'{}' is not a pipeline name (letters, digits, '-', '_', '.')",
                    printable(p)
                ),
            ));
        }
        Some(other) => {
            return Err(Refusal::new(
                "pipeline",
                format!("must be text, not {}", kind(other)),
            ));
        }
    };
    Ok(Design {
        reference: reference.to_string(),
        origin: reference.to_string(),
        hostname,
        provider,
        pipeline,
        document,
    })
}

fn is_pipeline_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Keys are shown in logs and on the clipboard: refuse control characters in any of them.
/// Recursion is bounded by the parser's depth budget.
fn check_keys(value: &Value, path: &str) -> Result<(), Refusal> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if key.is_empty() || key.chars().any(is_unsafe_char) {
                    return Err(Refusal::new(
                        printable(&here),
                        "is not a usable key (empty, or with control characters)",
                    ));
                }
                check_keys(child, &here)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| check_keys(item, path)),
        _ => Ok(()),
    }
}

/// Top-level keys that belong to the workers or to jarvis, never to a design: the pipeline's
/// parameters (`with`), secrets, and the sections the built-in worker modules read.
pub const BUILTIN_RESERVED_KEYS: &[&str] = &[
    "jarvis",
    "with",
    "secrets",
    "ssh",
    "linode",
    "local",
    "ldap",
    "dns",
    "alertmanager",
    "ec2",
];

/// Keys inside `instance` that a design never sets: the addresses the provider's workers
/// write (they choose the SSH target and the DNS records) and the root password.
pub const INSTANCE_RESERVED_KEYS: &[&str] = &["ip", "ipv4", "ipv6", "root_password"];

const NOT_COMMANDS: &str = "a design carries data, never commands or targets; they come from the pipeline's 'with:' in the configuration";
const NOT_SECRETS: &str =
    "a design never carries secrets; secrets come from workers and the configuration";
const NOT_ADDRESSES: &str = "a design carries data, never commands or targets; the host's addresses come from the provider's workers";

/// True for a key that names a secret: `password`, `passwd`, `secret`, `token`,
/// `private_key`, and names ending in `_password`, `_secret`, `_token` or `_private_key`
/// (`-` counts as `_`), in any case. `sshpubkey` and `*_pub` are public keys, not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    matches!(
        key.as_str(),
        "password" | "passwd" | "secret" | "token" | "private_key"
    ) || ["_password", "_passwd", "_secret", "_token", "_private_key"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

/// Refuses the top-level keys of workers and jarvis (built-in or `extra`), and the reserved
/// keys inside `instance`. A reserved section is named by its first key (`ssh.commands`),
/// so the user sees what the design tried to set.
fn check_reserved(document: &Document, extra: &[String]) -> Result<(), Refusal> {
    for (key, value) in document {
        let reserved = BUILTIN_RESERVED_KEYS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(key))
            || extra.iter().any(|r| r.eq_ignore_ascii_case(key));
        if !reserved {
            continue;
        }
        let first = match value {
            Value::Object(section) => section.keys().next(),
            _ => None,
        };
        let path = match first {
            Some(first) => format!("{key}.{first}"),
            None => key.clone(),
        };
        let reason = match key.to_ascii_lowercase().as_str() {
            "jarvis" => "is reserved for jarvis's own run data; a design must not set it",
            "secrets" => NOT_SECRETS,
            _ if first.is_some_and(|k| is_secret_key(k)) => NOT_SECRETS,
            _ => NOT_COMMANDS,
        };
        let field = if key.eq_ignore_ascii_case("jarvis") {
            key
        } else {
            &path
        };
        return Err(Refusal::new(shown_path(field), reason));
    }
    if let Some(Value::Object(instance)) = document.get("instance") {
        for key in instance.keys() {
            let lower = key.to_ascii_lowercase();
            if !INSTANCE_RESERVED_KEYS.contains(&lower.as_str()) {
                continue;
            }
            let reason = if is_secret_key(key) {
                NOT_SECRETS
            } else {
                NOT_ADDRESSES
            };
            return Err(Refusal::new(shown_path(&format!("instance.{key}")), reason));
        }
    }
    Ok(())
}

/// A key path for a reason: escaped, and cut only when far longer than any real one.
fn shown_path(path: &str) -> String {
    printable_max(path, 4 * QUOTE_MAX_CHARS)
}

/// Refuses a key naming a secret anywhere in the design: a secret in a design is a secret in
/// a gist. Items of a list are named `list[0]`. Recursion is bounded by the parser's depth
/// budget.
fn check_secrets(value: &Value, path: &str) -> Result<(), Refusal> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if is_secret_key(key) {
                    return Err(Refusal::new(shown_path(&here), NOT_SECRETS));
                }
                check_secrets(child, &here)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_secrets(item, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

/// The longest value accepted for the plain text fields.
const MAX_TEXT_CHARS: usize = 256;

fn required_text(instance: &Document, key: &str) -> Result<String, Refusal> {
    optional_text(instance, key)?
        .ok_or_else(|| Refusal::new(format!("instance.{key}"), "is missing"))
}

fn optional_text(instance: &Document, key: &str) -> Result<Option<String>, Refusal> {
    let field = || format!("instance.{key}");
    match instance.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => {
            if text.trim().is_empty() {
                Err(Refusal::new(field(), "is empty"))
            } else if text.chars().any(is_unsafe_char) {
                Err(Refusal::new(
                    field(),
                    format!("'{}' contains control characters", printable(text)),
                ))
            } else if text.chars().count() > MAX_TEXT_CHARS {
                Err(Refusal::new(
                    field(),
                    format!("is longer than {MAX_TEXT_CHARS} characters"),
                ))
            } else {
                Ok(Some(text.clone()))
            }
        }
        Some(other) => Err(Refusal::new(
            field(),
            format!("must be text, not {}", kind(other)),
        )),
    }
}

fn check_size_field(instance: &Document) -> Result<(), Refusal> {
    match instance.get("size") {
        None => Ok(()),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => Ok(()),
        Some(other) => Err(Refusal::new(
            "instance.size",
            format!(
                "must be a whole number above 0, not {}",
                match other {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => format!("the text '{}'", printable(s)),
                    other => kind(other).to_string(),
                }
            ),
        )),
    }
}

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// `sshpubkey` is one public key line, or a list of them.
fn check_ssh_keys(instance: &Document) -> Result<(), Refusal> {
    let field = "instance.sshpubkey";
    let keys: Vec<&Value> = match instance.get("sshpubkey") {
        None => return Ok(()),
        Some(Value::Array(items)) if !items.is_empty() => items.iter().collect(),
        Some(other) => vec![other],
    };
    for key in keys {
        let Value::String(line) = key else {
            return Err(Refusal::new(
                field,
                format!(
                    "must be a public key line (or a list of them), not {}",
                    kind(key)
                ),
            ));
        };
        let mut parts = line.split(' ');
        let key_type = parts.next().unwrap_or_default();
        let blob = parts.next().unwrap_or_default();
        if line.chars().any(is_unsafe_char) {
            return Err(Refusal::new(
                field,
                "contains control characters or line breaks",
            ));
        }
        if !SSH_KEY_TYPES.contains(&key_type) {
            return Err(Refusal::new(
                field,
                format!("'{}' is not an SSH public key type", printable(key_type)),
            ));
        }
        let blob_ok = blob.len() >= 16
            && blob
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !blob_ok {
            return Err(Refusal::new(
                field,
                format!("the {key_type} key is not base64 key data"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOKI: &str = "instance:
  hostname: loki
  fqdn: loki.example.com
  provider: Linode
  guestid: Debian 12
  datacenter: Atlanta
  size: 512
  gitosis-admin: git@git.example.com:gitosis-admin.git
  sshpubkey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDyL admin@example.com
";

    fn refusal(text: &str) -> String {
        match parse("test", text, 256 * 1024) {
            Err(DesignError::Invalid(why)) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn the_reference_example_passes() {
        let design = parse("cn=loki", LOKI, 256 * 1024).unwrap();
        assert_eq!(design.hostname, "loki");
        assert_eq!(design.provider, "Linode");
        assert_eq!(design.pipeline, None);
        assert_eq!(design.document["instance"]["size"], 512);
    }

    #[test]
    fn explicit_pipeline() {
        let text = format!("pipeline: linode-fast\n{LOKI}");
        let design = parse("x", &text, 1 << 20).unwrap();
        assert_eq!(design.pipeline.as_deref(), Some("linode-fast"));
    }

    #[test]
    fn no_environment_is_read() {
        let text = format!("{LOKI}home: ${{HOME}}\n");
        let design = parse("x", &text, 1 << 20).unwrap();
        assert_eq!(design.document["home"], "${HOME}");
    }

    #[test]
    fn norway_stays_text() {
        let text = format!("{LOKI}country: NO\n");
        let design = parse("x", &text, 1 << 20).unwrap();
        assert_eq!(design.document["country"], "NO");
    }

    #[test]
    fn reasons_name_the_field() {
        assert!(
            refusal("instance: {provider: Linode}").starts_with("instance.hostname: is missing")
        );
        assert!(
            refusal("instance: {hostname: lo_ki, provider: x}").starts_with("instance.hostname:")
        );
        assert!(
            refusal("instance: {hostname: 7, provider: x}").contains("must be text, not a number")
        );
        assert!(refusal("a: 1\na: 2\n").contains("'a' twice"));
        assert!(refusal("- 1\n").contains("not a list"));
        assert!(refusal("instance: [1]").starts_with("instance: must be a mapping"));
    }

    #[test]
    fn public_keys_and_near_misses_are_data() {
        let text = format!(
            "{LOKI}users:\n  - name: alice\n    sshpubkey: ssh-ed25519 AAAA\n    host_pub: x\n\
             notes: {{tokens: 3, secretary: bob, password_hint: ask bob, passwords_policy: long}}\n\
             app: {{ssh: {{port: 22}}, ip: 192.0.2.1, local: yes}}\n"
        );
        let design = parse("x", &text, 1 << 20).unwrap();
        assert_eq!(design.document["app"]["ssh"]["port"], 22);
    }

    #[test]
    fn configured_worker_modules_are_reserved_too() {
        let text = format!("{LOKI}terraform:\n  plan: destroy\n");
        let limits = YamlLimits {
            reserved_keys: vec!["Terraform".into()],
            ..YamlLimits::default()
        };
        assert!(parse("x", &text, 1 << 20).is_ok());
        let refused = parse_with_limits("x", &text, 1 << 20, &limits).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "terraform.plan: a design carries data, never commands or targets; \
             they come from the pipeline's 'with:' in the configuration"
        );
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let started = std::time::Instant::now();
        let why = refusal(&deep);
        assert!(why.contains("nested deeper"), "{why}");
        assert!(started.elapsed().as_millis() < 500);
    }

    /// Random designs: mappings and lists nested at random, with keys drawn from reserved,
    /// secret-like and ordinary names. A design is accepted exactly when no key is out of
    /// place, and a refusal names one offending key path that is really in the design.
    mod random_designs {
        use std::collections::BTreeSet;

        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::super::*;

        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Class {
            /// Refused as a top-level key (a worker's or jarvis's section).
            TopLevel,
            /// Refused inside `instance`.
            Instance,
            /// Refused anywhere.
            Secret,
            /// Fine anywhere it is generated.
            Ordinary,
        }
        use Class::*;

        const KEYS: &[(&str, Class)] = &[
            ("jarvis", TopLevel),
            ("with", TopLevel),
            ("secrets", TopLevel),
            ("ssh", TopLevel),
            ("SSH", TopLevel),
            ("linode", TopLevel),
            ("local", TopLevel),
            ("ldap", TopLevel),
            ("dns", TopLevel),
            ("alertmanager", TopLevel),
            ("ec2", TopLevel),
            ("terraform", TopLevel),
            ("ip", Instance),
            ("ipv4", Instance),
            ("IPv6", Instance),
            ("root_password", Secret),
            ("password", Secret),
            ("Passwd", Secret),
            ("secret", Secret),
            ("TOKEN", Secret),
            ("private_key", Secret),
            ("db_password", Secret),
            ("client_secret", Secret),
            ("api-token", Secret),
            ("sshpubkeys", Ordinary),
            ("host_pub", Ordinary),
            ("tokens", Ordinary),
            ("secretary", Ordinary),
            ("password_hint", Ordinary),
            ("notes", Ordinary),
            ("owner", Ordinary),
            ("commands", Ordinary),
            ("host", Ordinary),
            ("user", Ordinary),
            ("tags", Ordinary),
        ];

        fn class(key: &str) -> Class {
            KEYS.iter()
                .find(|(k, _)| *k == key)
                .map_or(Ordinary, |(_, c)| *c)
        }

        fn key() -> impl Strategy<Value = String> {
            prop::sample::select(KEYS).prop_map(|(k, _)| k.to_string())
        }

        fn mapping(entries: Vec<(String, Value)>) -> Value {
            Value::Object(entries.into_iter().collect())
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::from("data")),
                any::<u16>().prop_map(Value::from),
                Just(Value::Bool(true)),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec((key(), inner.clone()), 0..4).prop_map(mapping),
                    prop::collection::vec(inner, 0..3).prop_map(Value::Array),
                ]
            })
        }

        fn document() -> impl Strategy<Value = Document> {
            (
                prop::collection::vec((key(), value()), 0..4),
                prop::collection::vec((key(), value()), 0..3),
            )
                .prop_map(|(top, extra)| {
                    let mut instance = Map::new();
                    instance.insert("hostname".into(), "loki".into());
                    instance.insert("provider".into(), "Linode".into());
                    instance.extend(extra);
                    let mut document: Document = top.into_iter().collect();
                    document.insert("instance".into(), Value::Object(instance));
                    document
                })
        }

        /// Every key path in the design, and those that must be refused.
        fn paths(
            value: &Value,
            path: &str,
            inside_reserved: bool,
            present: &mut BTreeSet<String>,
            offending: &mut BTreeSet<String>,
        ) {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        let here = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        let reserved_here = path.is_empty() && class(key) == TopLevel;
                        let bad = inside_reserved
                            || reserved_here
                            || class(key) == Secret
                            || (path == "instance" && class(key) == Instance);
                        present.insert(here.clone());
                        if bad {
                            offending.insert(here.clone());
                        }
                        paths(
                            child,
                            &here,
                            inside_reserved || reserved_here,
                            present,
                            offending,
                        );
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let here = format!("{path}[{i}]");
                        paths(item, &here, inside_reserved, present, offending);
                    }
                }
                _ => {}
            }
        }

        proptest! {
            #[test]
            fn accepted_iff_no_key_is_out_of_place(document in document()) {
                let limits = YamlLimits {
                    reserved_keys: vec!["terraform".into()],
                    ..YamlLimits::default()
                };
                let mut present = BTreeSet::new();
                let mut offending = BTreeSet::new();
                paths(&Value::Object(document.clone()), "", false, &mut present, &mut offending);
                // JSON is YAML: the document goes through the parser as a user's would.
                let text = serde_json::to_string(&document).unwrap();
                let result = parse_document(&text, 1 << 20, &limits)
                    .and_then(|parsed| validate_with_limits("random", parsed, &limits));
                match result {
                    Ok(_) => prop_assert!(offending.is_empty(), "accepted, but {offending:?} in {text}"),
                    Err(refusal) => {
                        prop_assert!(!offending.is_empty(), "refused {refusal:?}: {text}");
                        prop_assert!(
                            offending.contains(&refusal.field),
                            "{refusal:?} names no offending key of {offending:?}"
                        );
                        prop_assert!([NOT_COMMANDS, NOT_SECRETS, NOT_ADDRESSES]
                            .contains(&refusal.reason.as_str())
                            || refusal.reason.starts_with("is reserved for jarvis"));
                        let line = DesignError::from(refusal).to_string();
                        prop_assert!(!line.chars().any(is_unsafe_char), "{line:?}");
                    }
                }
            }
        }
    }
}
