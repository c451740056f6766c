//! What a clipboard says about a host's record (SPEC 6a), pure: which provider sections a
//! run tracks, which of them name a resource, the host's addresses, and the design content as
//! deployed. The store writes what this finds; the bot puts a record's facts back on the
//! clipboard of the host's next run, so a provider worker finds its resources where they
//! were made whatever the design says now.
//!
//! The worker side (docs/workers.md): a provider stage names what it made in `jarvis.made`
//! (`{what: MODULE, id: …}`) and keeps the resource's facts in a top-level mapping named after
//! its module (`ec2: {id: i-…, region: eu-west-1, …}`). A section with an `id` is a resource;
//! a section without one (after a delete) is none.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::clipboard::{Clipboard, get_path};

/// Where a run's clipboard carries the record it was queued on (`jarvis.record`).
pub const RECORD_KEY: &str = "record";

/// The modules whose sections a run tracks: those named in `jarvis.made` (what the run or
/// its workers made) and those the host's record gave the run at its start.
pub fn tracked_modules(initial: &Clipboard, clipboards: &[&Clipboard]) -> Vec<String> {
    let mut modules: Vec<String> = record_sections(initial);
    for clipboard in clipboards {
        for item in get_path(clipboard, "jarvis.made")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(what) = item.get("what").and_then(Value::as_str)
                && is_module_name(what)
                && !modules.iter().any(|m| m == what)
            {
                modules.push(what.to_string());
            }
        }
    }
    modules
}

/// The section names the record put on a run's initial clipboard (`jarvis.record.sections`).
pub fn record_sections(initial: &Clipboard) -> Vec<String> {
    get_path(initial, "jarvis.record.sections")
        .and_then(Value::as_object)
        .map(|sections| {
            sections
                .keys()
                .filter(|k| is_module_name(k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A module name as a worker folder holds it: a short word, never `jarvis` or `instance`.
fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(name, "jarvis" | "instance")
}

/// A section that names a resource: a mapping with a non-empty `id`.
pub fn is_resource(section: &Value) -> bool {
    match section.get("id") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(_)) => true,
        _ => false,
    }
}

/// How the tracked sections changed from `before` to `after`: `Some(section)` for a module
/// whose resource is now as `after` says, `None` for one whose resource is gone. Empty when
/// nothing a record holds changed.
pub fn section_changes(
    modules: &[String],
    before: &Clipboard,
    after: &Clipboard,
) -> BTreeMap<String, Option<Value>> {
    let mut changes = BTreeMap::new();
    for module in modules {
        let (b, a) = (before.get(module), after.get(module));
        if b == a {
            continue;
        }
        changes.insert(module.clone(), a.filter(|s| is_resource(s)).cloned());
    }
    changes
}

/// The resources a clipboard names among `modules`.
pub fn resources_of(modules: &[String], clipboard: &Clipboard) -> BTreeMap<String, Value> {
    modules
        .iter()
        .filter_map(|m| {
            let section = clipboard.get(m)?;
            is_resource(section).then(|| (m.clone(), section.clone()))
        })
        .collect()
}

/// The addresses a host answers on: `instance.ip` and each resource's `ipv4`,
/// `private_ipv4` and `ipv6`, in that order, without repeats.
pub fn addresses(clipboard: &Clipboard, resources: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str)
            && !s.is_empty()
            && s.len() <= 64
            && !out.iter().any(|o| o == s)
        {
            out.push(s.to_string());
        }
    };
    add(get_path(clipboard, "instance.ip"));
    for section in resources.values() {
        for key in ["ipv4", "private_ipv4", "ipv6"] {
            match section.get(key) {
                Some(Value::Array(items)) => items.iter().for_each(|i| add(Some(i))),
                other => add(other),
            }
        }
    }
    out
}

