//! `ldap:update_host`, `ldap:remove_host` and `ldap:lookup` against a real slapd
//! (tests/testbed/servers/slapd.sh), checked with `ldapsearch`.

mod world;

use jarvis_testbed::Server;
use world::{Outcome, run_worker, tool};

const ED25519_FP: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";

fn clipboard(hostname: &str) -> String {
    format!(
        "instance:
  hostname: '{hostname}'
  fqdn: '{hostname}.example.com'
jarvis:
  run_id: 42
  host_keys:
    - {{algorithm: ssh-ed25519, fingerprint: 'SHA256:Hy49TFtqeYgfLj1MW2p5iB8uPUxbanmIHy49TFtqeYg'}}
linode:
  ipv4: ['203.0.113.7']
  ipv6: '2001:db8::7/128'
ssh:
  sshfp:
    - {{algorithm: 4, fptype: 2, fingerprint: '6666666666666666666666666666666666666666666666666666666666666666'}}
  host_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheNewInstance root@{hostname}
"
    )
}

fn slapd() -> Option<Server> {
    Server::start("slapd").expect("slapd did not start")
}

fn grants(server: &Server) -> Vec<(&'static str, String)> {
    ["LDAP_URL", "LDAP_BASE", "LDAP_BIND_DN", "LDAP_PASSWORD"]
        .into_iter()
        .map(|k| (k, server.get(k).to_string()))
        .collect()
}

