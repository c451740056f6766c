//! `jarvis check-config --connect`: every server a configuration names, and whether a TCP
//! connection to it opens. Nothing is sent: no TLS handshake, no login, no credentials. What
//! is shown of a target never carries a password or a URL's user.
//!
//! [`targets`] is pure (what to try, read from the settings); [`reach_all`] tries them all
//! at once, each within its own time limit.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::Settings;
use crate::config::xmpp::Tls;

/// How long one target may take, name resolution included.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The default `LINODE_API` of the `linode` worker.
const LINODE_DEFAULT_API: &str = "https://api.linode.com/v4";

/// Worker environment variables that name an endpoint, and how each is written.
const WORKER_ENDPOINTS: &[(&str, Kind)] = &[
    ("DNS_SERVER", Kind::HostPort(53)),
    ("LDAP_URL", Kind::Url),
    ("LINODE_API", Kind::Url),
    ("EC2_ENDPOINT", Kind::Url),
    ("ALERTMANAGER_URL", Kind::Url),
];

#[derive(Clone, Copy)]
enum Kind {
    /// `ADDRESS[:PORT]`, with this default port.
    HostPort(u16),
    /// `scheme://[user[:password]@]host[:port][/…]`.
    Url,
}

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What it is: `irc libera`, `ldap designs`, `dns worker`, `gist API`.
    pub what: String,
    /// Where, fit to show: `irc.libera.chat:6697, TLS`, `DNS_SERVER 127.0.0.1:53`.
    pub shown: String,
    /// The host and port connected to, or why the configuration gives none that can be tried.
    pub endpoint: Result<(String, u16), String>,
}

impl Target {
    /// `what (shown): ok` or `what (shown): why not`.
    pub fn line(&self, outcome: &Result<(), String>) -> String {
        let said = match outcome {
            Ok(()) => "ok",
            Err(why) => why,
        };
        format!("{} ({}): {said}", self.what, self.shown)
    }
}

/// Every target `settings` names, in the order of the file's sections: chat servers, the
/// LDAP design source, the gist API, then the endpoints granted to worker modules.
pub fn targets(settings: &Settings) -> Vec<Target> {
    let mut out = Vec::new();
    for network in &settings.chat.irc {
        let tls = if network.tls { ", TLS" } else { "" };
        out.push(Target {
            what: format!("irc {}", network.name),
            shown: format!("{}{tls}", join_host_port(&network.server, network.port)),
            endpoint: Ok((unbracket(&network.server).to_string(), network.port)),
        });
    }
    for account in &settings.chat.xmpp {
        let host = match &account.server {
            Some(server) => server.clone(),
            None => jid_domain(&account.jid).to_string(),
        };
        let plain = if account.tls == Tls::Plain {
            ", no TLS"
        } else {
            ""
        };
        out.push(Target {
            what: format!("xmpp {}", account.name),
            shown: format!("{}{plain}", join_host_port(&host, account.port)),
            endpoint: Ok((unbracket(&host).to_string(), account.port)),
        });
    }
    if let Some(ldap) = &settings.designs.ldap {
        out.push(url_target(
            "ldap designs".into(),
            None,
            ldap.url.url().as_str(),
        ));
    }
    out.push(url_target(
        "gist API".into(),
        None,
        settings.designs.gist.api.url().as_str(),
    ));
    for (module, grant) in &settings.workers.modules {
        for (key, kind) in WORKER_ENDPOINTS {
            let Some(value) = grant.env.get(*key) else {
                continue;
            };
            let what = format!("{module} worker");
            out.push(match kind {
                Kind::HostPort(port) => host_port_target(what, key, value.expose(), *port),
                Kind::Url => url_target(what, Some(key), value.expose()),
            });
        }
        if module == "linode" && !grant.env.contains_key("LINODE_API") {
            out.push(url_target(
                "linode worker".into(),
                Some("LINODE_API"),
                LINODE_DEFAULT_API,
            ));
        }
    }
    out
}

/// Tries every target at once; the outcomes are in the order of `targets`.
pub async fn reach_all(targets: &[Target], timeout: Duration) -> Vec<Result<(), String>> {
    futures_util::future::join_all(targets.iter().map(|t| reach(t, timeout))).await
}

