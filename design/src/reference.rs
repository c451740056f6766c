//! What a design reference from chat may be (SPEC 3), decided without any I/O.

use crate::config::DesignsConfig;
use crate::dn::Dn;
use crate::error::{DesignError, is_unsafe_char, printable};

/// The longest reference considered at all.
pub const MAX_REFERENCE_CHARS: usize = 2048;

/// The longest bare design name (a file name stem in the designs folder).
pub const MAX_NAME_CHARS: usize = 128;

/// A design reference that passed every check that needs no I/O.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// `https://gist.github.com/ID` or `https://gist.github.com/USER/ID`.
    Gist { id: String, user: Option<String> },
    /// `cn=NAME`: searched under the base with the value escaped; may match nothing.
    LdapName { name: String },
    /// A full DN under the configured base.
    LdapDn { dn: Dn },
    /// An `https://` (or allowed `http://`) URL on an allowed host.
    Url { url: url::Url },
    /// A design file `NAME.yaml` in the designs folder.
    Name { name: String },
}

const EXPECTED: &str =
    "a design reference is a gist URL, cn=NAME, an allowed https:// URL, or a design name";

/// Parses `text` as a design reference under `config`'s rules.
pub fn parse_reference(text: &str, config: &DesignsConfig) -> Result<Reference, DesignError> {
    let text = text.trim_matches(' ');
    let refuse = |why: String| Err(DesignError::Reference(why));
    if text.is_empty() {
        return refuse(format!("no design reference given; {EXPECTED}"));
    }
    if text.chars().any(is_unsafe_char) {
        return refuse(format!(
            "'{}' contains control or invisible characters; {EXPECTED}",
            printable(text)
        ));
    }
    if text.chars().count() > MAX_REFERENCE_CHARS {
        return refuse(format!(
            "the design reference is longer than {MAX_REFERENCE_CHARS} characters"
        ));
    }
    if let Some((scheme, _)) = text.split_once(':')
        && is_scheme(scheme)
        && !looks_like_ldap(text)
    {
        return parse_url(text, config);
    }
    if looks_like_ldap(text) {
        return parse_ldap(text, config);
    }
    parse_name(text, config)
}

