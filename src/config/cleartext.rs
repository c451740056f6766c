//! Credentials that would cross a network in clear: every place the configuration sends a
//! password or token (or trusts what a server says about identity) over a connection without
//! TLS to anything but this machine. `Settings::parse` refuses each, one line apiece, unless
//! `insecure_cleartext_credentials: true` turns them into warnings (a lab).
//!
//! Pure: the settings in, `PATH: message` lines out (the path is placed at its line by
//! `locate`). Loopback (`localhost`, 127.0.0.0/8, `::1`) is always allowed: nothing leaves
//! the machine there, and the test servers live there.

use super::{Settings, is_loopback};

/// The fix every message ends with, naming the escape hatch loudly.
const HATCH: &str = "(a lab may set insecure_cleartext_credentials: true)";

/// Every place `settings` would send a credential in clear, as `PATH: message`.
pub fn problems(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(url) = &settings.database_url
        && let Some(problem) = postgres(url.expose())
    {
        out.push(format!("database_url: {problem} {HATCH}"));
    }
    if let Some(ldap) = &settings.designs.ldap {
        let url = ldap.url.url();
        let host = url.host_str().unwrap_or_default();
        if url.scheme() == "ldap" && !ldap.starttls && ldap.password.is_some() && !is_loopback(host)
        {
            out.push(format!(
                "designs.ldap.url: ldap://{} would carry the bind password in clear; use ldaps:// or set starttls: true {HATCH}",
                ldap.url.server()
            ));
        }
    }
    let gist = &settings.designs.gist;
    let api = gist.api.url();
    if gist.token.is_some() && api.scheme() == "http" && !is_loopback(api.host_str().unwrap_or(""))
    {
        out.push(format!(
            "designs.gist.api: http://{} would carry the gist token in clear; use https:// {HATCH}",
            api.host_str().unwrap_or_default()
        ));
    }
    for (module, grant) in &settings.workers.modules {
        let at = |key: &str| format!("workers.modules.{module}.env.{key}");
        let value = |key: &str| grant.env.get(key).map(|v| v.expose().trim().to_string());
        if let Some(text) = value("LDAP_URL")
            && let Some(url) = Url::parse(&text)
            && url.scheme == "ldap"
            && !is_loopback(&url.host)
            && !value("LDAP_STARTTLS")
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1"))
        {
            out.push(format!(
                "{}: ldap://{} without LDAP_STARTTLS: true would carry the bind password and the facts approvals rest on in clear; use ldaps:// or grant LDAP_STARTTLS: 'true' {HATCH}",
                at("LDAP_URL"),
                url.host
            ));
        }
        if let Some(text) = value("LINODE_API")
            && let Some(url) = Url::parse(&text)
            && url.scheme == "http"
            && !is_loopback(&url.host)
        {
            out.push(format!(
                "{}: http://{} would carry the Linode token in clear; use https:// {HATCH}",
                at("LINODE_API"),
                url.host
            ));
        }
        if let Some(text) = value("ALERTMANAGER_URL")
            && let Some(url) = Url::parse(&text)
            && url.scheme == "http"
            && url.userinfo
            && !is_loopback(&url.host)
        {
            out.push(format!(
                "{}: http://…@{} would carry its user and password in clear; use https:// {HATCH}",
                at("ALERTMANAGER_URL"),
                url.host
            ));
        }
    }
    for (i, network) in settings.chat.irc.iter().enumerate() {
        if !network.tls && !is_loopback(&network.server) {
            out.push(format!(
                "chat.irc[{i}].tls: {} is not this machine, and without TLS anyone on the way reads every line and can forge the account tags roles rest on; set tls: true {HATCH}",
                network.server
            ));
        }
    }
    out
}

/// Why a `postgres://` URL would send its password (or the runs) in clear: a host that is
/// not this machine without `sslmode=require` or `verify-ca`/`verify-full`. A Unix socket
/// (no host, or `host=/path`) never leaves the machine.
fn postgres(text: &str) -> Option<String> {
    let url = Url::parse(text)?;
    if !matches!(url.scheme.as_str(), "postgres" | "postgresql") {
        return None;
    }
    let param = |name: &str| {
        url.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
    };
    let host = param("host").unwrap_or_else(|| url.host.clone());
    if host.is_empty() || host.starts_with('/') || is_loopback(&host) {
        return None;
    }
    let mode = param("sslmode")
        .or_else(|| param("ssl-mode"))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if matches!(mode.as_str(), "require" | "verify-ca" | "verify-full") {
        return None;
    }
    Some(format!(
        "{} goes to {host} without TLS (or with TLS that may be skipped); add ?sslmode=verify-full (or require)",
        crate::secrets::redact_url(text)
    ))
}

/// As much of `scheme://[userinfo@]host[:port][/path][?query]` as the checks need; `None`
/// for text that is no such URL (the worker refuses it itself).
#[derive(Debug, PartialEq, Eq)]
struct Url {
    /// Lower-case.
    scheme: String,
    /// Without brackets or port; may be empty (`postgres:///db`).
    host: String,
    /// Whether a `user[:password]@` is given.
    userinfo: bool,
    query: String,
}

