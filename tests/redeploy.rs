//! SPEC 4's reference redeploy end to end through the real jarvis, against real BIND 9,
//! slapd, Alertmanager and sshd, and the Linode API stand-in: the records, the LDAP entry and
//! the silences afterwards are what an operator would check by hand.

mod support;

use std::process::Command;

use jarvis_standins::process::Standin;
use jarvis_testbed::Server;
use support::{Home, Shell};

const TOKEN: &str = "standin-token";

struct World {
    bind: Server,
    slapd: Server,
    alertmanager: Server,
    sshd: Server,
    linode: Standin,
}

fn world() -> Option<World> {
    Some(World {
        bind: Server::start("bind").unwrap()?,
        slapd: Server::start("slapd").unwrap()?,
        alertmanager: Server::start("alertmanager").unwrap()?,
        sshd: Server::start("sshd").unwrap()?,
        linode: Standin::spawn_named(
            "linode-standin",
            &[
                "--token",
                TOKEN,
                "--ipv4",
                "203.0.113.7",
                "--provision-ms",
                "150",
                "--boot-ms",
                "150",
                "--shutdown-ms",
                "100",
            ],
        )
        .unwrap(),
    })
}

const STAGES: &[&str] = &[
    "ldap:lookup",
    "alertmanager:silence",
    "linode:shutdown",
    "linode:delete",
    "linode:deploy",
    "linode:wait",
    "ssh:wait",
    "ssh:fingerprints",
    "dns:update",
    "ldap:update_host",
    "ssh:run",
    "alertmanager:unsilence",
];

/// Each stage's parameters, as the operator configures them: the sshd stands in for the new
/// instance at 127.0.0.1 (the stand-in hands out 203.0.113.7, which is never connected to).
fn with_for(task: &str, ssh_port: &str) -> String {
    let target = format!("host: 127.0.0.1, port: {ssh_port}");
    match task {
        "linode:wait" | "linode:shutdown" => " with: { poll_ms: 50 }".into(),
        "ssh:wait" => format!(" with: {{ {target}, host_key: learn, poll_ms: 50 }}"),
        "ssh:fingerprints" => format!(" with: {{ {target}, host_key: learn }}"),
        "ssh:run" => {
            format!(" with: {{ {target}, commands: [[echo, 'configured {{instance.hostname}}']] }}")
        }
        _ => String::new(),
    }
}

