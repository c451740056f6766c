//! `ldap`: the host's entry under `ou=Hosts` in the directory.
//!
//! Tasks:
//! - `update_host`: creates or modifies `cn=HOST,ou=Hosts,BASE` (HOST is `instance.hostname`)
//!   with the object classes and the attribute map below. Each mapped attribute gets exactly
//!   the values the map yields; a source absent from the clipboard leaves its attribute as it
//!   is. The production marker (see `lookup`) is never removed: a redeploy must not take a
//!   host out of production. Running it again changes nothing; the deploy time in
//!   `@deployed` is the time this run first wrote the entry.
//! - `remove_host`: deletes the entry; an entry that is already gone is success.
//! - `lookup`: reads the entry and writes `ldap.exists`, `ldap.production` (true when the
//!   entry has the production marker) and `ldap.dn`, so a later stage can ask for approval.
//!
//! All three write `ldap.dn`; `lookup` and `remove_host` write `ldap.exists`; `lookup` and
//! `update_host` write `ldap.production`.
//!
//! Environment (granted to the module):
//! - `LDAP_URL` (`ldap://` or `ldaps://`), `LDAP_BASE`: required.
//! - `LDAP_BIND_DN`, `LDAP_PASSWORD`: the identity to bind as (anonymous when absent).
//! - `LDAP_STARTTLS` (`true`/`false`), `LDAP_CA_FILE` (PEM certificates to trust instead of
//!   the system's), `LDAP_TIMEOUT` (seconds, default 10).
//! - `LDAP_HOSTS_DN`: the folder of host entries, default `ou=Hosts,LDAP_BASE`.
//! - `LDAP_OBJECT_CLASSES`: default `device,ipHost`.
//! - `LDAP_PRODUCTION`: the marker `ATTRIBUTE=VALUE`, default `description=production`
//!   (the value compares without regard to case).
//! - `LDAP_ATTRIBUTE_MAP`: `ATTRIBUTE=SOURCE,…`, replacing the default map
//!   `ipHostNumber=@ips,description=@deployed,description=@sshfp`. An attribute may appear
//!   more than once; its values add up. A SOURCE is either a clipboard path — a text, a
//!   number, a list of them, or a mapping whose entries each give `KEY VALUE` (as
//!   `ssh.fingerprints` gives `ssh-ed25519 SHA256:…`) — or one of:
//!   - `@ips`, `@ipv4`, `@ipv6`: the public addresses, read as `crate::host_facts` describes;
//!   - `@sshfp`: `SSHFP 4 2 HEX` per host key the engine pinned (`jarvis.host_keys`);
//!   - `@run_id`: `JARVIS_RUN_ID`;
//!   - `@now`: the time now as an LDAP GeneralizedTime (it changes each time the task runs);
//!   - `@deployed`: `deployed by jarvis run ID at TIME`, stable within a run.
//!
//!   With the openssh-lpk schema, the object class `ldapPublicKey` and `sshPublicKey=PATH`
//!   store host keys that an earlier stage put at PATH.
//!
//! Every value that reaches a DN goes through `dn_escape`, every value in a filter through
//! `ldap_escape`; the host name must be an RFC 1123 label besides.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnSettings, SearchEntry, dn_escape};
use serde_json::json;

use crate::host_facts;
use crate::protocol::{self, Failure, Mapping, TaskResult};
use directory::Directory;
use map::AttributeMap;

mod directory;
mod map;

const TASKS: &[&str] = &["update_host", "remove_host", "lookup"];

const DEFAULT_MAP: &str = "ipHostNumber=@ips,description=@deployed,description=@sshfp";
const DEFAULT_OBJECT_CLASSES: &str = "device,ipHost";
const DEFAULT_PRODUCTION: &str = "description=production";

pub fn run(task: &str) -> ExitCode {
    match task {
        "update_host" => protocol::run_task(update_host),
        "remove_host" => protocol::run_task(remove_host),
        "lookup" => protocol::run_task(lookup),
        other => crate::unknown_task("ldap", other, TASKS),
    }
}

fn lookup(mut clipboard: Mapping) -> TaskResult {
    let host = host_facts::hostname(&clipboard)?;
    let settings = Settings::from_env()?;
    protocol::progress(&format!("looking up {host} in {}", settings.url));
    let entry = protocol::block_on(async {
        let mut directory = Directory::open(&settings).await?;
        let entry = directory.find(&host).await;
        directory.close().await;
        entry
    })??;
    let production = entry.as_ref().is_some_and(|e| settings.production.marks(e));
    let dn = entry
        .as_ref()
        .map_or_else(|| settings.host_dn(&host), |e| e.dn.clone());
    protocol::log(&format!(
        "{dn}: {}",
        match (&entry, production) {
            (None, _) => "no such entry",
            (Some(_), true) => "in production",
            (Some(_), false) => "not in production",
        }
    ));
    let section = protocol::section(&mut clipboard, "ldap");
    section.insert("dn".into(), json!(dn));
    section.insert("exists".into(), json!(entry.is_some()));
    section.insert("production".into(), json!(production));
    Ok(Some(clipboard))
}

fn update_host(mut clipboard: Mapping) -> TaskResult {
    let host = host_facts::hostname(&clipboard)?;
    let settings = Settings::from_env()?;
    let map = AttributeMap::parse(&settings.attribute_map)?;
    protocol::progress(&format!("updating {host} in {}", settings.url));
    let (dn, production, created) = protocol::block_on(async {
        let mut directory = Directory::open(&settings).await?;
        let outcome = directory.update(&host, &map, &clipboard).await;
        directory.close().await;
        outcome
    })??;
    let section = protocol::section(&mut clipboard, "ldap");
    section.insert("dn".into(), json!(dn));
    section.insert("production".into(), json!(production));
    // Only an entry this run created is this run's to remove; a changed one stays.
    if created {
        protocol::record_made(&mut clipboard, "ldap", &dn);
    }
    Ok(Some(clipboard))
}