impl Url {
    fn parse(text: &str) -> Option<Url> {
        let (scheme, rest) = text.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return None;
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let after = &rest[authority_end..];
        let query = after
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(q))
            .unwrap_or("");
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (true, &authority[at + 1..]),
            None => (false, authority),
        };
        let host = match host_port.strip_prefix('[') {
            Some(inner) => inner.split(']').next().unwrap_or(inner),
            None => host_port.split(':').next().unwrap_or(host_port),
        };
        Some(Url {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_string(),
            userinfo,
            query: query.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn problems_of(text: &str) -> Vec<String> {
        let env = HashMap::from([("PW".to_string(), "hunter22".to_string())]);
        match Settings::parse(
            "t.yaml",
            &format!("insecure_cleartext_credentials: true\n{text}"),
            &env,
        ) {
            Ok(s) => problems(&s),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn urls_are_taken_apart_as_far_as_needed() {
        let u = Url::parse("http://am:pw@alerts.example.com:9093/x?y=1").unwrap();
        assert_eq!(
            (
                u.scheme.as_str(),
                u.host.as_str(),
                u.userinfo,
                u.query.as_str()
            ),
            ("http", "alerts.example.com", true, "y=1")
        );
        let u = Url::parse("LDAP://[::1]:389").unwrap();
        assert_eq!((u.scheme.as_str(), u.host.as_str()), ("ldap", "::1"));
        assert_eq!(Url::parse("postgres:///db").unwrap().host, "");
        assert!(Url::parse("dummy-ldap_url").is_none());
    }

    #[test]
    fn postgres_needs_tls_that_cannot_be_skipped_off_this_machine() {
        assert!(postgres("postgres://j:pw@db.example/j").is_some());
        assert!(postgres("postgres://j:pw@db.example/j?sslmode=prefer").is_some());
        assert!(postgres("postgresql://j@db.example:5432/j?sslmode=disable").is_some());
        assert!(postgres("postgres://j:pw@db.example/j?sslmode=require").is_none());
        assert!(
            postgres("postgres://j:pw@db.example/j?application_name=x&sslmode=verify-full")
                .is_none()
        );
        assert!(postgres("postgres://j:pw@127.0.0.1:5432/j").is_none());
        assert!(postgres("postgres://j:pw@[::1]/j").is_none());
        assert!(postgres("postgres://j@localhost/j").is_none());
        assert!(postgres("postgres:///j?host=/var/run/postgresql").is_none());
        assert!(postgres("postgres://j@/j").is_none());
        assert!(postgres("sqlite:///var/lib/jarvis/jarvis.db").is_none());
        // The message never carries the password.
        let said = postgres("postgres://j:hunter22@db.example/j").unwrap();
        assert!(
            !said.contains("hunter22") && said.contains("db.example"),
            "{said}"
        );
    }

    #[test]
    fn every_cleartext_credential_is_named_with_its_place() {
        let found = problems_of(
            "designs:
  ldap: {url: 'ldap://ldap.example.com', bind_dn: 'cn=j,dc=x', password: '${PW}', base: 'dc=x'}
  gist: {api: 'http://gist.example.com/api', token: '${PW}'}
workers:
  modules:
    ldap: {env: {LDAP_URL: 'ldap://ldap.example.com', LDAP_PASSWORD: '${PW}'}}
    linode: {env: {LINODE_API: 'http://linode.example.com/v4', LINODE_TOKEN: '${PW}'}}
    alertmanager: {env: {ALERTMANAGER_URL: 'http://am:${PW}@alerts.example.com:9093'}}
chat:
  irc:
    - {name: libera, server: irc.libera.chat, port: 6667}
database_url: postgres://j:${PW}@db.example/j
",
        );
        let paths: Vec<&str> = found
            .iter()
            .map(|p| p.split_once(": ").map_or("", |(a, _)| a))
            .collect();
        assert_eq!(
            paths,
            [
                "database_url",
                "designs.ldap.url",
                "designs.gist.api",
                "workers.modules.alertmanager.env.ALERTMANAGER_URL",
                "workers.modules.ldap.env.LDAP_URL",
                "workers.modules.linode.env.LINODE_API",
                "chat.irc[0].tls",
            ]
        );
        for p in &found {
            assert!(!p.contains("hunter22"), "{p}");
            assert!(p.ends_with(HATCH), "{p}");
        }
    }

    #[test]
    fn tls_and_loopback_are_fine() {
        assert_eq!(
            problems_of(
                "designs:
  ldap: {url: 'ldap://ldap.example.com', starttls: true, bind_dn: 'cn=j,dc=x', password: '${PW}', base: 'dc=x'}
  gist: {api: 'http://127.0.0.1:9000', token: '${PW}'}
workers:
  modules:
    ldap: {env: {LDAP_URL: 'ldap://ldap.example.com', LDAP_STARTTLS: 'true', LDAP_PASSWORD: '${PW}'}}
    ldap2: {env: {LDAP_URL: 'ldaps://ldap.example.com'}}
    ldap3: {env: {LDAP_URL: 'ldap://localhost:3389'}}
    linode: {env: {LINODE_API: 'http://[::1]:8000/v4'}}
    alertmanager: {env: {ALERTMANAGER_URL: 'http://alerts.example.com:9093'}}
    am2: {env: {ALERTMANAGER_URL: 'https://am:${PW}@alerts.example.com'}}
chat:
  irc:
    - {name: libera, server: irc.libera.chat, port: 6697, tls: true}
    - {name: local, server: 127.0.0.1}
database_url: postgres://j:${PW}@db.example/j?sslmode=verify-full
"
            ),
            Vec::<String>::new()
        );
        // An LDAP design source without a password sends none.
        assert!(
            problems_of("designs:\n  ldap: {url: 'ldap://ldap.example.com', base: 'dc=x'}\n")
                .is_empty()
        );
    }
}
