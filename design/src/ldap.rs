//! Designs from LDAP entries: `cn=NAME` searched under the base with the name escaped (so a
//! filter injection matches nothing), or a full DN read as itself; the entry's attributes
//! become design fields through the configured attribute map.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::{DesignsConfig, FieldSpec, LdapConfig, ValueKind};
use crate::dn::Dn;
use crate::error::{DesignError, printable};
use crate::validate::{Refusal, check_size, validate_with_limits};
use crate::{Design, Document};

/// LDAP result codes that mean something to the user.
const RC_SIZE_LIMIT: u32 = 4;
const RC_NO_SUCH_OBJECT: u32 = 32;
const RC_INVALID_CREDENTIALS: u32 = 49;

/// One bound connection, reused across loads and made again when the server dropped it.
#[derive(Clone, Default)]
pub(crate) struct LdapSource {
    connection: Arc<Mutex<Option<Ldap>>>,
}

impl std::fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LdapSource")
    }
}

/// What to look up.
pub(crate) enum Lookup<'a> {
    Name(&'a str),
    Dn(&'a Dn),
}

impl LdapSource {
    pub(crate) async fn load(
        &self,
        config: &DesignsConfig,
        reference: &str,
        lookup: Lookup<'_>,
    ) -> Result<Design, DesignError> {
        let Some(ldap) = &config.ldap else {
            return Err(DesignError::Reference(
                "no LDAP design source is configured".into(),
            ));
        };
        let entry = match self.find(ldap, &lookup).await {
            // A connection the server closed is found out on use: connect again, once.
            Err(Failure::Connection(e)) => {
                tracing::info!(error = %printable(&e.to_string()), "LDAP connection lost; reconnecting");
                *self.connection.lock().await = None;
                self.find(ldap, &lookup).await
            }
            other => other,
        }
        .map_err(|f| f.into_error(ldap, &lookup))?;
        let document = to_document(&entry, &ldap.attributes)?;
        let size = serde_json::to_vec(&document).map(|v| v.len()).unwrap_or(0);
        check_size(size, config.max_bytes)?;
        let mut design = validate_with_limits(reference, document, &config.limits)
            .map_err(|r| explain(r, ldap, &entry.dn))?;
        design.origin = format!("LDAP entry {}", printable(&entry.dn));
        Ok(design)
    }

    async fn find(&self, config: &LdapConfig, lookup: &Lookup<'_>) -> Result<SearchEntry, Failure> {
        let mut ldap = self.connection(config).await?;
        let attributes: Vec<&str> = config
            .attributes
            .keys()
            .map(String::as_str)
            .filter(|a| !a.eq_ignore_ascii_case("dn"))
            .collect();
        let attributes = if attributes.is_empty() {
            vec!["1.1"]
        } else {
            attributes
        };
        let (base, scope, filter) = match lookup {
            Lookup::Name(name) => (
                config.base.to_string(),
                Scope::Subtree,
                format!(
                    "(&{}({}={}))",
                    config.filter,
                    config.name_attribute,
                    ldap3::ldap_escape(*name)
                ),
            ),
            Lookup::Dn(dn) => (dn.to_string(), Scope::Base, config.filter.clone()),
        };
        tracing::debug!(base = %printable(&base), filter = %printable(&filter), "LDAP design search");
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .with_timeout(config.timeout)
            .search(&base, scope, &filter, attributes)
            .await
            .map_err(Failure::classify)?;
        let ldap3::SearchResult(entries, status) = result;
        match status.rc {
            0 => {}
            RC_SIZE_LIMIT => return Err(Failure::Ambiguous),
            RC_NO_SUCH_OBJECT => return Err(Failure::NoEntry),
            _ => return Err(Failure::Refused(status)),
        }
        let mut entries: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(|e| std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(e))))
            .collect::<Result<_, _>>()
            .map_err(|_| Failure::Garbled)?;
        match entries.len() {
            0 => Err(Failure::NoEntry),
            1 => Ok(entries.remove(0)),
            _ => Err(Failure::Ambiguous),
        }
    }

    /// The names (`name_attribute`) of the design entries whose `attribute` is `value`, sorted:
    /// a host group from LDAP. The value is escaped into the filter (`ldap3::ldap_escape`).
    pub(crate) async fn names_where(
        &self,
        config: &DesignsConfig,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<String>, DesignError> {
        let Some(ldap) = &config.ldap else {
            return Err(DesignError::Reference(
                "no LDAP design source is configured".into(),
            ));
        };
        let ok = !attribute.is_empty()
            && attribute
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
        if !ok {
            return Err(DesignError::Reference(format!(
                "'{}' is not an LDAP attribute name",
                printable(attribute)
            )));
        }
        let filter = format!(
            "(&{}({attribute}={}))",
            ldap.filter,
            ldap3::ldap_escape(value)
        );
        let search = |mut conn: Ldap| {
            let filter = filter.clone();
            async move {
                conn.with_search_options(SearchOptions::new().sizelimit(1000))
                    .with_timeout(ldap.timeout)
                    .search(
                        &ldap.base.to_string(),
                        Scope::Subtree,
                        &filter,
                        vec![ldap.name_attribute.as_str()],
                    )
                    .await
                    .map_err(Failure::classify)
            }
        };
        let failed = |e: String| {
            tracing::warn!(server = %printable(&ldap.url.server()), error = %printable(&e), "LDAP group search failed");
            DesignError::Source(format!(
                "the LDAP search for {attribute}={} failed; see jarvis's log",
                printable(value)
            ))
        };
        let conn = self
            .connection(ldap)
            .await
            .map_err(|_| failed("cannot connect".into()))?;
        let result = match search(conn).await {
            Err(Failure::Connection(_)) => {
                *self.connection.lock().await = None;
                let conn = self
                    .connection(ldap)
                    .await
                    .map_err(|_| failed("cannot connect".into()))?;
                search(conn).await
            }
            other => other,
        }
        .map_err(|_| failed("search failed".into()))?;
        let ldap3::SearchResult(entries, status) = result;
        if status.rc != 0 {
            return Err(failed(format!("result code {}", status.rc)));
        }
        let mut names = Vec::new();
        for e in entries {
            if e.is_ref() || e.is_intermediate() {
                continue;
            }
            let entry = std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(e)))
                .map_err(|_| failed("a garbled entry".into()))?;
            let name = entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&ldap.name_attribute))
                .and_then(|(_, v)| v.first().cloned());
            if let Some(name) = name {
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The cached connection, or a new one, bound as the configured DN.
    async fn connection(&self, config: &LdapConfig) -> Result<Ldap, Failure> {
        let mut cached = self.connection.lock().await;
        if let Some(ldap) = cached.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        let ldap = connect(config).await?;
        *cached = Some(ldap.clone());
        Ok(ldap)
    }
}