/// Opens (and closes) a TCP connection to `target` within `timeout`: `Ok`, or why not.
pub async fn reach(target: &Target, timeout: Duration) -> Result<(), String> {
    let (host, port) = target
        .endpoint
        .as_ref()
        .map_err(|why| format!("cannot try: {why}"))?;
    match tokio::time::timeout(timeout, connect(host, *port)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn connect(host: &str, port: u16) -> Result<(), String> {
    let addresses = resolve(host, port).await?;
    let mut last = None;
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(format!("cannot connect: {}", io_reason(&e))),
        None => Err(format!("cannot resolve {host}: it has no address")),
    }
}

/// Name resolution on a thread of its own, which is left behind if the time runs out (the
/// system resolver cannot be cancelled, and the runtime would wait for a blocking task).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })
        .map_err(|e| format!("cannot start resolving {host}: {e}"))?;
    match rx.await {
        Ok(Ok(addresses)) => Ok(addresses),
        Ok(Err(e)) => {
            let text = e.to_string();
            let reason = text
                .strip_prefix("failed to lookup address information: ")
                .unwrap_or(&text);
            Err(format!("cannot resolve {host}: {reason}"))
        }
        Err(_) => Err(format!("cannot resolve {host}")),
    }
}

/// The common connection errors in a few plain words; others as the system says them.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "address not available".into(),
        PermissionDenied => "not permitted".into(),
        _ => e.to_string(),
    }
}

fn host_port_target(what: String, key: &str, text: &str, default_port: u16) -> Target {
    let endpoint = parse_host_port(text.trim(), default_port);
    let shown = match &endpoint {
        Ok((host, port)) => format!("{key} {}", join_host_port(host, *port)),
        Err(_) => key.to_string(),
    };
    Target {
        what,
        shown,
        endpoint,
    }
}

fn url_target(what: String, key: Option<&str>, text: &str) -> Target {
    let parsed = parse_url(text.trim());
    let place = match &parsed {
        Ok(url) => url.shown.clone(),
        Err(_) => String::new(),
    };
    let shown = match key {
        Some(key) if place.is_empty() => key.to_string(),
        Some(key) => format!("{key} {place}"),
        None => place,
    };
    Target {
        what,
        shown,
        endpoint: parsed.map(|url| (url.host, url.port)),
    }
}

/// A URL taken apart as far as connecting needs.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    host: String,
    port: u16,
    /// Scheme, host, port and path: no user, password, query or fragment.
    shown: String,
}

/// `scheme://[userinfo@]host[:port][/path][?query][#fragment]`. A value that is no such URL
/// is not echoed back: it may hold a credential.
fn parse_url(text: &str) -> Result<Url, String> {
    let not_a_url = || "not a scheme://host URL".to_string();
    let (scheme, rest) = text.split_once("://").ok_or_else(not_a_url)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(not_a_url());
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let after = &rest[authority_end..];
    let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    let host_port = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "ldap" => 389,
        "ldaps" => 636,
        _ => 0,
    };
    let (host, port) = parse_host_port(host_port, default_port).map_err(|_| not_a_url())?;
    if port == 0 {
        return Err(format!("no port given for {scheme}://"));
    }
    let shown = format!("{scheme}://{host_port}{}", path.trim_end_matches('/'));
    Ok(Url { host, port, shown })
}

/// `HOST`, `HOST:PORT`, `IPV6`, `[IPV6]` or `[IPV6]:PORT` (port `default_port` when left
/// out), as the dns worker reads `DNS_SERVER`.
fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad_port = |p: &str| format!("'{p}' is not a port");
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok((address.ip().to_string(), address.port()));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| "an unclosed '['".to_string())?;
        match after.strip_prefix(':') {
            Some(port) => (host, port.parse().map_err(|_| bad_port(port))?),
            None if after.is_empty() => (host, default_port),
            None => return Err("text after ']'".into()),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad_port(port))?),
            None => (text, default_port),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("no host".into());
    }
    Ok((host.to_string(), port))
}

