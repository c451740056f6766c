//! The `designs:` section of jarvis's configuration. Every value is checked while it is
//! deserialized, so that `jarvis check-config` can name the line of a bad DN, URL or host.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::dn::Dn;

/// The `designs:` section of the configuration. Every key is optional:
///
/// ```yaml
/// designs:
///   folder: /etc/jarvis/designs        # deploy NAME reads NAME.yaml here
///   max_bytes: 262144                  # from any source
///   limits: {max_depth: 32, max_nodes: 20000, max_aliases: 100, max_alias_expansion: 10000}
///   gist:
///     api: https://api.github.com      # https://HOST/api/v3 for GitHub Enterprise
///     token: ${GITHUB_TOKEN}
///     web_hosts: [gist.github.com]
///     raw_hosts: [gist.githubusercontent.com]
///     connect_timeout: 5s
///     timeout: 20s
///     max_redirects: 3
///     max_response_bytes: 8388608
///   ldap:                              # absent: cn=NAME is refused
///     url: ldaps://ldap.example.com    # or ldap://… with starttls: true
///     bind_dn: cn=jarvis,dc=example,dc=com
///     password: ${LDAP_PASSWORD}
///     base: ou=Hosts,dc=example,dc=com
///     filter: (objectClass=device)
///     name_attribute: cn
///     ca_file: /etc/ssl/certs/ldap-ca.pem
///     timeout: 10s
///     attributes:
///       cn: {field: instance.hostname, type: text}
///       o: instance.provider
///       serialNumber: {field: instance.size, type: integer}
///       ipHostNumber: {field: instance.ips, type: list}
///   urls:
///     allow:
///       - host: designs.example.com
///       - {host: "127.0.0.1:8080", allow_http: true}
///     allow_addresses: [127.0.0.1]     # loopback, private, link-local: refused unless named
///     timeout: 20s
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignsConfig {
    /// The folder where a bare NAME is found as `NAME.yaml`.
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// The largest design accepted, in bytes, from any source.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Budgets for the YAML parser against alias bombs and deep nesting.
    #[serde(default)]
    pub limits: YamlLimits,
    /// Gists, fetched from the GitHub API.
    #[serde(default)]
    pub gist: GistConfig,
    /// LDAP entries as designs; absent means `cn=NAME` is refused.
    #[serde(default)]
    pub ldap: Option<LdapConfig>,
    /// `https://` URLs on allowed hosts.
    #[serde(default)]
    pub urls: UrlsConfig,
}

impl Default for DesignsConfig {
    fn default() -> Self {
        DesignsConfig {
            folder: None,
            max_bytes: default_max_bytes(),
            limits: YamlLimits::default(),
            gist: GistConfig::default(),
            ldap: None,
            urls: UrlsConfig::default(),
        }
    }
}

fn default_max_bytes() -> usize {
    256 * 1024
}

/// Parser budgets, and the extra keys a design may not set. The budgets' defaults are far
/// above any real design and far below harm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct YamlLimits {
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most nodes (scalars, mappings, sequences), counting those replayed by aliases.
    pub max_nodes: usize,
    /// Most alias uses (`*name`) in the text.
    pub max_aliases: usize,
    /// Most parser events that aliases may replay in total.
    pub max_alias_expansion: usize,
    /// Top-level keys a design may not set, besides those always refused (`jarvis`, `with`,
    /// `secrets` and the built-in worker modules `ssh`, `linode`, `local`, `ldap`, `dns`,
    /// `alertmanager`, `ec2`). The daemon adds the names of the configured worker modules, so
    /// that a design never carries a section a worker would read as instructions. Compared
    /// without regard to case.
    pub reserved_keys: Vec<String>,
}

impl Default for YamlLimits {
    fn default() -> Self {
        YamlLimits {
            max_depth: 32,
            max_nodes: 20_000,
            max_aliases: 100,
            max_alias_expansion: 10_000,
            reserved_keys: Vec::new(),
        }
    }
}

