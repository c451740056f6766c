//! A bound connection to the directory and the few operations `ldap` makes on host entries,
//! with LDAP's result codes turned into one line each.

use std::collections::{BTreeSet, HashSet};

use ldap3::{Ldap, LdapConnAsync, LdapError, LdapResult, Mod, Scope, SearchEntry, ldap_escape};

use super::map::AttributeMap;
use super::{Marker, Settings, values_of};
use crate::host_facts;
use crate::protocol::{self, Failure, Mapping};

/// A bound connection to the directory.
pub(super) struct Directory<'a> {
    ldap: Ldap,
    settings: &'a Settings,
}

impl<'a> Directory<'a> {
    pub(super) async fn open(settings: &'a Settings) -> Result<Directory<'a>, Failure> {
        let url = &settings.url;
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings.connection()?, url)
            .await
            .map_err(|e| connect_failure(url, e))?;
        ldap3::drive!(conn);
        ldap.with_timeout(settings.timeout);
        if let Some((dn, password)) = &settings.bind {
            let result = ldap
                .simple_bind(dn, password)
                .await
                .map_err(|e| connect_failure(url, e))?;
            if result.rc != 0 {
                return Err(result_failure(&format!("bind as {dn} at {url}"), &result));
            }
        }
        Ok(Directory { ldap, settings })
    }

    pub(super) async fn close(&mut self) {
        let _ = self.op().unbind().await;
    }

    /// The connection, with the timeout armed for its next operation (ldap3 arms it per call).
    fn op(&mut self) -> &mut Ldap {
        self.ldap.with_timeout(self.settings.timeout)
    }

    /// The host's entry: the one entry under the hosts folder whose cn is `host`.
    pub(super) async fn find(&mut self, host: &str) -> Result<Option<SearchEntry>, Failure> {
        let filter = format!("(cn={})", ldap_escape(host));
        let hosts = &self.settings.hosts_dn;
        let result = self
            .op()
            .search(hosts, Scope::OneLevel, &filter, vec!["*"])
            .await
            .map_err(|e| self.io_failure(e))?;
        if result.1.rc == 32 {
            return Err(Failure::fatal(format!(
                "the hosts folder {hosts} does not exist in {}",
                self.settings.url
            )));
        }
        if result.1.rc != 0 {
            return Err(result_failure(&format!("search of {hosts}"), &result.1));
        }
        let mut entries: Vec<SearchEntry> =
            result.0.into_iter().map(SearchEntry::construct).collect();
        match entries.len() {
            0 | 1 => Ok(entries.pop()),
            n => Err(Failure::fatal(format!(
                "{n} entries under {hosts} are called {host}; expected one"
            ))),
        }
    }

    pub(super) async fn update(
        &mut self,
        host: &str,
        map: &AttributeMap,
        clipboard: &Mapping,
    ) -> Result<(String, bool, bool), Failure> {
        let existing = self.find(host).await?;
        let mut wanted = map.render(clipboard, existing.as_ref())?;
        let marker = &self.settings.production;
        let production = existing.as_ref().is_some_and(|e| marker.marks(e));
        if production {
            keep_marker(&mut wanted, existing.as_ref(), marker);
        }
        match existing {
            None => self.create(host, &wanted).await.map(|dn| (dn, false, true)),
            Some(entry) => self
                .modify(&entry, &wanted)
                .await
                .map(|()| (entry.dn, production, false)),
        }
    }

    async fn create(
        &mut self,
        host: &str,
        wanted: &[(String, Vec<String>)],
    ) -> Result<String, Failure> {
        let dn = self.settings.host_dn(host);
        let mut attrs: Vec<(String, HashSet<String>)> = vec![
            (
                "objectClass".into(),
                self.settings.object_classes.iter().cloned().collect(),
            ),
            ("cn".into(), HashSet::from([host.to_string()])),
        ];
        for (attribute, values) in wanted {
            if !values.is_empty() && !attribute.eq_ignore_ascii_case("cn") {
                attrs.push((attribute.clone(), values.iter().cloned().collect()));
            }
        }
        let missing_ip = wanted
            .iter()
            .all(|(a, v)| !a.eq_ignore_ascii_case("ipHostNumber") || v.is_empty());
        if missing_ip
            && self
                .settings
                .object_classes
                .iter()
                .any(|c| c.eq_ignore_ascii_case("ipHost"))
        {
            return Err(Failure::fatal(format!(
                "cannot create {dn}: no public IP address for ipHostNumber on the clipboard (looked at {})",
                host_facts::address_sources()
            )));
        }
        let result = self
            .op()
            .add(&dn, attrs)
            .await
            .map_err(|e| self.io_failure(e))?;
        if result.rc != 0 {
            return Err(result_failure(&format!("adding {dn}"), &result));
        }
        protocol::log(&format!("created {dn}"));
        Ok(dn)
    }