fn run(task: &str, clip: &str, grants: &[(&'static str, String)]) -> Outcome {
    let pairs: Vec<(&str, &str)> = grants.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_worker("ldap", task, clip, &pairs)
}

/// `ldapsearch` of the hosts folder with `filter`, as LDIF lines (continuations joined).
fn search(server: &Server, filter: &str) -> Vec<String> {
    let base = format!("ou=Hosts,{}", server.get("LDAP_BASE"));
    let ldif = tool(
        "ldapsearch",
        &[
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-x",
            "-H",
            server.get("LDAP_URL"),
            "-D",
            server.get("LDAP_BIND_DN"),
            "-w",
            server.get("LDAP_PASSWORD"),
            "-b",
            &base,
            "-s",
            "one",
            filter,
        ],
    );
    ldif.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn update_host_writes_the_mapped_fields_and_keeps_production() {
    let Some(server) = slapd() else { return };
    let out = run("update_host", &clipboard("loki"), &grants(&server));
    out.assert_success();
    let entry = search(&server, "(cn=loki)");
    let has = |line: &str| entry.iter().any(|l| l == line);
    assert!(has("dn: cn=loki,ou=Hosts,dc=example,dc=com"), "{entry:#?}");
    assert!(
        has("objectClass: device") && has("objectClass: ipHost"),
        "{entry:#?}"
    );
    assert!(
        has("ipHostNumber: 203.0.113.7") && has("ipHostNumber: 2001:db8::7"),
        "{entry:#?}"
    );
    assert!(
        !has("ipHostNumber: 192.0.2.10"),
        "the old address is replaced: {entry:#?}"
    );
    assert!(
        has(&format!("description: SSHFP 4 2 {ED25519_FP}")),
        "{entry:#?}"
    );
    assert!(
        !entry.iter().any(|l| l.contains("66666666")),
        "SSHFP comes from the engine's pins, not the clipboard's ssh.sshfp: {entry:#?}"
    );
    assert!(
        entry
            .iter()
            .any(|l| l.starts_with("description: deployed by jarvis run 42 at 20")),
        "{entry:#?}"
    );
    assert!(
        has("description: production"),
        "a redeploy keeps the production mark: {entry:#?}"
    );

    let clip = out.clipboard();
    assert_eq!(clip["ldap"]["dn"], "cn=loki,ou=Hosts,dc=example,dc=com");
    assert_eq!(clip["ldap"]["production"], true);
}

#[test]
fn update_host_twice_gives_the_same_entry() {
    let Some(server) = slapd() else { return };
    let grants = grants(&server);
    run("update_host", &clipboard("loki"), &grants).assert_success();
    let first = search(&server, "(cn=loki)");
    let again = run("update_host", &clipboard("loki"), &grants);
    again.assert_success();
    assert!(again.stderr.contains("already current"), "{}", again.stderr);
    assert_eq!(search(&server, "(cn=loki)"), first);
}

#[test]
fn update_host_creates_a_new_host_through_a_custom_map_and_remove_host_deletes_it() {
    let Some(server) = slapd() else { return };
    let mut grants = grants(&server);
    grants.push(("LDAP_OBJECT_CLASSES", "device,ipHost,ldapPublicKey".into()));
    grants.push((
        "LDAP_ATTRIBUTE_MAP",
        "ipHostNumber=@ipv4,sshPublicKey=ssh.host_keys,description=@deployed,l=instance.fqdn"
            .into(),
    ));
    let out = run("update_host", &clipboard("newbox"), &grants);
    out.assert_success();
    assert_eq!(out.clipboard()["ldap"]["production"], false);
    let entry = search(&server, "(cn=newbox)");
    let has = |line: &str| entry.iter().any(|l| l == line);
    assert!(
        has("dn: cn=newbox,ou=Hosts,dc=example,dc=com"),
        "{entry:#?}"
    );
    assert!(
        has("objectClass: ldapPublicKey") && has("cn: newbox"),
        "{entry:#?}"
    );
    assert!(
        has("ipHostNumber: 203.0.113.7") && !has("ipHostNumber: 2001:db8::7"),
        "{entry:#?}"
    );
    assert!(has("l: newbox.example.com"), "{entry:#?}");
    assert!(
        entry
            .iter()
            .any(|l| l.starts_with("sshPublicKey: ssh-ed25519 AAAAC3")),
        "{entry:#?}"
    );

    let removed = run("remove_host", &clipboard("newbox"), &grants);
    removed.assert_success();
    assert_eq!(removed.clipboard()["ldap"]["exists"], false);
    assert!(search(&server, "(cn=newbox)").is_empty());
    run("remove_host", &clipboard("newbox"), &grants).assert_success();
}

#[test]
fn lookup_tells_production_hosts_apart() {
    let Some(server) = slapd() else { return };
    let grants = grants(&server);
    let cases = [
        ("loki", true, true),
        ("plain", false, true),
        ("ghost", false, false),
    ];
    for (host, production, exists) in cases {
        let out = run("lookup", &clipboard(host), &grants);
        out.assert_success();
        let clip = out.clipboard();
        assert_eq!(clip["ldap"]["production"], production, "{host}");
        assert_eq!(clip["ldap"]["exists"], exists, "{host}");
        assert_eq!(
            clip["ldap"]["dn"],
            format!("cn={host},ou=Hosts,dc=example,dc=com")
        );
    }
}

#[test]
fn hostile_host_names_match_and_create_nothing() {
    let Some(server) = slapd() else { return };
    let grants = grants(&server);
    let before = search(&server, "(objectClass=*)");
    for hostile in ["loki)(objectClass=*", "a,ou=x", "*", "loki\\2a"] {
        for task in ["lookup", "update_host", "remove_host"] {
            let out = run(task, &clipboard(hostile), &grants);
            assert_eq!(out.code, 1, "{task} {hostile}: {}", out.stderr);
            assert!(
                out.stdout.is_empty(),
                "{task} {hostile} changed the clipboard"
            );
            assert!(out.error().contains("is not a host name"), "{}", out.stderr);
        }
    }
    assert_eq!(
        search(&server, "(objectClass=*)"),
        before,
        "the directory is unchanged"
    );
}

#[test]
fn a_wrong_password_is_one_line_without_the_password() {
    let Some(server) = slapd() else { return };
    let mut grants = grants(&server);
    grants[3].1 = "not-the-password-xyzzy".into();
    let out = run("lookup", &clipboard("loki"), &grants);
    assert_eq!(out.code, 1);
    assert!(out.error().contains("invalidCredentials"), "{}", out.stderr);
    assert!(!out.all_output().contains("xyzzy"));
    assert!(!out.all_output().contains(server.get("LDAP_PASSWORD")));
}

#[test]
fn starttls_with_the_servers_ca_works_and_without_it_fails_clearly() {
    let Some(server) = slapd() else { return };
    let mut grants = grants(&server);
    grants.push(("LDAP_STARTTLS", "true".into()));
    grants.push(("LDAP_CA_FILE", server.get("LDAP_CA_FILE").into()));
    let out = run("lookup", &clipboard("loki"), &grants);
    out.assert_success();
    assert_eq!(out.clipboard()["ldap"]["production"], true);

    grants.pop();
    let out = run("lookup", &clipboard("loki"), &grants);
    assert_eq!(
        out.code, 1,
        "an unknown CA is not worth retrying: {}",
        out.stderr
    );
    assert!(
        out.error().starts_with("TLS with LDAP at"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_server_restarts_in_its_folder_with_the_entry_kept() {
    let Some(mut server) = slapd() else { return };
    run("update_host", &clipboard("newbox"), &grants(&server)).assert_success();
    server.stop(None).unwrap();
    server.restart().unwrap();
    assert!(!search(&server, "(cn=newbox)").is_empty());
    run("lookup", &clipboard("newbox"), &grants(&server)).assert_success();
}