/// Where gists come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GistConfig {
    /// The API base URL; `https://github.example.com/api/v3` for GitHub Enterprise.
    pub api: HttpBase,
    /// A token for the API (raises rate limits, reads secret gists); `${GITHUB_TOKEN}`.
    pub token: Option<Secret>,
    /// The web hosts whose URLs are gist references.
    pub web_hosts: Vec<HostPort>,
    /// Hosts that a truncated file's `raw_url` may point to, besides the API's own host.
    pub raw_hosts: Vec<HostPort>,
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    /// The whole exchange, body included.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    pub max_redirects: usize,
    /// The largest API answer read (it carries every file of the gist, JSON-escaped).
    pub max_response_bytes: usize,
}

impl GistConfig {
    /// The API's host and port, where the token may be sent.
    pub fn api_host(&self) -> HostPort {
        let url = self.api.url();
        HostPort {
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port(),
        }
    }
}

impl Default for GistConfig {
    fn default() -> Self {
        GistConfig {
            api: HttpBase::parse("https://api.github.com").unwrap_or_else(|_| unreachable!()),
            token: None,
            web_hosts: vec![HostPort::named("gist.github.com")],
            raw_hosts: vec![HostPort::named("gist.githubusercontent.com")],
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            max_redirects: 3,
            max_response_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Which `http(s)://` URLs are design references.
///
/// A URL's host must be on `allow`. Its name is then resolved, and jarvis connects only to
/// the addresses it checked: loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12,
/// 192.168/16), shared (100.64.0.0/10), link-local (169.254/16 with the cloud metadata
/// service 169.254.169.254, fe80::/10), unique local (fc00::/7), unspecified, multicast,
/// broadcast, documentation and other reserved addresses, written plainly or IPv4-mapped
/// (::ffff:127.0.0.1), are refused, unless `allow_addresses` names them:
///
/// ```yaml
/// urls:
///   allow: [{host: "127.0.0.1:8080", allow_http: true}, {host: designs.internal}]
///   allow_addresses: [127.0.0.1, 10.0.0.0/8]   # addresses or CIDR ranges
/// ```
///
/// The same holds for every redirect, and for URLs written with a literal address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlsConfig {
    pub allow: Vec<AllowedHost>,
    /// Addresses (`127.0.0.1`, `::1`) or ranges (`10.0.0.0/8`, `fd00::/8`) that allowed hosts
    /// may resolve to even though they are loopback, private, link-local or otherwise not
    /// public. Empty by default: designs come from public addresses only.
    pub allow_addresses: Vec<AddressRange>,
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Redirects followed, each to an allowed host only.
    pub max_redirects: usize,
}

impl Default for UrlsConfig {
    fn default() -> Self {
        UrlsConfig {
            allow: Vec::new(),
            allow_addresses: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            max_redirects: 3,
        }
    }
}

/// An IP address or a CIDR range of them: `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AddressRange {
    /// The first address of the range (host bits cleared).
    pub network: IpAddr,
    /// How many leading bits are fixed: 32 (or 128) for one address.
    pub prefix: u8,
}

impl AddressRange {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`.
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let bad = || format!("'{text}' is not an IP address or a CIDR range like 10.0.0.0/8");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
            None => bits,
        };
        Ok(AddressRange {
            network: mask(address, prefix),
            prefix,
        })
    }

    /// True when `address` is in this range.
    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.prefix) == self.network
    }
}

/// `address` with all but the first `prefix` bits cleared.
fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

impl TryFrom<String> for AddressRange {
    type Error = String;
    fn try_from(text: String) -> Result<AddressRange, String> {
        AddressRange::parse(&text)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.network.is_ipv4() { 32 } else { 128 };
        if self.prefix == bits {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

/// A host whose URLs are design references.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedHost {
    /// `designs.example.com`, or `127.0.0.1:8080` to allow only that port.
    pub host: HostPort,
    /// Whether plain `http://` is accepted for this host (only for loopback stand-ins).
    #[serde(default)]
    pub allow_http: bool,
}

/// LDAP entries as designs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: LdapUrl,
    /// Who jarvis binds as; absent means an anonymous search.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// `${LDAP_PASSWORD}`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Where design entries live, e.g. `ou=Hosts,dc=example,dc=com`.
    pub base: Dn,
    /// Which entries count as designs; combined with the name match.
    #[serde(default = "default_filter", deserialize_with = "deserialize_filter")]
    pub filter: String,
    /// The attribute a bare `cn=NAME` reference matches.
    #[serde(default = "default_name_attribute")]
    pub name_attribute: String,
    /// Upgrade an `ldap://` connection with STARTTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA(s) to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Only for test servers.
    #[serde(default)]
    pub tls_insecure: bool,
    #[serde(
        default = "default_ldap_connect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Each operation (bind, search).
    #[serde(
        default = "default_ldap_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// LDAP attribute → design field, e.g. `cn: instance.hostname`, or
    /// `ipHostNumber: {field: instance.ips, type: list}`. The pseudo-attribute `dn` maps
    /// the entry's DN. Default: `{cn: instance.hostname}`.
    #[serde(default = "default_attribute_map")]
    pub attributes: BTreeMap<String, FieldSpec>,
}