fn remove_host(mut clipboard: Mapping) -> TaskResult {
    let host = host_facts::hostname(&clipboard)?;
    if protocol::undoing() && protocol::made_ids(&clipboard, "ldap").is_empty() {
        protocol::notice(&format!(
            "this run created no LDAP entry for {host}: nothing to undo, the entry is left alone"
        ));
        return Ok(Some(clipboard));
    }
    let settings = Settings::from_env()?;
    protocol::progress(&format!("removing {host} from {}", settings.url));
    let dn = protocol::block_on(async {
        let mut directory = Directory::open(&settings).await?;
        let outcome = directory.remove(&host).await;
        directory.close().await;
        outcome
    })??;
    let section = protocol::section(&mut clipboard, "ldap");
    section.insert("dn".into(), json!(dn));
    section.insert("exists".into(), json!(false));
    Ok(Some(clipboard))
}

/// What the module was granted.
struct Settings {
    url: String,
    bind: Option<(String, String)>,
    hosts_dn: String,
    starttls: bool,
    ca_file: Option<String>,
    timeout: Duration,
    object_classes: Vec<String>,
    production: Marker,
    attribute_map: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(name: &str) -> Result<String, Failure> {
    env(name).ok_or_else(|| Failure::fatal(format!("{name} is not granted to the ldap module")))
}

impl Settings {
    fn from_env() -> Result<Self, Failure> {
        let url = required("LDAP_URL")?;
        let base = required("LDAP_BASE")?;
        let bind = match (env("LDAP_BIND_DN"), std::env::var("LDAP_PASSWORD").ok()) {
            (Some(dn), Some(password)) => Some((dn, password)),
            (Some(dn), None) => {
                return Err(Failure::fatal(format!(
                    "LDAP_BIND_DN {dn} is granted without LDAP_PASSWORD"
                )));
            }
            (None, _) => None,
        };
        let starttls = match env("LDAP_STARTTLS")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false" | "no" | "0") => false,
            Some("true" | "yes" | "1") => true,
            Some(other) => {
                return Err(Failure::fatal(format!(
                    "LDAP_STARTTLS must be true or false, not '{other}'"
                )));
            }
        };
        let timeout = match env("LDAP_TIMEOUT") {
            None => Duration::from_secs(10),
            Some(text) => Duration::from_secs(text.parse::<u64>().map_err(|_| {
                Failure::fatal(format!("LDAP_TIMEOUT must be whole seconds, not '{text}'"))
            })?),
        };
        let object_classes = env("LDAP_OBJECT_CLASSES")
            .unwrap_or_else(|| DEFAULT_OBJECT_CLASSES.to_string())
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        Ok(Settings {
            url,
            bind,
            hosts_dn: env("LDAP_HOSTS_DN").unwrap_or_else(|| format!("ou=Hosts,{base}")),
            starttls,
            ca_file: env("LDAP_CA_FILE"),
            timeout,
            object_classes,
            production: Marker::parse(
                &env("LDAP_PRODUCTION").unwrap_or_else(|| DEFAULT_PRODUCTION.to_string()),
            )?,
            attribute_map: env("LDAP_ATTRIBUTE_MAP").unwrap_or_else(|| DEFAULT_MAP.to_string()),
        })
    }

    fn host_dn(&self, host: &str) -> String {
        format!("cn={},{}", dn_escape(host), self.hosts_dn)
    }

    fn connection(&self) -> Result<LdapConnSettings, Failure> {
        let mut conn = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls);
        if let Some(path) = &self.ca_file {
            conn = conn.set_config(tls_config(path)?);
        }
        Ok(conn)
    }
}

fn tls_config(path: &str) -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Failure::fatal(format!("cannot read LDAP_CA_FILE {path}: {e}")))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| Failure::fatal(format!("LDAP_CA_FILE {path} is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Failure::fatal(format!("LDAP_CA_FILE {path}: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::fatal(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The attribute and value that mark a host as in production.
struct Marker {
    attribute: String,
    value: String,
}

impl Marker {
    fn parse(text: &str) -> Result<Self, Failure> {
        match text.split_once('=') {
            Some((attribute, value)) if is_attribute_name(attribute.trim()) => Ok(Marker {
                attribute: attribute.trim().to_string(),
                value: value.trim().to_string(),
            }),
            _ => Err(Failure::fatal(format!(
                "LDAP_PRODUCTION must be ATTRIBUTE=VALUE, not '{text}'"
            ))),
        }
    }

    fn marks(&self, entry: &SearchEntry) -> bool {
        values_of(entry, &self.attribute)
            .iter()
            .any(|v| v.eq_ignore_ascii_case(&self.value))
    }
}

fn is_attribute_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The values of `attribute` in `entry`, whatever case the server spelled its name in.
fn values_of(entry: &SearchEntry, attribute: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .flat_map(|(_, values)| values.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use ldap3::ldap_escape;

    use super::*;

    #[test]
    fn hostile_names_are_escaped_in_dns_and_filters() {
        assert_eq!(dn_escape("a,ou=x"), "a\\2cou\\3dx");
        assert_eq!(
            ldap_escape("loki)(objectClass=*"),
            "loki\\29\\28objectClass=\\2a"
        );
    }
}