    async fn modify(
        &mut self,
        entry: &SearchEntry,
        wanted: &[(String, Vec<String>)],
    ) -> Result<(), Failure> {
        let mut mods: Vec<Mod<String>> = Vec::new();
        let has_classes: Vec<String> = values_of(entry, "objectClass");
        let missing: HashSet<String> = self
            .settings
            .object_classes
            .iter()
            .filter(|c| !has_classes.iter().any(|h| h.eq_ignore_ascii_case(c)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            mods.push(Mod::Add("objectClass".into(), missing));
        }
        for (attribute, values) in wanted {
            let now: BTreeSet<&String> = values.iter().collect();
            let before = values_of(entry, attribute);
            if now != before.iter().collect::<BTreeSet<_>>() {
                protocol::log(&format!("{attribute}: {} value(s) now", values.len()));
                mods.push(Mod::Replace(
                    attribute.clone(),
                    values.iter().cloned().collect(),
                ));
            }
        }
        if mods.is_empty() {
            protocol::log(&format!("{} is already current", entry.dn));
            return Ok(());
        }
        let result = self
            .op()
            .modify(&entry.dn, mods)
            .await
            .map_err(|e| self.io_failure(e))?;
        if result.rc != 0 {
            return Err(result_failure(&format!("modifying {}", entry.dn), &result));
        }
        protocol::log(&format!("modified {}", entry.dn));
        Ok(())
    }

    pub(super) async fn remove(&mut self, host: &str) -> Result<String, Failure> {
        let Some(entry) = self.find(host).await? else {
            let dn = self.settings.host_dn(host);
            protocol::log(&format!("{dn} is already gone"));
            return Ok(dn);
        };
        let result = self
            .op()
            .delete(&entry.dn)
            .await
            .map_err(|e| self.io_failure(e))?;
        match result.rc {
            0 => protocol::log(&format!("deleted {}", entry.dn)),
            32 => protocol::log(&format!("{} is already gone", entry.dn)),
            _ => return Err(result_failure(&format!("deleting {}", entry.dn), &result)),
        }
        Ok(entry.dn)
    }

    fn io_failure(&self, error: LdapError) -> Failure {
        connect_failure(&self.settings.url, error)
    }
}

/// Adds the production marker back to what update_host writes, if the map would drop it.
fn keep_marker(
    wanted: &mut [(String, Vec<String>)],
    existing: Option<&SearchEntry>,
    marker: &Marker,
) {
    let Some(entry) = existing else { return };
    let Some((_, values)) = wanted
        .iter_mut()
        .find(|(a, _)| a.eq_ignore_ascii_case(&marker.attribute))
    else {
        return;
    };
    if !values.iter().any(|v| v.eq_ignore_ascii_case(&marker.value)) {
        let kept = values_of(entry, &marker.attribute)
            .into_iter()
            .find(|v| v.eq_ignore_ascii_case(&marker.value));
        values.extend(kept);
    }
}

fn connect_failure(url: &str, error: LdapError) -> Failure {
    match error {
        LdapError::Timeout { .. } => {
            Failure::retry(format!("no answer from LDAP at {url} in time"))
        }
        LdapError::Io { source } if source.kind() == std::io::ErrorKind::InvalidData => {
            Failure::fatal(format!("TLS with LDAP at {url} failed: {source}"))
        }
        LdapError::Io { source } => Failure::retry(format!("cannot reach LDAP at {url}: {source}")),
        LdapError::LdapResult { result } => result_failure(&format!("talking to {url}"), &result),
        other => Failure::retry(format!("LDAP at {url}: {other}")),
    }
}

/// One line for a non-success LDAP result. The server's own text may help; it never holds
/// our password.
fn result_failure(what: &str, result: &LdapResult) -> Failure {
    let name = match result.rc {
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        19 => "constraintViolation",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        68 => "entryAlreadyExists",
        _ => "error",
    };
    let detail = host_facts::printable(result.text.trim());
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    let text = format!("LDAP {what} failed: {name} (code {}){detail}", result.rc);
    match result.rc {
        51 | 52 => Failure::retry(text),
        _ => Failure::fatal(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn production_marker_survives() {
        let marker = Marker::parse(super::super::DEFAULT_PRODUCTION).unwrap();
        let old = SearchEntry {
            dn: "cn=loki,ou=Hosts,dc=example,dc=com".into(),
            attrs: HashMap::from([(
                "description".to_string(),
                vec!["Production".to_string(), "old text".to_string()],
            )]),
            bin_attrs: HashMap::new(),
        };
        assert!(marker.marks(&old));
        let mut wanted = vec![("description".to_string(), vec!["new".to_string()])];
        keep_marker(&mut wanted, Some(&old), &marker);
        assert_eq!(wanted[0].1, vec!["new", "Production"]);
    }
}
