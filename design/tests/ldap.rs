//! Designs from LDAP, against a real slapd (tests/testbed/servers/slapd.sh). The seeded
//! `cn=loki` entry gets the design's fields here, as a site would keep them.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jarvis_design::{DesignError, DesignSources, DesignsConfig, LdapConfig};
use jarvis_testbed::Server;
use serde_json::json;
use support::assert_is_loki;

const HOSTS: &str = "ou=Hosts,dc=example,dc=com";
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbO7p1BrFxL1Ke5d6xhXvS0ymT7PL6yGJpo8HpXtgLr admin@example.com";

/// The attribute map a site with this schema would configure.
const ATTRIBUTES: &str = "
    cn: {field: instance.hostname, type: text}
    associatedDomain: instance.fqdn
    o: instance.provider
    info: instance.guestid
    l: instance.datacenter
    serialNumber: {field: instance.size, type: integer}
    sshPublicKey: instance.sshpubkey
    ipHostNumber: {field: instance.ips, type: list}
    description: instance.role
    dn: directory.dn
";

/// Starts slapd and gives `cn=loki` the reference design's fields. `None`: not installed
/// (and not CI), already reported by the testbed.
fn slapd() -> Option<Server> {
    let server = Server::start("slapd").unwrap()?;
    ldapmodify(
        &server,
        &format!(
            "dn: cn=loki,{HOSTS}
changetype: modify
add: objectClass
objectClass: domainRelatedObject
objectClass: ldapPublicKey
objectClass: extensibleObject
-
add: associatedDomain
associatedDomain: loki.example.com
-
add: o
o: Linode
-
add: info
info: Debian 12
-
add: l
l: Atlanta
-
add: serialNumber
serialNumber: 512
-
add: sshPublicKey
sshPublicKey: {SSH_KEY}
-
add: ipHostNumber
ipHostNumber: 2001:db8::10
"
        ),
    );
    Some(server)
}