fn home(w: &World, tsig_secret: &str) -> Home {
    home_with(
        w,
        tsig_secret,
        "      - { task: \"linode:deploy\", idempotent: true, notify: true }
      - { task: \"linode:wait\", idempotent: true, with: { poll_ms: 50 } }
",
        0,
    )
}

fn home_with(w: &World, tsig_secret: &str, deploy_stages: &str, slow_seconds: u32) -> Home {
    let mut stages = String::new();
    for task in STAGES {
        let with = with_for(task, w.sshd.get("SSHD_PORT"));
        stages.push_str(&format!(
            "      - {{ task: \"{task}\", idempotent: true, notify: true, timeout: 60s,{with} }}\n"
        ));
    }
    let config = format!(
        "workers:
  folders: [{workers}]
  modules:
    linode: {{ env: {{ LINODE_TOKEN: '{TOKEN}', LINODE_API: '{linode}/v4' }} }}
    ssh: {{ env: {{ SSH_KEY_FILE: '{key}', SSH_USER: '{user}' }} }}
    dns: {{ env: {{ DNS_SERVER: '{dns}', DNS_TSIG_NAME: '{tsig_name}', DNS_TSIG_SECRET: '{tsig_secret}', DNS_ZONE: '{zone}' }} }}
    ldap: {{ env: {{ LDAP_URL: '{ldap_url}', LDAP_BASE: '{ldap_base}', LDAP_BIND_DN: '{bind_dn}', LDAP_PASSWORD: '{ldap_pw}' }} }}
    alertmanager: {{ env: {{ ALERTMANAGER_URL: '{am}' }} }}
    slowstep: {{ env: {{ STEP_SECONDS: '{slow_seconds}' }} }}
pipelines:
  linode-redeploy:
    command: redeploy
    providers: [Linode]
    stages:
{stages}    on_failure:
      - {{ task: \"linode:delete\", idempotent: true }}
      - {{ task: \"dns:remove_host\", idempotent: true }}
      - {{ task: \"alertmanager:unsilence\", idempotent: true }}
  linode-deploy:
    command: deploy
    providers: [Linode]
    stages:
{deploy_stages}roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = support::test_workers().display(),
        linode = w.linode.url(),
        key = w.sshd.get("SSHD_KEY"),
        user = w.sshd.get("SSHD_USER"),
        dns = w.bind.get("DNS_SERVER"),
        tsig_name = w.bind.get("DNS_TSIG_NAME"),
        zone = w.bind.get("DNS_ZONE"),
        ldap_url = w.slapd.get("LDAP_URL"),
        ldap_base = w.slapd.get("LDAP_BASE"),
        bind_dn = w.slapd.get("LDAP_BIND_DN"),
        ldap_pw = w.slapd.get("LDAP_PASSWORD"),
        am = w.alertmanager.get("ALERTMANAGER_URL"),
    );
    let home = Home::new(&config);
    home.design(
        "loki",
        "instance:
  hostname: loki
  fqdn: loki.example.com
  provider: Linode
  guestid: Debian 12
  datacenter: Atlanta
  size: 512
  sshpubkey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm9kIPLxbBzbChzl2iYsnf4LfYPhk7aeWbeKYw6rf+k admin@example.com
",
    );
    home
}

fn dig(w: &World, kind: &str) -> String {
    let out = Command::new("dig")
        .args([
            "+short",
            "-p",
            w.bind.get("DNS_PORT"),
            "@127.0.0.1",
            "loki.example.com",
            kind,
        ])
        .output()
        .expect("dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ldapsearch(w: &World) -> String {
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            w.slapd.get("LDAP_URL"),
            "-D",
            w.slapd.get("LDAP_BIND_DN"),
            "-w",
            w.slapd.get("LDAP_PASSWORD"),
            "-b",
            w.slapd.get("LDAP_BASE"),
            "(cn=loki)",
        ])
        .output()
        .expect("ldapsearch (ldap-utils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The active silences whose matchers mention loki.
fn active_silences(w: &World) -> usize {
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("{}/api/v2/silences", w.alertmanager.get("ALERTMANAGER_URL")),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let silences: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    silences
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|s| {
                    s["status"]["state"] == "active" && s["matchers"].to_string().contains("loki")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn redeploy_loki_end_to_end() {
    let Some(w) = world() else { return };
    let home = home(&w, w.bind.get("DNS_TSIG_SECRET"));
    let mut sh = home.shell();
    sh.ask(
        "redeploy loki",
        "redeploy #1 of loki queued (linode-redeploy pipeline, 12 stages)",
    );
    for (i, task) in STAGES.iter().enumerate() {
        sh.expect(&format!(
            "loki redeploy #1: stage {}/12 {task} started",
            i + 1
        ));
    }
    sh.expect("loki redeploy #1 succeeded in");
    let status = sh.ask("status #1", "loki redeploy #1");
    let log = sh.ask("log #1 200", "[");
    let transcript = sh.finish().join("\n");

    // The root password linode:deploy made went to the API, and nowhere else in clear.
    let password = w
        .linode
        .requests()
        .unwrap()
        .iter()
        .find_map(|r| r["body"]["root_pass"].as_str().map(str::to_string))
        .expect("the create request carried a root password");
    for (what, text) in [
        ("status", &status),
        ("log", &log),
        ("transcript", &transcript),
    ] {
        assert!(!text.contains(&password), "the root password is in {what}");
    }
    let leaks = support::files_containing(&home.path("data"), password.as_bytes());
    assert!(
        leaks.is_empty(),
        "the root password's bytes are in {leaks:?}"
    );

    assert_eq!(dig(&w, "A").trim(), "203.0.113.7", "the new A record");
    let sshfp = dig(&w, "SSHFP");
    assert!(
        sshfp.lines().count() >= 2,
        "SSHFP records for each host key: {sshfp}"
    );
    assert!(
        !sshfp.contains("0000000000000000"),
        "the old all-zero SSHFP is gone: {sshfp}"
    );
    let entry = ldapsearch(&w);
    assert!(entry.contains("ipHostNumber: 203.0.113.7"), "{entry}");
    assert_eq!(active_silences(&w), 0, "the silence was lifted");
    assert_eq!(w.linode.instances().unwrap().len(), 1, "one instance");
}

#[test]
fn a_wrong_tsig_key_fails_at_the_dns_stage_and_undoes() {
    let Some(w) = world() else { return };
    let home = home(&w, "d3Jvbmcgc2VjcmV0IGZvciB0ZXN0cw==");
    let mut sh = home.shell();
    sh.ask("redeploy loki", "redeploy #1 of loki queued");
    let failed = sh.expect("FAILED");
    assert!(
        failed.contains("FAILED at stage 9/12 dns:update"),
        "{failed}"
    );
    assert!(failed.contains("BADSIG"), "{failed}");
    assert!(
        failed.contains(w.bind.get("DNS_TSIG_NAME")),
        "names the key: {failed}"
    );
    sh.expect("loki redeploy #1: on_failure stages finished");
    sh.finish();
    assert!(
        w.linode.instances().unwrap().is_empty(),
        "the new instance was deleted"
    );
    assert_eq!(active_silences(&w), 0, "the silence was lifted");
}

#[test]
fn kill_9_during_linode_deploy_leaves_exactly_one_instance() {
    let Some(w) = world() else { return };
    let home = home(&w, w.bind.get("DNS_TSIG_SECRET"));
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1: stage 1/2 linode:deploy started");
    // Kill as soon as the create request reached the API.
    support::wait_until("the create request", || {
        w.linode
            .requests()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "POST")
    });
    sh.kill9();
    let mut sh = Shell::start(&home.config());
    sh.expect("loki deploy #1 succeeded");
    sh.finish();
    assert_eq!(
        w.linode.instances().unwrap().len(),
        1,
        "exactly one instance"
    );
}

/// A deploy pipeline as config/example.yaml has it, with its undo, and a slow last stage to
/// cancel during.
fn deploy_home(w: &World, slow_notify: bool, slow_seconds: u32) -> Home {
    let deploy = format!(
        "      - {{ task: \"linode:deploy\", notify: true }}
      - {{ task: \"linode:wait\", with: {{ poll_ms: 50 }} }}
      - {{ task: \"dns:update\" }}
      - {{ task: \"ldap:update_host\" }}
      - {{ task: \"slowstep:x\", notify: {slow_notify} }}
    on_failure:
      - {{ task: \"dns:remove_host\" }}
      - {{ task: \"ldap:remove_host\" }}
      - {{ task: \"linode:delete\" }}
"
    );
    home_with(w, w.bind.get("DNS_TSIG_SECRET"), &deploy, slow_seconds)
}

#[test]
fn a_failed_second_deploy_leaves_the_first_host_its_records_and_its_entry_alone() {
    let Some(w) = world() else { return };
    let home = deploy_home(&w, false, 0);
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    assert_eq!(w.linode.instances().unwrap().len(), 1);
    assert_eq!(dig(&w, "A").trim(), "203.0.113.7");
    assert!(ldapsearch(&w).contains("cn: loki"));

    sh.ask("deploy loki", "deploy #2 of loki queued");
    let failed = sh.expect("FAILED");
    assert!(failed.contains("stage 1/5 linode:deploy"), "{failed}");
    assert!(failed.contains("already exists"), "{failed}");
    sh.expect("loki deploy #2: on_failure stages finished");
    sh.finish();
    let log = home
        .sql("SELECT line FROM log_lines WHERE run_id = 2")
        .join("\n");
    assert!(log.contains("not made by this run: left alone"), "{log}");
    assert_eq!(
        w.linode.instances().unwrap().len(),
        1,
        "the first instance is still there"
    );
    assert_eq!(dig(&w, "A").trim(), "203.0.113.7", "its A record too");
    let entry = ldapsearch(&w);
    assert!(
        entry.contains("ipHostNumber: 203.0.113.7"),
        "and its LDAP entry: {entry}"
    );
}

#[test]
fn a_cancel_after_the_instance_was_made_names_what_it_leaves_behind() {
    let Some(w) = world() else { return };
    let home = deploy_home(&w, true, 60);
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1: stage 5/5 slowstep:x started");
    let id = w.linode.instances().unwrap()[0]["id"].to_string();
    let reply = sh.ask("cancel #1", "cancelling loki deploy #1");
    assert!(
        reply.contains(&format!("linode {id}")) && reply.contains("destroy loki"),
        "the reply names the instance and how to remove it: {reply}"
    );
    let cancelled = sh.expect("cancelled by");
    assert!(cancelled.contains(&format!("linode {id}")), "{cancelled}");
    sh.finish();
}
