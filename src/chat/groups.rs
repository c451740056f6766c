//! Host groups (`groups:`), which `redeploy group:NAME` rolls over in batches: hosts listed
//! by name, or the designs of the designs folder whose field has a value, or the LDAP
//! entries that match an attribute's value.

use serde::Deserialize;

/// One group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Hosts by name, in the order the rollout takes them.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Every design in the designs folder whose `field` is `value` (by name order), e.g.
    /// `{ field: instance.role, value: web }`.
    #[serde(default)]
    pub designs: Option<FieldMatch>,
    /// Every LDAP design entry whose `attribute` is `value` (escaped into the filter), in
    /// the order of their names, e.g. `{ attribute: businessCategory, value: web }`.
    #[serde(default)]
    pub ldap: Option<LdapMatch>,
    /// How many hosts run at once: a batch. The next batch waits for this one to succeed.
    #[serde(default = "one")]
    pub max_parallel: usize,
    /// The rollout stops (for `resume`) once this many hosts failed.
    #[serde(default = "one")]
    pub max_failures: usize,
}

fn one() -> usize {
    1
}

/// A design field and the value that puts a design in the group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMatch {
    /// A dotted path into the design, e.g. `instance.role`.
    pub field: String,
    /// The value (case-insensitive) it holds, as text or in a list.
    pub value: String,
}

/// An LDAP attribute and the value that puts an entry in the group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapMatch {
    /// The attribute's name, e.g. `businessCategory`.
    pub attribute: String,
    /// The value it holds; escaped before it goes into the search filter.
    pub value: String,
}

impl GroupConfig {
    /// The configuration check: exactly one source, sensible numbers, host names.
    pub fn check(&self, ldap_designs: bool) -> Result<(), String> {
        let sources = usize::from(!self.hosts.is_empty())
            + usize::from(self.designs.is_some())
            + usize::from(self.ldap.is_some());
        if sources != 1 {
            return Err("hosts: give exactly one of hosts, designs or ldap".into());
        }
        if self.max_parallel == 0 {
            return Err("max_parallel: must be at least 1".into());
        }
        if self.max_failures == 0 {
            return Err("max_failures: must be at least 1".into());
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if jarvis_design::check_label(host).is_err() || host.to_ascii_lowercase() != *host {
                return Err(format!(
                    "hosts[{i}]: '{}' is not a host name",
                    host.escape_default()
                ));
            }
        }
        if let Some(m) = &self.designs {
            let ok = m.field.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
            if !ok {
                return Err(format!(
                    "designs.field: '{}' is not a design field path (like instance.role)",
                    m.field.escape_default()
                ));
            }
        }
        if let Some(m) = &self.ldap {
            if !ldap_designs {
                return Err("ldap: designs.ldap is not configured".into());
            }
            let ok = !m.attribute.is_empty()
                && m.attribute
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
            if !ok {
                return Err(format!(
                    "ldap.attribute: '{}' is not an attribute name",
                    m.attribute.escape_default()
                ));
            }
        }
        Ok(())
    }
}

/// Whether a design's `field` (a dotted path) holds `value` (text, or a list holding it).
pub fn design_matches(document: &crate::clipboard::Clipboard, m: &FieldMatch) -> bool {
    let mut parts = m.field.split('.');
    let Some(mut value) = parts.next().and_then(|first| document.get(first)) else {
        return false;
    };
    for part in parts {
        match value.get(part) {
            Some(v) => value = v,
            None => return false,
        }
    }
    match value {
        serde_json::Value::String(s) => s.eq_ignore_ascii_case(&m.value),
        serde_json::Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| s.eq_ignore_ascii_case(&m.value))),
        _ => false,
    }
}