async fn connect(config: &LdapConfig) -> Result<Ldap, Failure> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(config.connect_timeout)
        .set_starttls(config.starttls)
        .set_no_tls_verify(config.tls_insecure);
    if let Some(ca_file) = &config.ca_file
        && !config.tls_insecure
    {
        settings = settings.set_config(tls_config(ca_file)?);
    }
    let (connection, mut ldap) = LdapConnAsync::with_settings(settings, config.url.url().as_str())
        .await
        .map_err(Failure::classify_connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.drive().await {
            tracing::warn!(error = %printable(&e.to_string()), "LDAP connection ended");
        }
    });
    if let Some(bind_dn) = &config.bind_dn {
        let password = config.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let status = ldap
            .with_timeout(config.timeout)
            .simple_bind(bind_dn, password)
            .await
            .map_err(Failure::classify_connect)?;
        if status.rc != 0 {
            return Err(Failure::BindRefused(status));
        }
    }
    Ok(ldap)
}

fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let unusable = |why: String| {
        Failure::Setup(format!(
            "the LDAP CA file {} is unusable: {why}",
            printable(&ca_file.display().to_string())
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unusable(e.to_string()))? {
        let cert = cert.map_err(|e| unusable(e.to_string()))?;
        roots.add(cert).map_err(|e| unusable(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unusable("it holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a lookup failed, before it is put into words.
enum Failure {
    /// The connection broke or was closed: worth one reconnect.
    Connection(LdapError),
    /// Connecting, TLS or a timeout.
    Transport(LdapError),
    BindRefused(ldap3::LdapResult),
    Refused(ldap3::LdapResult),
    NoEntry,
    Ambiguous,
    Garbled,
    Setup(String),
}

impl Failure {
    fn classify(e: LdapError) -> Failure {
        match e {
            LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::EndOfStream
            | LdapError::Io { .. } => Failure::Connection(e),
            other => Failure::Transport(other),
        }
    }

    /// While connecting, nothing is worth retrying at once.
    fn classify_connect(e: LdapError) -> Failure {
        Failure::Transport(e)
    }

    fn into_error(self, config: &LdapConfig, lookup: &Lookup<'_>) -> DesignError {
        let server = printable(&config.url.server());
        let scrub = |text: &str| {
            let text = match &config.password {
                Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "***"),
                _ => text.to_string(),
            };
            printable(&text)
        };
        match self {
            Failure::Connection(e) | Failure::Transport(e) => {
                tracing::warn!(server = %server, error = %scrub(&e.to_string()), "LDAP failed");
                match e {
                    LdapError::Timeout { .. } => DesignError::Source(format!(
                        "the LDAP server {server} did not answer within {}s",
                        config.timeout.as_secs_f64()
                    )),
                    LdapError::Rustls { source } => DesignError::Source(format!(
                        "TLS with the LDAP server {server} failed: {}",
                        scrub(&source.to_string())
                    )),
                    // rustls reports a refused handshake as an I/O error around its own.
                    LdapError::Io { source }
                        if source.get_ref().is_some_and(|inner| {
                            inner.downcast_ref::<rustls::Error>().is_some()
                        }) =>
                    {
                        DesignError::Source(format!(
                            "TLS with the LDAP server {server} failed: {}",
                            scrub(&source.to_string())
                        ))
                    }
                    LdapError::Io { .. } => DesignError::Source(format!(
                        "cannot reach the LDAP server {server}: {}",
                        scrub(&e.to_string())
                    )),
                    e => DesignError::Source(format!(
                        "the LDAP server {server} failed: {}",
                        scrub(&e.to_string())
                    )),
                }
            }
            Failure::BindRefused(status) => {
                let who = config.bind_dn.as_deref().unwrap_or("anonymous");
                let why = if status.rc == RC_INVALID_CREDENTIALS {
                    "invalid credentials".to_string()
                } else {
                    format!("result code {}: {}", status.rc, scrub(&status.text))
                };
                DesignError::Source(format!(
                    "the LDAP server {server} refused the bind as {} ({why})",
                    printable(who)
                ))
            }
            Failure::Refused(status) => DesignError::Source(format!(
                "the LDAP server {server} refused the search (result code {}{})",
                status.rc,
                if status.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", scrub(&status.text))
                }
            )),
            Failure::NoEntry => not_found(config, lookup),
            Failure::Ambiguous => ambiguous(config, lookup),
            Failure::Garbled => DesignError::Source(format!(
                "the LDAP server {server} sent an entry jarvis cannot read"
            )),
            Failure::Setup(why) => DesignError::Source(why),
        }
    }
}

/// The entry's mapped attributes as a design document.
fn to_document(
    entry: &SearchEntry,
    map: &BTreeMap<String, FieldSpec>,
) -> Result<Document, DesignError> {
    let mut document = Map::new();
    for (attribute, spec) in map {
        let values: Vec<String> = if attribute.eq_ignore_ascii_case("dn") {
            vec![entry.dn.clone()]
        } else {
            if entry
                .bin_attrs
                .keys()
                .any(|a| a.eq_ignore_ascii_case(attribute))
            {
                return Err(Refusal::new(
                    spec.field.to_string(),
                    format!("LDAP attribute {attribute} is not UTF-8 text"),
                )
                .into());
            }
            match entry
                .attrs
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(attribute))
            {
                Some((_, values)) => values.clone(),
                None => continue,
            }
        };
        let value = convert(attribute, spec, values)?;
        insert(&mut document, spec, value)?;
    }
    Ok(document)
}

fn convert(attribute: &str, spec: &FieldSpec, mut values: Vec<String>) -> Result<Value, Refusal> {
    let field = spec.field.to_string();
    let single = |values: &mut Vec<String>| -> Result<String, Refusal> {
        if values.len() == 1 {
            Ok(values.remove(0))
        } else {
            Err(Refusal::new(
                field.clone(),
                format!(
                    "takes one value, but LDAP attribute {attribute} has {}",
                    values.len()
                ),
            ))
        }
    };
    Ok(match spec.kind {
        ValueKind::Auto if values.len() == 1 => Value::String(values.remove(0)),
        ValueKind::Auto | ValueKind::List => {
            Value::Array(values.into_iter().map(Value::String).collect())
        }
        ValueKind::Text => Value::String(single(&mut values)?),
        ValueKind::Integer => {
            let text = single(&mut values)?;
            let number: i64 = text.trim().parse().map_err(|_| {
                Refusal::new(
                    field.clone(),
                    format!(
                        "LDAP attribute {attribute} is '{}', not a whole number",
                        printable(&text)
                    ),
                )
            })?;
            Value::from(number)
        }
    })
}

fn insert(document: &mut Document, spec: &FieldSpec, value: Value) -> Result<(), Refusal> {
    let clash = || {
        Refusal::new(
            spec.field.to_string(),
            "is the target of two LDAP attributes in designs.ldap.attributes",
        )
    };
    let (last, parents) = spec.field.0.split_last().ok_or_else(clash)?;
    let mut here = document;
    for part in parents {
        here = match here
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(map) => map,
            _ => return Err(clash()),
        };
    }
    if here.insert(last.clone(), value).is_some() {
        return Err(clash());
    }
    Ok(())
}

/// A refused LDAP design says which attribute the field comes from.
fn explain(refusal: Refusal, config: &LdapConfig, dn: &str) -> DesignError {
    let source = config
        .attributes
        .iter()
        .find(|(_, spec)| spec.field.to_string() == refusal.field)
        .map(|(attribute, _)| attribute);
    let reason = match source {
        Some(attribute) => format!(
            "{} (LDAP attribute {attribute} of {})",
            refusal.reason,
            printable(dn)
        ),
        None => format!("{} (in the LDAP entry {})", refusal.reason, printable(dn)),
    };
    Refusal::new(refusal.field, reason).into()
}

fn not_found(config: &LdapConfig, lookup: &Lookup<'_>) -> DesignError {
    match lookup {
        Lookup::Name(name) => DesignError::NotFound(format!(
            "no LDAP entry has {}={} under {} (the name is matched literally)",
            config.name_attribute,
            printable(name),
            config.base
        )),
        Lookup::Dn(dn) => DesignError::NotFound(format!(
            "there is no LDAP design entry {}",
            printable(&dn.to_string())
        )),
    }
}

fn ambiguous(config: &LdapConfig, lookup: &Lookup<'_>) -> DesignError {
    let what = match lookup {
        Lookup::Name(name) => format!("{}={}", config.name_attribute, printable(name)),
        Lookup::Dn(dn) => printable(&dn.to_string()),
    };
    DesignError::Reference(format!(
        "{what} matches more than one LDAP entry under {}; give the full DN",
        config.base
    ))
}
