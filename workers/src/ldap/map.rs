//! `LDAP_ATTRIBUTE_MAP`: which clipboard values (or values jarvis computes) each attribute of
//! the host's entry gets.

use std::net::IpAddr;

use ldap3::SearchEntry;
use serde_json::Value;

use super::{env, is_attribute_name, values_of};
use crate::protocol::{self, Failure, Mapping};
use crate::{clock, host_facts};

/// Where each attribute's values come from, in the order the operator wrote them.
pub(super) struct AttributeMap {
    entries: Vec<(String, Source)>,
}

enum Source {
    Path(String),
    Ips,
    Ipv4,
    Ipv6,
    Sshfp,
    RunId,
    Now,
    Deployed,
}

impl AttributeMap {
    pub(super) fn parse(text: &str) -> Result<Self, Failure> {
        let mut entries = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Failure::fatal(format!(
                    "LDAP_ATTRIBUTE_MAP: '{part}' is not ATTRIBUTE=SOURCE"
                ))
            };
            let (attribute, source) = part.split_once('=').ok_or_else(bad)?;
            let (attribute, source) = (attribute.trim(), source.trim());
            if !is_attribute_name(attribute) || attribute.eq_ignore_ascii_case("objectClass") {
                return Err(bad());
            }
            let source = match source {
                "@ips" => Source::Ips,
                "@ipv4" => Source::Ipv4,
                "@ipv6" => Source::Ipv6,
                "@sshfp" => Source::Sshfp,
                "@run_id" => Source::RunId,
                "@now" => Source::Now,
                "@deployed" => Source::Deployed,
                path if !path.is_empty()
                    && path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
                {
                    Source::Path(path.to_string())
                }
                _ => return Err(bad()),
            };
            entries.push((attribute.to_string(), source));
        }
        if entries.is_empty() {
            return Err(Failure::fatal("LDAP_ATTRIBUTE_MAP maps no attribute"));
        }
        Ok(AttributeMap { entries })
    }

    /// The values each mapped attribute should have; attributes whose sources are all absent
    /// from the clipboard are left out (and so left as they are).
    pub(super) fn render(
        &self,
        clipboard: &Mapping,
        existing: Option<&SearchEntry>,
    ) -> Result<Vec<(String, Vec<String>)>, Failure> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (attribute, source) in &self.entries {
            let Some(values) = source.values(clipboard, attribute, existing)? else {
                continue;
            };
            match out
                .iter_mut()
                .find(|(a, _)| a.eq_ignore_ascii_case(attribute))
            {
                Some((_, list)) => list.extend(values),
                None => out.push((attribute.clone(), values)),
            }
        }
        Ok(out)
    }
}

impl Source {
    fn values(
        &self,
        clipboard: &Mapping,
        attribute: &str,
        existing: Option<&SearchEntry>,
    ) -> Result<Option<Vec<String>>, Failure> {
        let addresses = |wanted: fn(&IpAddr) -> bool| -> Result<Option<Vec<String>>, Failure> {
            let found: Vec<String> = host_facts::addresses(clipboard)?
                .iter()
                .filter(|ip| wanted(ip))
                .map(IpAddr::to_string)
                .collect();
            Ok(Some(found).filter(|f| !f.is_empty()))
        };
        match self {
            Source::Path(path) => path_values(clipboard, path),
            Source::Ips => addresses(|_| true),
            Source::Ipv4 => addresses(IpAddr::is_ipv4),
            Source::Ipv6 => addresses(IpAddr::is_ipv6),
            Source::Sshfp => {
                let found: Vec<String> = host_facts::sshfp(clipboard)?
                    .iter()
                    .map(|fp| format!("SSHFP {}", fp.presentation()))
                    .collect();
                Ok(Some(found).filter(|f| !f.is_empty()))
            }
            Source::RunId => Ok(run_id(clipboard).map(|id| vec![id])),
            Source::Now => Ok(Some(vec![generalized_time_now()])),
            Source::Deployed => {
                let id = run_id(clipboard).unwrap_or_else(|| "?".into());
                let prefix = format!("deployed by jarvis run {id} at ");
                let earlier = existing
                    .map(|e| values_of(e, attribute))
                    .unwrap_or_default()
                    .into_iter()
                    .find(|v| v.starts_with(&prefix));
                Ok(Some(vec![earlier.unwrap_or_else(|| {
                    format!("{prefix}{}", generalized_time_now())
                })]))
            }
        }
    }
}

fn path_values(clipboard: &Mapping, path: &str) -> Result<Option<Vec<String>>, Failure> {
    let scalar = |value: &Value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let not_scalar = || {
        Failure::fatal(format!(
            "LDAP_ATTRIBUTE_MAP reads {path}, which is not a text, a list or a mapping of texts"
        ))
    };
    let values: Vec<String> = match protocol::get_path(clipboard, path) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| scalar(v).ok_or_else(not_scalar))
            .collect::<Result<_, _>>()?,
        // `ssh.fingerprints` is such a mapping: `ssh-ed25519 SHA256:…` per key.
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k} {v}")).ok_or_else(not_scalar))
            .collect::<Result<_, _>>()?,
        Some(value) => vec![scalar(value).ok_or_else(not_scalar)?],
    };
    Ok(Some(values).filter(|v| !v.is_empty()))
}

fn run_id(clipboard: &Mapping) -> Option<String> {
    env("JARVIS_RUN_ID").or_else(|| match protocol::get_path(clipboard, "jarvis.run_id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Now as an LDAP GeneralizedTime in UTC, `YYYYMMDDHHMMSSZ`.
fn generalized_time_now() -> String {
    clock::generalized(clock::now_secs())
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_MAP;
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn map_parses_sources_and_rejects_garbage() {
        let map = AttributeMap::parse(DEFAULT_MAP).unwrap();
        assert_eq!(map.entries.len(), 3);
        assert!(AttributeMap::parse("description=a b").is_err());
        assert!(AttributeMap::parse("objectClass=@ips").is_err());
        assert!(AttributeMap::parse("=x").is_err());
        assert!(AttributeMap::parse("sshPublicKey=ssh.host_keys").is_ok());
    }

    #[test]
    fn paths_give_texts_lists_and_mappings() {
        let clip: Mapping = serde_json::from_str(
            r#"{"ssh": {"fingerprints": {"ssh-ed25519": "SHA256:abc"}, "keys": ["k1", "k2"]},
                "instance": {"size": 512, "empty": []}}"#,
        )
        .unwrap();
        let get = |p: &str| path_values(&clip, p).unwrap();
        assert_eq!(
            get("ssh.fingerprints"),
            Some(vec!["ssh-ed25519 SHA256:abc".to_string()])
        );
        assert_eq!(get("ssh.keys").unwrap().len(), 2);
        assert_eq!(get("instance.size"), Some(vec!["512".to_string()]));
        assert_eq!(get("instance.empty"), None);
        assert_eq!(get("instance.missing"), None);
    }

    #[test]
    fn deployed_keeps_the_time_of_the_same_run() {
        let map = AttributeMap::parse("description=@deployed").unwrap();
        let old = SearchEntry {
            dn: "cn=loki,ou=Hosts,dc=example,dc=com".into(),
            attrs: HashMap::from([(
                "description".to_string(),
                vec!["deployed by jarvis run ? at 20240101000000Z".to_string()],
            )]),
            bin_attrs: HashMap::new(),
        };
        let out = map.render(&Mapping::new(), Some(&old)).unwrap();
        assert_eq!(
            out[0].1,
            vec!["deployed by jarvis run ? at 20240101000000Z"]
        );
    }
}
