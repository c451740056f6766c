//! Designs from real sources queue and run a pipeline with the design's values on the
//! clipboard (SPEC 3): LDAP from a real slapd, a gist from the Gist API stand-in, and
//! injections that match nothing.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use jarvis_testbed::Server;
use support::Home;

const PIPELINE: &str = "pipelines:
  linode:
    providers: [Linode]
    stages:
      - { task: \"local:check\", idempotent: true }
roles:
  grants:
    - { console: \"*\", roles: [admin] }
";

/// The reference design's fields on the seeded `cn=loki` entry, as a site would keep them.
fn seed_loki(slapd: &Server) {
    let ldif = "dn: cn=loki,ou=Hosts,dc=example,dc=com
changetype: modify
add: objectClass
objectClass: domainRelatedObject
objectClass: extensibleObject
-
add: associatedDomain
associatedDomain: loki.example.com
-
add: o
o: Linode
-
add: l
l: Atlanta
-
add: serialNumber
serialNumber: 512
";
    let mut child = Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            slapd.get("LDAP_URL"),
            "-D",
            slapd.get("LDAP_BIND_DN"),
            "-w",
            slapd.get("LDAP_PASSWORD"),
        ])
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
    assert!(child.wait().unwrap().success(), "ldapmodify");
}

fn clipboard_field(home: &Home, run: u32, path: &str) -> String {
    home.sql(&format!(
        "SELECT json_extract(clipboard, '$.{path}') FROM runs WHERE id = {run}"
    ))
    .join("")
}

#[test]
fn deploy_from_an_ldap_entry_runs_with_its_values() {
    let Some(slapd) = Server::start("slapd").unwrap() else {
        return;
    };
    seed_loki(&slapd);
    let home = Home::new(PIPELINE);
    // Home writes the designs section; the LDAP source goes into it.
    let text = std::fs::read_to_string(home.config()).unwrap().replacen(
        "designs:\n",
        &format!(
            "designs:\n  ldap:\n    url: {}\n    bind_dn: {}\n    password: {}\n    base: ou=Hosts,dc=example,dc=com\n    attributes:\n      cn: {{field: instance.hostname, type: text}}\n      associatedDomain: instance.fqdn\n      o: instance.provider\n      l: instance.datacenter\n      serialNumber: {{field: instance.size, type: integer}}\n",
            slapd.get("LDAP_URL"),
            slapd.get("LDAP_BIND_DN"),
            slapd.get("LDAP_PASSWORD")
        ),
        1,
    );
    std::fs::write(home.config(), text).unwrap();

    let mut sh = home.shell();
    sh.ask(
        "deploy cn=loki",
        "deploy #1 of loki queued (linode pipeline, 1 stage)",
    );
    sh.expect("loki deploy #1 succeeded");
    sh.ask("deploy cn=*)(objectClass=*", "matched literally");
    sh.ask("plan cn=loki)(cn=*", "plan failed:");
    sh.finish();
    assert_eq!(
        clipboard_field(&home, 1, "instance.fqdn"),
        "loki.example.com"
    );
    assert_eq!(clipboard_field(&home, 1, "instance.datacenter"), "Atlanta");
    assert_eq!(clipboard_field(&home, 1, "instance.size"), "512");
    assert_eq!(clipboard_field(&home, 1, "jarvis.design"), "cn=loki");
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM runs"),
        vec!["1"],
        "an injection queues nothing"
    );
}

#[test]
fn deploy_from_a_gist_runs_with_its_values() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gists = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("design/tests/gists");
    let api = runtime
        .block_on(jarvis_standins::gist::spawn(
            jarvis_standins::gist::Settings::new(gists),
        ))
        .unwrap();
    let host = api.trim_start_matches("http://").to_string();
    let home = Home::new(PIPELINE);
    let text = std::fs::read_to_string(home.config()).unwrap().replacen(
        "designs:\n",
        &format!("designs:\n  gist:\n    api: {api}\n    raw_hosts: [\"{host}\"]\n"),
        1,
    );
    std::fs::write(home.config(), text).unwrap();

    let mut sh = home.shell();
    sh.ask(
        "deploy https://gist.github.com/912450",
        "deploy #1 of loki queued (linode pipeline, 1 stage)",
    );
    sh.expect("loki deploy #1 succeeded");
    sh.ask("deploy https://gist.github.com/deadbeef", "deploy failed:");
    sh.ask("deploy https://evil.example.com/x.yaml", "deploy failed:");
    sh.ask("deploy /etc/passwd", "deploy failed:");
    sh.finish();
    assert_eq!(clipboard_field(&home, 1, "instance.guestid"), "Debian 12");
    assert_eq!(clipboard_field(&home, 1, "instance.provider"), "Linode");
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM runs"),
        vec!["1"],
        "refused references queue nothing"
    );
}