/// A URL scheme; one letter is a Windows drive, not a scheme.
fn is_scheme(s: &str) -> bool {
    s.len() > 1
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `attr=…` where attr is an LDAP attribute name, e.g. `cn=loki`, `ou=Hosts,…`.
fn looks_like_ldap(text: &str) -> bool {
    text.split_once('=').is_some_and(|(attr, _)| {
        !attr.is_empty()
            && attr.starts_with(|c: char| c.is_ascii_alphabetic())
            && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn parse_url(text: &str, config: &DesignsConfig) -> Result<Reference, DesignError> {
    let shown = printable(without_query(text));
    let refuse = |why: String| Err(DesignError::Reference(why));
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => return refuse(format!("'{shown}' is not a valid URL ({e})")),
    };
    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https") {
        return refuse(format!(
            "{scheme}: URLs are never design references (local files and other schemes are refused); {EXPECTED}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("a design URL must not carry credentials".into());
    }
    if config.gist.web_hosts.iter().any(|h| h.matches(&url)) {
        return parse_gist(&url, &shown);
    }
    let host = url.host_str().unwrap_or_default();
    let Some(allowed) = config.urls.allow.iter().find(|a| a.host.matches(&url)) else {
        return refuse(format!(
            "{} is not on the allow-list of design hosts (designs.urls.allow)",
            printable(&host_port(&url))
        ));
    };
    if scheme == "http" && !allowed.allow_http {
        return refuse(format!(
            "plain http:// is not allowed for {}; use https://",
            printable(host)
        ));
    }
    Ok(Reference::Url { url })
}

/// A URL as it may be shown: a query can carry a token, so it is cut off.
pub fn without_query(text: &str) -> &str {
    text.split(['?', '#']).next().unwrap_or(text)
}

fn host_port(url: &url::Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    }
}

fn parse_gist(url: &url::Url, shown: &str) -> Result<Reference, DesignError> {
    let usage = || {
        DesignError::Reference(format!(
            "'{shown}' is not a gist reference; use https://{}/ID or https://{}/USER/ID",
            url.host_str().unwrap_or_default(),
            url.host_str().unwrap_or_default()
        ))
    };
    if url.scheme() != "https" {
        return Err(DesignError::Reference(format!(
            "gists are referenced by https:// only, not '{shown}'"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage());
    }
    let mut segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    if segments.last() == Some(&"") {
        segments.pop();
    }
    let (user, id) = match segments.as_slice() {
        [id] => (None, *id),
        [user, id] => (Some(*user), *id),
        _ => return Err(usage()),
    };
    let id_ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit());
    if !id_ok {
        return Err(DesignError::Reference(format!(
            "'{}' is not a gist id (hexadecimal)",
            printable(id)
        )));
    }
    if let Some(user) = user {
        let user_ok = user.len() <= 39
            && !user.starts_with('-')
            && !user.ends_with('-')
            && !user.is_empty()
            && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !user_ok {
            return Err(DesignError::Reference(format!(
                "'{}' is not a GitHub user name",
                printable(user)
            )));
        }
    }
    Ok(Reference::Gist {
        id: id.to_ascii_lowercase(),
        user: user.map(str::to_string),
    })
}

fn parse_ldap(text: &str, config: &DesignsConfig) -> Result<Reference, DesignError> {
    let Some(ldap) = &config.ldap else {
        return Err(DesignError::Reference(format!(
            "'{}' looks like an LDAP name, but no LDAP design source is configured",
            printable(text)
        )));
    };
    let (attr, value) = text.split_once('=').unwrap_or((text, ""));
    if !text.contains(',') {
        if !attr.eq_ignore_ascii_case(&ldap.name_attribute) {
            return Err(DesignError::Reference(format!(
                "'{}' is not an LDAP design reference; use {}=NAME or a full DN under {}",
                printable(text),
                ldap.name_attribute,
                ldap.base
            )));
        }
        // Any text is a name here: it is escaped when searched, so `*)(…` matches nothing.
        if value.is_empty() {
            return Err(DesignError::Reference(format!(
                "{}= needs a name",
                ldap.name_attribute
            )));
        }
        if value.chars().count() > MAX_NAME_CHARS * 2 {
            return Err(DesignError::Reference(format!(
                "the LDAP name is longer than {} characters",
                MAX_NAME_CHARS * 2
            )));
        }
        return Ok(Reference::LdapName {
            name: value.to_string(),
        });
    }
    let dn = Dn::parse(text).map_err(|why| {
        DesignError::Reference(format!("'{}' is not a valid DN: {why}", printable(text)))
    })?;
    if !dn.is_under(&ldap.base) {
        return Err(DesignError::Reference(format!(
            "'{}' is not under the LDAP base {}",
            printable(text),
            ldap.base
        )));
    }
    Ok(Reference::LdapDn { dn })
}

fn parse_name(text: &str, config: &DesignsConfig) -> Result<Reference, DesignError> {
    let shown = printable(text);
    if text.contains(['/', '\\']) || text.starts_with(['.', '~']) || text.contains("..") {
        return Err(DesignError::Reference(format!(
            "'{shown}' looks like a local path; paths are never design references, use a design NAME from the designs folder"
        )));
    }
    if !is_design_name(text) {
        return Err(DesignError::Reference(format!("'{shown}': {EXPECTED}")));
    }
    if config.folder.is_none() {
        return Err(DesignError::Reference(format!(
            "'{shown}' would be a design name, but no designs folder is configured"
        )));
    }
    Ok(Reference::Name {
        name: text.to_string(),
    })
}

/// A safe file stem: letters, digits, `-`, `_` and single inner dots, starting with a letter
/// or digit, at most [`MAX_NAME_CHARS`].
pub fn is_design_name(text: &str) -> bool {
    text.len() <= MAX_NAME_CHARS
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !text.ends_with('.')
        && !text.contains("..")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllowedHost, HostPort, LdapConfig};

    fn config() -> DesignsConfig {
        let mut config = DesignsConfig {
            folder: Some("/srv/designs".into()),
            ..DesignsConfig::default()
        };
        config.urls.allow = vec![
            AllowedHost {
                host: HostPort::parse("designs.example.com").unwrap(),
                allow_http: false,
            },
            AllowedHost {
                host: HostPort::parse("127.0.0.1:8080").unwrap(),
                allow_http: true,
            },
        ];
        config.ldap = Some(
            serde_saphyr::from_str::<LdapConfig>(
                "{url: 'ldap://127.0.0.1', base: 'ou=Hosts,dc=example,dc=com'}",
            )
            .unwrap(),
        );
        config
    }

    fn ok(text: &str) -> Reference {
        parse_reference(text, &config()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn refused(text: &str) -> String {
        match parse_reference(text, &config()) {
            Err(DesignError::Reference(why)) => why,
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn gists_in_both_forms() {
        assert_eq!(
            ok("https://gist.github.com/912450"),
            Reference::Gist {
                id: "912450".into(),
                user: None
            }
        );
        assert_eq!(
            ok("https://gist.github.com/alice/AbC123/"),
            Reference::Gist {
                id: "abc123".into(),
                user: Some("alice".into())
            }
        );
        assert!(refused("http://gist.github.com/912450").contains("https://"));
        assert!(refused("https://gist.github.com/a/b/c").contains("not a gist reference"));
        assert!(refused("https://gist.github.com/xyz").contains("not a gist id"));
        assert!(refused("https://gist.github.com/912450?x=1").contains("not a gist reference"));
        assert!(refused("https://gist.github.com/-bad-/912450").contains("user name"));
    }

    #[test]
    fn ldap_names_and_dns() {
        assert_eq!(
            ok("cn=loki"),
            Reference::LdapName {
                name: "loki".into()
            }
        );
        assert_eq!(
            ok("cn=*)(objectClass=*"),
            Reference::LdapName {
                name: "*)(objectClass=*".into()
            }
        );
        assert!(matches!(
            ok("cn=loki,ou=Hosts,dc=example,dc=com"),
            Reference::LdapDn { .. }
        ));
        assert!(refused("cn=loki,dc=evil,dc=com").contains("not under the LDAP base"));
        assert!(refused("ou=Hosts,dc=example,dc=com").contains("not under the LDAP base"));
        assert!(refused("uid=loki").contains("use cn=NAME"));
        assert!(refused("cn=").contains("needs a name"));
        let no_ldap = DesignsConfig::default();
        assert!(parse_reference("cn=loki", &no_ldap).is_err());
    }

    #[test]
    fn urls_on_the_allow_list_only() {
        assert!(matches!(
            ok("https://designs.example.com/loki.yaml"),
            Reference::Url { .. }
        ));
        assert!(matches!(
            ok("http://127.0.0.1:8080/loki.yaml"),
            Reference::Url { .. }
        ));
        assert!(refused("http://designs.example.com/loki.yaml").contains("plain http://"));
        assert!(refused("https://evil.example.com/loki.yaml").contains("allow-list"));
        assert!(refused("https://127.0.0.1:8081/x").contains("127.0.0.1:8081"));
        assert!(refused("https://u:p@designs.example.com/x").contains("credentials"));
        assert!(refused("file:///etc/passwd").contains("file:"));
        assert!(refused("ftp://designs.example.com/x").contains("ftp:"));
        let why = refused("https://gist.github.com/a/b/c?token=sekrit");
        assert!(!why.contains("sekrit"), "{why}");
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(
            ok("loki"),
            Reference::Name {
                name: "loki".into()
            }
        );
        assert!(matches!(ok("web-01.prod"), Reference::Name { .. }));
        for path in [
            "../x",
            "/etc/passwd",
            "./loki",
            "a/b",
            "~root",
            "a..b",
            "C:\\x",
            ".hidden",
        ] {
            assert!(refused(path).contains("path"), "{path}");
        }
        assert!(refused("loki!").contains("design reference is"));
        assert!(refused("").contains("no design reference"));
    }

    #[test]
    fn control_characters_are_refused_and_never_echoed() {
        for text in [
            "lo\nki",
            "loki\u{7}",
            "cn=lo\rki",
            "https://x\u{1b}[2J",
            "a\u{202e}b",
        ] {
            let why = refused(text);
            assert!(why.contains("control"), "{why}");
            assert!(!why.chars().any(is_unsafe_char), "{why:?}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_and_never_echoes_controls(text in "\\PC*|.*") {
            let mut config = DesignsConfig { folder: Some("/d".into()), ..DesignsConfig::default() };
            config.ldap = serde_saphyr::from_str("{url: 'ldap://h', base: 'dc=x'}").ok();
            match parse_reference(&text, &config) {
                Ok(Reference::Name { name }) => prop_assert!(is_design_name(&name)),
                Ok(_) => {}
                Err(e) => {
                    let line = e.to_string();
                    prop_assert!(!line.chars().any(is_unsafe_char), "{:?}", line);
                    prop_assert!(!line.contains('\n'));
                }
            }
        }

        #[test]
        fn accepted_names_are_never_paths(text in "[a-zA-Z0-9._/\\\\~-]{1,20}") {
            let config = DesignsConfig { folder: Some("/d".into()), ..DesignsConfig::default() };
            if let Ok(Reference::Name { name }) = parse_reference(&text, &config) {
                prop_assert!(!name.contains('/') && !name.contains('\\') && !name.contains(".."));
                prop_assert!(!name.starts_with('.'));
            }
        }

        #[test]
        fn gist_urls_round_trip(id in "[0-9a-f]{1,32}", user in "[a-z][a-z0-9]{0,10}") {
            let config = DesignsConfig::default();
            let plain = parse_reference(&format!("https://gist.github.com/{id}"), &config).unwrap();
            prop_assert_eq!(plain, Reference::Gist { id: id.clone(), user: None });
            let with_user = parse_reference(&format!("https://gist.github.com/{user}/{id}"), &config).unwrap();
            prop_assert_eq!(with_user, Reference::Gist { id, user: Some(user) });
        }
    }
}