/// The design content as deployed: a run's initial clipboard without what jarvis added (the
/// `jarvis` mapping and the record's sections).
pub fn design_as_deployed(initial: &Clipboard) -> Clipboard {
    let mut design = initial.clone();
    for module in record_sections(initial) {
        design.remove(&module);
    }
    design.remove("jarvis");
    design
}

/// What a design says of where its host lives: provider and datacenter.
pub fn placement(design: &Clipboard) -> (Option<String>, Option<String>) {
    let text = |path: &str| match get_path(design, path) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    (text("instance.provider"), text("instance.datacenter"))
}

/// The `jarvis.record` mapping a run starts with: the record's environment and its
/// resources' sections (also put on the clipboard at the top level, where the provider's
/// worker reads them).
pub fn record_mapping(
    environment: Option<&str>,
    resources: &BTreeMap<String, Value>,
    reconstructed: bool,
) -> Value {
    let mut map = Map::new();
    if let Some(env) = environment {
        map.insert("environment".into(), Value::String(env.to_string()));
    }
    map.insert(
        "sections".into(),
        Value::Object(
            resources
                .iter()
                .map(|(k, v)| (k.clone(), v.get("id").cloned().unwrap_or(Value::Null)))
                .collect(),
        ),
    );
    if reconstructed {
        map.insert("reconstructed".into(), Value::Bool(true));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clip(v: Value) -> Clipboard {
        match v {
            Value::Object(m) => m,
            _ => Clipboard::new(),
        }
    }

    #[test]
    fn a_provider_stage_changes_its_section_and_a_delete_removes_it() {
        let before = clip(json!({"instance": {"hostname": "h"}}));
        let made = clip(json!({
            "instance": {"hostname": "h", "ip": "192.0.2.7"},
            "ec2": {"id": "i-1", "region": "eu-west-1", "ipv4": "192.0.2.7"},
            "jarvis": {"made": [{"what": "ec2", "id": "i-1"}]},
        }));
        let modules = tracked_modules(&before, &[&before, &made]);
        assert_eq!(modules, vec!["ec2".to_string()]);
        let changes = section_changes(&modules, &before, &made);
        assert_eq!(
            changes["ec2"].as_ref().map(|s| s["region"].clone()),
            Some(json!("eu-west-1"))
        );
        let resources = resources_of(&modules, &made);
        assert_eq!(addresses(&made, &resources), vec!["192.0.2.7".to_string()]);
        let deleted = clip(json!({"ec2": {"region": "eu-west-1"}}));
        let changes = section_changes(&modules, &made, &deleted);
        assert_eq!(changes.get("ec2"), Some(&None));
        // A stage that touches no tracked section changes nothing.
        assert!(section_changes(&modules, &made, &made).is_empty());
    }

    #[test]
    fn the_record_given_to_a_run_is_tracked_and_left_out_of_the_design() {
        let resources: BTreeMap<String, Value> =
            [("linode".to_string(), json!({"id": 7, "region": "us-east"}))].into();
        let mut initial = clip(json!({"instance": {"hostname": "h", "provider": "Linode"}}));
        initial.insert("linode".into(), resources["linode"].clone());
        initial.insert(
            "jarvis".into(),
            json!({"record": record_mapping(Some("production"), &resources, false)}),
        );
        assert_eq!(tracked_modules(&initial, &[]), vec!["linode".to_string()]);
        let design = design_as_deployed(&initial);
        assert_eq!(design.len(), 1);
        assert_eq!(placement(&design).0.as_deref(), Some("Linode"));
    }

    #[test]
    fn names_that_are_not_modules_are_never_tracked() {
        let c = clip(json!({"jarvis": {"made": [
            {"what": "jarvis", "id": "x"}, {"what": "instance", "id": "x"},
            {"what": "a b", "id": "x"}, {"what": "dns", "id": "h.example.com"}
        ]}}));
        assert_eq!(
            tracked_modules(&Clipboard::new(), &[&c]),
            vec!["dns".to_string()]
        );
    }
}