/// `host:port`, an IPv6 address in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    let host = unbracket(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The domain of `user@domain/resource`: where the XMPP adapter connects when no `server` is
/// set.
fn jid_domain(jid: &str) -> &str {
    let bare = jid.split('/').next().unwrap_or(jid);
    bare.rsplit('@').next().unwrap_or(bare)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(text: &str) -> Settings {
        let env = HashMap::from([("PW".to_string(), "hunter22".to_string())]);
        match Settings::parse("t.yaml", text, &env) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn shown(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| format!("{} ({})", t.what, t.shown))
            .collect()
    }

    #[test]
    fn every_section_names_its_targets_in_order() {
        let s = settings(
            "chat:
  irc:
    - {name: libera, server: irc.libera.chat, port: 6697, tls: true}
  xmpp:
    - {name: jabber, jid: jarvis@example.com/bot, password: x}
    - {name: local, jid: j@example.org, server: '::1', port: 5299, tls: plain, password: x}
designs:
  ldap: {url: 'ldap://127.0.0.1', base: 'dc=example,dc=com'}
workers:
  modules:
    dns: {env: {DNS_SERVER: 'ns1.example.com', DNS_TSIG_SECRET: '${PW}'}}
    alertmanager: {env: {ALERTMANAGER_URL: 'https://am:${PW}@alerts.example.com:9093/?x=${PW}'}}
    linode: {env: {LINODE_TOKEN: '${PW}'}}
    ldap: {env: {LDAP_URL: 'ldaps://[::1]'}}
",
        );
        let t = targets(&s);
        assert_eq!(
            shown(&t),
            [
                "irc libera (irc.libera.chat:6697, TLS)",
                "xmpp jabber (example.com:5222)",
                "xmpp local ([::1]:5299, no TLS)",
                "ldap designs (ldap://127.0.0.1)",
                "gist API (https://api.github.com)",
                "alertmanager worker (ALERTMANAGER_URL https://alerts.example.com:9093)",
                "dns worker (DNS_SERVER ns1.example.com:53)",
                "ldap worker (LDAP_URL ldaps://[::1])",
                "linode worker (LINODE_API https://api.linode.com/v4)",
            ]
        );
        let endpoints: Vec<_> = t.iter().map(|t| t.endpoint.clone().unwrap()).collect();
        let expected = [
            ("irc.libera.chat", 6697),
            ("example.com", 5222),
            ("::1", 5299),
            ("127.0.0.1", 389),
            ("api.github.com", 443),
            ("alerts.example.com", 9093),
            ("ns1.example.com", 53),
            ("::1", 636),
            ("api.linode.com", 443),
        ];
        let expected: Vec<_> = expected.iter().map(|(h, p)| (h.to_string(), *p)).collect();
        assert_eq!(endpoints, expected);
        let all = format!("{t:?}");
        assert!(!all.contains("hunter22") && !all.contains("am:"), "{all}");
    }

    #[test]
    fn host_and_port_are_read_as_the_dns_worker_reads_them() {
        let p = |t: &str| parse_host_port(t, 53);
        assert_eq!(p("127.0.0.1:5353"), Ok(("127.0.0.1".into(), 5353)));
        assert_eq!(p("127.0.0.1"), Ok(("127.0.0.1".into(), 53)));
        assert_eq!(p("::1"), Ok(("::1".into(), 53)));
        assert_eq!(p("[::1]:54"), Ok(("::1".into(), 54)));
        assert_eq!(p("ns.example.com"), Ok(("ns.example.com".into(), 53)));
        assert_eq!(p("ns.example.com:99"), Ok(("ns.example.com".into(), 99)));
        assert!(p("ns.example.com:http").is_err());
        assert!(p("").is_err());
        assert!(p("[::1").is_err());
    }

    #[test]
    fn a_url_that_cannot_be_read_is_not_echoed() {
        let t = url_target("x worker".into(), Some("LDAP_URL"), "hunter22@nowhere");
        assert_eq!(t.shown, "LDAP_URL");
        assert!(t.endpoint.is_err());
        let t = url_target("x worker".into(), Some("LDAP_URL"), "gopher://u:hunter22@h");
        assert_eq!(t.shown, "LDAP_URL");
        assert_eq!(t.endpoint, Err("no port given for gopher://".into()));
        assert_eq!(
            parse_url("HTTP://u@H:8080/a/b/?q#f").map(|u| u.shown),
            Ok("http://H:8080/a/b".into())
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_an_open_one_is_ok() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = |port| Target {
            what: "t".into(),
            shown: "s".into(),
            endpoint: Ok(("127.0.0.1".into(), port)),
        };
        let outcomes = reach_all(&[target(open), target(closed)], TIMEOUT).await;
        assert_eq!(outcomes[0], Ok(()));
        assert_eq!(
            outcomes[1],
            Err("cannot connect: connection refused".into())
        );
        assert_eq!(
            target(closed).line(&outcomes[1]),
            "t (s): cannot connect: connection refused"
        );
    }
}
