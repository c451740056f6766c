//! Designs (SPEC 3): what a design reference may be, where a design is loaded from (a gist,
//! an LDAP entry, an allowed URL, the designs folder), and the strict checks a document
//! passes before anything is queued. Knows nothing of chat, the store or the engine; whether
//! `provider` names a configured pipeline is the daemon's check.
//!
//! Every refusal is a [`DesignError`] whose text is one line for the user: which field or
//! what, and why. Outside text in it is escaped ([`printable`]); secrets never enter it.

mod address;
mod config;
mod dn;
mod error;
mod folder;
mod gist;
mod http;
mod ldap;
mod names;
mod reference;
mod url_source;
mod validate;

use serde_json::{Map, Value};

pub use config::{
    AddressRange, AllowedHost, DesignsConfig, FieldPath, FieldSpec, GistConfig, HostPort, HttpBase,
    LdapConfig, LdapUrl, Secret, UrlsConfig, ValueKind, YamlLimits, duration,
};
pub use dn::Dn;
pub use error::{DesignError, is_unsafe_char, printable};
pub use names::{check_dns_name, check_label};
pub use reference::{Reference, is_design_name, parse_reference};
pub use validate::{
    BUILTIN_RESERVED_KEYS, INSTANCE_RESERVED_KEYS, Refusal, is_secret_key, parse, parse_bytes,
    parse_document, parse_with_limits, validate, validate_with_limits,
};

/// A design's YAML document, as a mapping with string keys in written order.
pub type Document = Map<String, Value>;

/// A loaded, validated design.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// The reference it was loaded from, as the user wrote it (trimmed).
    pub reference: String,
    /// Where it actually came from, for logs and `plan`: "gist 912450 (loki.yaml)",
    /// "LDAP entry cn=loki,ou=Hosts,dc=example,dc=com", … Printable.
    pub origin: String,
    /// `instance.hostname`, an RFC 1123 label.
    pub hostname: String,
    /// `instance.provider`, which selects the pipeline unless `pipeline` is set.
    pub provider: String,
    /// An explicit top-level `pipeline:` key, which wins over the provider.
    pub pipeline: Option<String>,
    /// The whole document, which becomes the clipboard (plus jarvis's own `jarvis` mapping).
    pub document: Document,
}

/// Where designs come from, built once from the configuration. Cheap to clone; clones share
/// HTTP connection pools and the LDAP connection.
#[derive(Debug, Clone)]
pub struct DesignSources {
    config: std::sync::Arc<DesignsConfig>,
    gist: gist::GistSource,
    urls: url_source::UrlSource,
    ldap: ldap::LdapSource,
}

impl DesignSources {
    /// Sets the sources up. Nothing is contacted yet; problems that only show when a source
    /// is used (a TLS setup failure, an unreachable server) are reported by [`Self::load`].
    pub fn new(config: DesignsConfig) -> Self {
        DesignSources {
            gist: gist::GistSource::new(&config.gist),
            urls: url_source::UrlSource::new(&config.urls),
            ldap: ldap::LdapSource::default(),
            config: std::sync::Arc::new(config),
        }
    }

    /// The configuration these sources were built from.
    pub fn config(&self) -> &DesignsConfig {
        &self.config
    }

    /// Checks `reference` without loading anything.
    pub fn parse_reference(&self, reference: &str) -> Result<Reference, DesignError> {
        parse_reference(reference, &self.config)
    }

    /// Loads and validates the design named by `reference`.
    pub async fn load(&self, reference: &str) -> Result<Design, DesignError> {
        let shown = printable(reference::without_query(reference));
        let result = self.load_parsed(reference).await;
        match &result {
            Ok(design) => {
                tracing::info!(reference = %shown, origin = %design.origin, host = %design.hostname, "design loaded")
            }
            Err(e) => tracing::info!(reference = %shown, error = %e, "design refused"),
        }
        result
    }

    /// The names of the designs in the designs folder (`NAME.yaml`), sorted.
    pub async fn folder_names(&self) -> Result<Vec<String>, DesignError> {
        folder::names(&self.config).await
    }

    /// The names of the LDAP design entries whose `attribute` is `value`, sorted.
    pub async fn ldap_names_where(
        &self,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<String>, DesignError> {
        self.ldap.names_where(&self.config, attribute, value).await
    }

    async fn load_parsed(&self, reference: &str) -> Result<Design, DesignError> {
        let config = &self.config;
        let trimmed = reference.trim_matches(' ');
        let mut design = match parse_reference(trimmed, config)? {
            Reference::Gist { id, .. } => self.gist.load(config, trimmed, &id).await?,
            Reference::LdapName { name } => {
                let lookup = ldap::Lookup::Name(&name);
                self.ldap.load(config, trimmed, lookup).await?
            }
            Reference::LdapDn { dn } => {
                let lookup = ldap::Lookup::Dn(&dn);
                self.ldap.load(config, trimmed, lookup).await?
            }
            Reference::Url { url } => self.urls.load(config, trimmed, &url).await?,
            Reference::Name { name } => folder::load(config, trimmed, &name).await?,
        };
        design.reference = trimmed.to_string();
        Ok(design)
    }
}