fn default_filter() -> String {
    "(objectClass=*)".into()
}

fn default_name_attribute() -> String {
    "cn".into()
}

fn default_ldap_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_ldap_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_attribute_map() -> BTreeMap<String, FieldSpec> {
    BTreeMap::from([(
        "cn".to_string(),
        FieldSpec {
            field: FieldPath(vec!["instance".into(), "hostname".into()]),
            kind: ValueKind::Text,
        },
    )])
}

fn deserialize_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let filter = String::deserialize(d)?;
    let parenthesized = filter.starts_with('(') && filter.ends_with(')');
    if !parenthesized || ldap3::parse_filter(&filter).is_err() {
        return Err(de::Error::custom(format!(
            "'{filter}' is not an LDAP filter like (objectClass=device)"
        )));
    }
    Ok(filter)
}

/// A secret from the configuration (already expanded from `${VAR}`): never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A host name or address with an optional port, lower-cased: `gist.github.com`,
/// `127.0.0.1:8080`, `[::1]:8080`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort {
    pub host: String,
    /// `None` matches the scheme's default port only.
    pub port: Option<u16>,
}

impl HostPort {
    fn named(host: &str) -> HostPort {
        HostPort {
            host: host.into(),
            port: None,
        }
    }

    /// Parses `host` or `host:port`.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let url = url::Url::parse(&format!("http://{text}/"))
            .map_err(|e| format!("'{text}' is not a host name or host:port ({e})"))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if host.is_empty()
            || url.path() != "/"
            || !url.username().is_empty()
            || url.query().is_some()
        {
            return Err(format!("'{text}' is not a host name or host:port"));
        }
        // The url crate drops a port equal to the scheme default; keep what was written.
        let port = url.port().or_else(|| {
            text.rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .filter(|_| !text.ends_with(']'))
        });
        Ok(HostPort { host, port })
    }

    /// True when `url` is on this host (and port, or the scheme's default port).
    pub fn matches(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        host.eq_ignore_ascii_case(&self.host)
            && match self.port {
                Some(port) => url.port_or_known_default() == Some(port),
                None => url.port().is_none(),
            }
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(text: String) -> Result<HostPort, String> {
        HostPort::parse(&text)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// An `http(s)://` base URL without query or credentials; a trailing `/` is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpBase(url::Url);

impl HttpBase {
    pub fn parse(text: &str) -> Result<HttpBase, String> {
        let url = url::Url::parse(text.trim_end_matches('/'))
            .map_err(|e| format!("'{text}' is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("'{text}' is not an http:// or https:// URL"));
        }
        if url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(format!(
                "'{text}' must be a plain base URL (no credentials, query or fragment)"
            ));
        }
        Ok(HttpBase(url))
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The base with `path` appended, e.g. `gists/ID`.
    pub fn join(&self, path: &str) -> String {
        format!("{}/{path}", self.0.as_str().trim_end_matches('/'))
    }
}

impl TryFrom<String> for HttpBase {
    type Error = String;
    fn try_from(text: String) -> Result<HttpBase, String> {
        HttpBase::parse(&text)
    }
}

/// An `ldap://` or `ldaps://` server URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LdapUrl(url::Url);

impl LdapUrl {
    pub fn parse(text: &str) -> Result<LdapUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("'{text}' is not a URL ({e})"))?;
        if !matches!(url.scheme(), "ldap" | "ldaps") || url.host_str().is_none() {
            return Err(format!("'{text}' is not an ldap:// or ldaps:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("put LDAP credentials in bind_dn and password, not in the URL".into());
        }
        Ok(LdapUrl(url))
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

impl TryFrom<String> for LdapUrl {
    type Error = String;
    fn try_from(text: String) -> Result<LdapUrl, String> {
        LdapUrl::parse(&text)
    }
}

impl TryFrom<String> for Dn {
    type Error = String;
    fn try_from(text: String) -> Result<Dn, String> {
        Dn::parse(&text).map_err(|e| format!("'{text}' is not a DN: {e}"))
    }
}

impl<'de> Deserialize<'de> for Dn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dn, D::Error> {
        Dn::try_from(String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A dotted path to a design field, e.g. `instance.hostname`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FieldPath(pub Vec<String>);

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(text: String) -> Result<FieldPath, String> {
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        let ok_part = |p: &String| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !parts.iter().all(ok_part) {
            return Err(format!(
                "'{text}' is not a design field path (like instance.hostname)"
            ));
        }
        if parts[0] == "jarvis" {
            return Err("the design field 'jarvis' is reserved for jarvis's own run data".into());
        }
        // The same keys a design is refused for (SPEC 3): say so while the configuration
        // is read, not when a design is first loaded.
        let reserved = crate::validate::BUILTIN_RESERVED_KEYS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&parts[0]))
            || (parts[0] == "instance"
                && parts.get(1).is_some_and(|p| {
                    crate::validate::INSTANCE_RESERVED_KEYS
                        .contains(&p.to_ascii_lowercase().as_str())
                }));
        if reserved {
            return Err(format!(
                "'{text}' is reserved for workers; a design carries data, never commands, targets or addresses"
            ));
        }
        if parts.iter().any(|p| crate::validate::is_secret_key(p)) {
            return Err(format!(
                "'{text}' names a secret; a design never carries secrets"
            ));
        }
        Ok(FieldPath(parts))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// How an LDAP attribute's values become a design field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// One value becomes text, several become a list.
    #[default]
    Auto,
    /// Exactly one value, as text.
    Text,
    /// Always a list, even of one value.
    List,
    /// Exactly one value, as an integer.
    Integer,
}

/// Where one LDAP attribute goes in the design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub field: FieldPath,
    pub kind: ValueKind,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldSpec, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a design field path, or {field: PATH, type: auto|text|list|integer}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec {
                    field: FieldPath::try_from(v.to_string()).map_err(E::custom)?,
                    kind: ValueKind::Auto,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldSpec, A::Error> {
                let mut field = None;
                let mut kind = ValueKind::Auto;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "field" => field = Some(map.next_value::<FieldPath>()?),
                        "type" => kind = map.next_value()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["field", "type"]));
                        }
                    }
                }
                let field = field.ok_or_else(|| de::Error::missing_field("field"))?;
                Ok(FieldSpec { field, kind })
            }
        }
        d.deserialize_any(SpecVisitor)
    }
}