fn ldapmodify(server: &Server, ldif: &str) {
    let mut child = Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            server.get("LDAP_URL"),
            "-D",
            server.get("LDAP_BIND_DN"),
        ])
        .args(["-w", server.get("LDAP_PASSWORD")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ldapmodify failed");
}

fn config(server: &Server, extra: &str) -> DesignsConfig {
    let yaml = format!(
        "ldap:
  url: {}
  bind_dn: {}
  password: {}
  base: {HOSTS}
  filter: (objectClass=device)
  timeout: 5s
{extra}  attributes:{ATTRIBUTES}",
        server.get("LDAP_URL"),
        server.get("LDAP_BIND_DN"),
        server.get("LDAP_PASSWORD"),
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

/// How many connections slapd has accepted so far (its `-d stats` log).
fn accepted_connections(server: &Server) -> usize {
    let log = std::fs::read_to_string(server.dir().join("slapd.log")).unwrap();
    log.lines().filter(|l| l.contains(" ACCEPT from ")).count()
}

#[tokio::test]
async fn cn_loki_yields_the_design_over_one_connection() {
    let Some(server) = slapd() else { return };
    let sources = DesignSources::new(config(&server, ""));
    let before = accepted_connections(&server);
    let design = sources.load("cn=loki").await.unwrap();
    assert_is_loki(&design);
    let instance = &design.document["instance"];
    assert_eq!(instance["ips"], json!(["192.0.2.10", "2001:db8::10"]));
    assert_eq!(instance["role"], json!("production"));
    assert_eq!(instance["sshpubkey"], json!(SSH_KEY));
    assert_eq!(
        design.document["directory"]["dn"],
        json!(format!("cn=loki,{HOSTS}"))
    );
    assert_eq!(design.origin, format!("LDAP entry cn=loki,{HOSTS}"));

    for dn in [
        format!("cn=loki,{HOSTS}"),
        "CN=loki, OU=hosts, DC=Example, DC=com".to_string(),
    ] {
        let by_dn = sources.load(&dn).await.unwrap();
        assert_eq!(by_dn.document, design.document, "{dn}");
    }
    assert_eq!(
        accepted_connections(&server) - before,
        1,
        "three loads should share one connection"
    );
}

#[tokio::test]
async fn filter_injections_match_nothing_and_say_so() {
    let Some(server) = slapd() else { return };
    let sources = DesignSources::new(config(&server, ""));
    for name in [
        "*)(objectClass=*",
        "*",
        "lo*",
        "loki)(cn=*",
        "*)(|(cn=*",
        "loki)(|(objectClass=*",
        "loki\\29",
        "\\2a",
        "loki\u{0}",
    ] {
        let reference = format!("cn={name}");
        match sources.load(&reference).await {
            Err(DesignError::NotFound(why)) => assert_eq!(
                why,
                format!(
                    "no LDAP entry has cn={} under {HOSTS} (the name is matched literally)",
                    jarvis_design::printable(name)
                )
            ),
            // A NUL never reaches the server: the reference is refused first.
            Err(DesignError::Reference(why)) if name.contains('\u{0}') => {
                assert!(why.contains("control"), "{why}")
            }
            other => panic!("{reference}: {other:?}"),
        }
    }
    // The escaped filter is what slapd searched for.
    let log = std::fs::read_to_string(server.dir().join("slapd.log")).unwrap();
    assert!(
        log.to_ascii_lowercase()
            .contains(r"(cn=\2a\29\28objectclass=\2a)"),
        "slapd never saw the escaped filter"
    );

    let outside = sources.load("cn=loki,ou=People,dc=example,dc=com").await;
    assert!(
        matches!(outside, Err(DesignError::Reference(ref why)) if why.contains("not under the LDAP base"))
    );
    let missing = sources
        .load(&format!("cn=nobody,{HOSTS}"))
        .await
        .unwrap_err();
    assert_eq!(
        missing,
        DesignError::NotFound(format!("there is no LDAP design entry cn=nobody,{HOSTS}"))
    );
}

#[tokio::test]
async fn refusals_name_the_ldap_attribute() {
    let Some(server) = slapd() else { return };
    let sources = DesignSources::new(config(&server, ""));
    let plain = sources.load("cn=plain").await.unwrap_err();
    assert_eq!(
        plain.to_string(),
        format!("instance.provider: is missing (LDAP attribute o of cn=plain,{HOSTS})")
    );

    let mut strict = config(&server, "");
    let ldap = strict.ldap.as_mut().unwrap();
    ldap.attributes.insert(
        "ipHostNumber".into(),
        serde_saphyr::from_str("{field: instance.address, type: text}").unwrap(),
    );
    let error = DesignSources::new(strict)
        .load("cn=loki")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "instance.address: takes one value, but LDAP attribute ipHostNumber has 2"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_never_shown() {
    let Some(server) = slapd() else { return };
    let mut config = config(&server, "");
    let ldap: &mut LdapConfig = config.ldap.as_mut().unwrap();
    ldap.password = Some(jarvis_design::Secret::new("not-the-password-x1"));
    let sources = DesignSources::new(config);
    let error = sources.load("cn=loki").await.unwrap_err();
    assert_eq!(
        error,
        DesignError::Source(format!(
            "the LDAP server 127.0.0.1:{} refused the bind as cn=admin,dc=example,dc=com (invalid credentials)",
            server.get("LDAP_PORT")
        ))
    );
    assert!(!format!("{sources:?}").contains("not-the-password-x1"));
}

#[tokio::test]
async fn starttls_trusts_the_configured_ca_only() {
    let Some(server) = slapd() else { return };
    let ca = format!(
        "  starttls: true\n  ca_file: {}\n",
        server.get("LDAP_CA_FILE")
    );
    let sources = DesignSources::new(config(&server, &ca));
    assert_is_loki(&sources.load("cn=loki").await.unwrap());

    let untrusted = DesignSources::new(config(&server, "  starttls: true\n"));
    let text = untrusted.load("cn=loki").await.unwrap_err().to_string();
    assert!(
        text.starts_with("TLS with the LDAP server 127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_to() {
    let Some(mut server) = slapd() else { return };
    let sources = DesignSources::new(config(&server, ""));
    assert_is_loki(&sources.load("cn=loki").await.unwrap());
    server.stop(None).unwrap();
    let text = sources.load("cn=loki").await.unwrap_err().to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach the LDAP server 127.0.0.1:{}",
            server.get("LDAP_PORT")
        )),
        "{text}"
    );
    server.restart().unwrap();
    assert_is_loki(&sources.load("cn=loki").await.unwrap());
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let silent = support::silent().await;
    let url = silent.replace("http://", "ldap://");
    let config: DesignsConfig = serde_saphyr::from_str(&format!(
        "ldap: {{url: '{url}', base: '{HOSTS}', timeout: 500ms}}"
    ))
    .unwrap();
    let started = Instant::now();
    let text = DesignSources::new(config)
        .load("cn=loki")
        .await
        .unwrap_err()
        .to_string();
    assert!(text.ends_with("did not answer within 0.5s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