/// Durations written as seconds (`10`, `0.5`) or with a unit (`500ms`, `10s`, `2m`).
/// Durations: one syntax for every timeout of the configuration.
#[path = "duration.rs"]
pub mod duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_deserializes() {
        let yaml = r#"
folder: /etc/jarvis/designs
max_bytes: 131072
gist:
  api: https://github.example.com/api/v3/
  token: ghp_secret
  timeout: 15s
ldap:
  url: ldaps://ldap.example.com
  bind_dn: cn=jarvis,dc=example,dc=com
  password: hunter2
  base: ou=Hosts,dc=example,dc=com
  filter: (objectClass=device)
  timeout: 500ms
  attributes:
    cn: instance.hostname
    ipHostNumber: {field: instance.ips, type: list}
    serialNumber: {field: instance.size, type: integer}
urls:
  allow:
    - host: designs.example.com
    - host: 127.0.0.1:8080
      allow_http: true
"#;
        let config: DesignsConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(config.max_bytes, 131072);
        assert_eq!(
            config.gist.api.join("gists/1"),
            "https://github.example.com/api/v3/gists/1"
        );
        assert_eq!(config.gist.timeout, Duration::from_secs(15));
        let ldap = config.ldap.as_ref().unwrap();
        assert_eq!(ldap.timeout, Duration::from_millis(500));
        assert_eq!(ldap.attributes["ipHostNumber"].kind, ValueKind::List);
        assert_eq!(config.urls.allow[1].host.port, Some(8080));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("ghp_secret"));
    }

    /// The example in [`DesignsConfig`]'s documentation is a valid configuration.
    #[test]
    fn the_documented_example_is_valid() {
        let source = include_str!("config.rs");
        let start = source.find("/// ```yaml\n").unwrap() + "/// ```yaml\n".len();
        let length = source[start..].find("/// ```\n").unwrap();
        let yaml: String = source[start..start + length]
            .lines()
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start()
                        .trim_start_matches("///")
                        .get(1..)
                        .unwrap_or("")
                )
            })
            .collect();
        #[derive(Deserialize)]
        struct Outer {
            designs: DesignsConfig,
        }
        let outer: Outer = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(outer.designs.ldap.unwrap().attributes.len(), 4);
        assert_eq!(outer.designs.urls.allow.len(), 2);
    }

    #[test]
    fn bad_values_are_refused() {
        for yaml in [
            "colour: blue",
            "gist: {api: ftp://x}",
            "ldap: {url: http://x, base: dc=x}",
            "ldap: {url: ldap://x, base: nonsense}",
            "ldap: {url: ldap://x, base: dc=x, filter: 'cn=*'}",
            "ldap: {url: ldap://x, base: dc=x, attributes: {cn: 'instance..x'}}",
            "ldap: {url: ldap://x, base: dc=x, attributes: {cn: {field: a, type: float}}}",
            "ldap: {url: ldap://x, base: dc=x, attributes: {dn: ldap.dn}}",
            "ldap: {url: ldap://x, base: dc=x, attributes: {ipHostNumber: instance.ipv4}}",
            "ldap: {url: ldap://x, base: dc=x, attributes: {userPassword: host.root_password}}",
            "urls: {allow_addresses: [localhost]}",
            "urls: {allow: [{host: 'a b'}]}",
            "gist: {timeout: soon}",
        ] {
            assert!(
                serde_saphyr::from_str::<DesignsConfig>(yaml).is_err(),
                "{yaml} was accepted"
            );
        }
    }

    #[test]
    fn address_ranges() {
        let range = |s: &str| AddressRange::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(range("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!range("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(range("10.1.2.3/8").contains(ip("10.9.9.9")));
        assert_eq!(range("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert!(range("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!range("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(range("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!range("0.0.0.0/0").contains(ip("::1")));
        assert!(range("fd00::/8").contains(ip("fd12::1")));
        assert!(range("::1").contains(ip("::1")));
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
        let config: UrlsConfig =
            serde_saphyr::from_str("allow_addresses: [127.0.0.1, 10.0.0.0/8, 'fd00::/8']").unwrap();
        assert_eq!(config.allow_addresses.len(), 3);
        assert!(serde_saphyr::from_str::<UrlsConfig>("allow_addresses: [nowhere]").is_err());
    }

    #[test]
    fn host_port_matching() {
        let any = HostPort::parse("Designs.Example.com").unwrap();
        let port = HostPort::parse("127.0.0.1:8080").unwrap();
        let https = HostPort::parse("example.org:443").unwrap();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(any.matches(&url("https://designs.example.com/x")));
        assert!(!any.matches(&url("https://designs.example.com:8443/x")));
        assert!(port.matches(&url("http://127.0.0.1:8080/x")));
        assert!(!port.matches(&url("http://127.0.0.1:8081/x")));
        assert_eq!(https.port, Some(443));
        assert!(https.matches(&url("https://example.org/x")));
    }
}
