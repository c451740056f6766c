//! The EC2 pipelines (deploy, redeploy, destroy) end to end through the real jarvis, against
//! moto's AWS API emulator (which checks every request's SigV4 signature against an IAM key it
//! made), real BIND 9, slapd, Alertmanager, and the test sshd standing in for the instance.
//!
//! Loopback only: moto hands out made-up addresses (a random public 54.x and a private 10.x).
//! They are published in DNS and LDAP as a real instance's would be, but nothing connects to
//! them: every SSH stage's configuration names the sshd on 127.0.0.1, and the tests check in
//! the run's log that every SSH stage worked on 127.0.0.1 and never named one of moto's
//! addresses.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jarvis_testbed::Server;
use serde_json::Value;
use support::{Home, Shell};

/// The AMI the test images map to: one of moto's stock images.
const AMI: &str = "ami-03cf127a";
/// Where the design's datacenter `Frankfurt` puts the instance (the built-in table).
const REGION: &str = "eu-central-1";

const DEPLOY: &[&str] = &[
    "ec2:deploy",
    "ec2:wait",
    "ssh:wait",
    "ssh:fingerprints",
    "dns:update",
    "ldap:update_host",
    "ssh:run",
];
const REDEPLOY: &[&str] = &[
    "ldap:lookup",
    "alertmanager:silence",
    "ec2:shutdown",
    "ec2:delete",
    "ec2:deploy",
    "ec2:wait",
    "ssh:wait",
    "ssh:fingerprints",
    "dns:update",
    "ldap:update_host",
    "ssh:run",
    "alertmanager:unsilence",
];
const DESTROY: &[&str] = &[
    "ldap:lookup",
    "alertmanager:silence",
    "ec2:delete",
    "dns:remove_host",
    "ldap:remove_host",
    "alertmanager:unsilence",
];
/// The stages (1-based) of a pipeline that connect to the instance: always to the sshd on
/// 127.0.0.1.
fn ssh_stages(tasks: &[&str]) -> Vec<usize> {
    tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.starts_with("ssh:"))
        .map(|(i, _)| i + 1)
        .collect()
}

struct World {
    bind: Server,
    slapd: Server,
    alertmanager: Server,
    sshd: Server,
    moto: Server,
}

fn world() -> Option<World> {
    Some(World {
        bind: Server::start("bind").unwrap()?,
        slapd: Server::start("slapd").unwrap()?,
        alertmanager: Server::start("alertmanager").unwrap()?,
        sshd: Server::start("sshd").unwrap()?,
        moto: Server::start("moto").unwrap()?,
    })
}

/// Each stage's parameters as the operator configures them: every SSH target is the local
/// sshd (the instance's own addresses are moto's inventions).
fn with_for(task: &str, ssh_port: &str) -> String {
    let target = format!("host: 127.0.0.1, port: {ssh_port}");
    match task {
        "ec2:wait" | "ec2:delete" | "ec2:shutdown" => " with: { poll_ms: 50 }".into(),
        "ssh:wait" => format!(" with: {{ {target}, host_key: learn, poll_ms: 50 }}"),
        "ssh:fingerprints" => format!(" with: {{ {target}, host_key: learn }}"),
        "ssh:run" => {
            format!(" with: {{ {target}, commands: [[echo, 'configured {{instance.hostname}}']] }}")
        }
        _ => String::new(),
    }
}

fn stages(tasks: &[&str], ssh_port: &str) -> String {
    tasks
        .iter()
        .map(|task| {
            format!(
                "      - {{ task: \"{task}\", idempotent: true, notify: true, timeout: 60s,{} }}\n",
                with_for(task, ssh_port)
            )
        })
        .collect()
}

fn ec2_env(moto: &Server, endpoint: &str, secret: &str) -> String {
    ec2_env_with(moto, endpoint, secret, "")
}

/// The ec2 module's grant; `more` adds settings (`, NAME: 'VALUE'`).
fn ec2_env_with(moto: &Server, endpoint: &str, secret: &str, more: &str) -> String {
    format!(
        "{{ AWS_ACCESS_KEY_ID: '{key}', AWS_SECRET_ACCESS_KEY: '{secret}', EC2_ENDPOINT: '{endpoint}', EC2_IMAGES: 'Debian 12={AMI}'{more} }}",
        key = moto.get("MOTO_ACCESS_KEY_ID"),
    )
}

/// Runs Python (with boto3) against moto, in the test's region, with moto's key; its stdout.
fn boto3(moto: &Server, script: &str) -> String {
    support::boto3(moto, REGION, script)
}

/// What the operator would have made in the account beforehand: a key pair, a security group
/// and a subnet of the default VPC: the grant's extra settings that name them, the group and
/// the subnet.
fn account_settings(moto: &Server) -> (String, String, String) {
    const SETUP: &str = r#"
import os, boto3
ec2 = boto3.client("ec2", region_name=os.environ["REGION"], endpoint_url=os.environ["URL"])
ec2.create_key_pair(KeyName="jarvis-test")
vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
group = ec2.create_security_group(GroupName="jarvis-ssh", Description="ssh", VpcId=vpc)["GroupId"]
subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
print(f"{group} {subnet}")
"#;
    let made = boto3(moto, SETUP);
    let (group, subnet) = made.split_once(' ').expect("a group and a subnet");
    (
        format!(
            ", EC2_KEY_NAME: jarvis-test, EC2_SECURITY_GROUPS: '{group}', EC2_SUBNET: '{subnet}'"
        ),
        group.to_string(),
        subnet.to_string(),
    )
}

const DESIGN: &str = "instance:
  hostname: loki
  fqdn: loki.example.com
  provider: EC2
  guestid: Debian 12
  datacenter: Frankfurt
  size: 512
  sshpubkey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm9kIPLxbBzbChzl2iYsnf4LfYPhk7aeWbeKYw6rf+k admin@example.com
";

/// The home, and the security group and subnet the grant names.
fn home(w: &World) -> (Home, String, String) {
    let port = w.sshd.get("SSHD_PORT");
    let (account, group, subnet) = account_settings(&w.moto);
    let config = format!(
        "workers:
  modules:
    ec2: {{ env: {ec2} }}
    ssh: {{ env: {{ SSH_KEY_FILE: '{key}', SSH_USER: '{user}' }} }}
    dns: {{ env: {{ DNS_SERVER: '{dns}', DNS_TSIG_NAME: '{tsig_name}', DNS_TSIG_SECRET: '{tsig_secret}', DNS_ZONE: '{zone}' }} }}
    ldap: {{ env: {{ LDAP_URL: '{ldap_url}', LDAP_BASE: '{ldap_base}', LDAP_BIND_DN: '{bind_dn}', LDAP_PASSWORD: '{ldap_pw}' }} }}
    alertmanager: {{ env: {{ ALERTMANAGER_URL: '{am}' }} }}
pipelines:
  ec2-deploy:
    command: deploy
    providers: [EC2]
    stages:
{deploy}    on_failure:
      - {{ task: \"dns:remove_host\", idempotent: true }}
      - {{ task: \"ec2:delete\", idempotent: true, with: {{ poll_ms: 50 }} }}
  ec2-redeploy:
    command: redeploy
    providers: [EC2]
    stages:
{redeploy}    on_failure:
      - {{ task: \"ec2:delete\", idempotent: true, with: {{ poll_ms: 50 }} }}
      - {{ task: \"dns:remove_host\", idempotent: true }}
      - {{ task: \"alertmanager:unsilence\", idempotent: true }}
  ec2-destroy:
    command: destroy
    providers: [EC2]
    stages:
{destroy}roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        ec2 = ec2_env_with(
            &w.moto,
            w.moto.get("MOTO_URL"),
            w.moto.get("MOTO_SECRET_ACCESS_KEY"),
            &account,
        ),
        deploy = stages(DEPLOY, port),
        redeploy = stages(REDEPLOY, port),
        destroy = stages(DESTROY, port),
        key = w.sshd.get("SSHD_KEY"),
        user = w.sshd.get("SSHD_USER"),
        dns = w.bind.get("DNS_SERVER"),
        tsig_name = w.bind.get("DNS_TSIG_NAME"),
        tsig_secret = w.bind.get("DNS_TSIG_SECRET"),
        zone = w.bind.get("DNS_ZONE"),
        ldap_url = w.slapd.get("LDAP_URL"),
        ldap_base = w.slapd.get("LDAP_BASE"),
        bind_dn = w.slapd.get("LDAP_BIND_DN"),
        ldap_pw = w.slapd.get("LDAP_PASSWORD"),
        am = w.alertmanager.get("ALERTMANAGER_URL"),
    );
    let home = Home::new(&config);
    home.design("loki", DESIGN);
    (home, group, subnet)
}

/// moto's instances, read by a second client (boto3, which moto brings along) so that the
/// tests do not judge jarvis's EC2 client by itself.
fn instances(moto: &Server) -> Vec<Value> {
    const LIST: &str = r#"
import json, os, boto3
ec2 = boto3.client("ec2", region_name=os.environ["REGION"], endpoint_url=os.environ["URL"])
out = []
for reservation in ec2.describe_instances()["Reservations"]:
    for i in reservation["Instances"]:
        out.append({
            "id": i["InstanceId"],
            "state": i["State"]["Name"],
            "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
            "public": i.get("PublicIpAddress"),
            "private": i.get("PrivateIpAddress"),
            "token": i.get("ClientToken"),
            "key": i.get("KeyName"),
            "groups": [g["GroupId"] for g in i.get("SecurityGroups", [])],
            "subnet": i.get("SubnetId"),
            "type": i.get("InstanceType"),
            "image": i.get("ImageId"),
        })
print(json.dumps(out))
"#;
    serde_json::from_str(&boto3(moto, LIST)).expect("the listing is JSON")
}

/// moto's instances for host loki that still exist.
fn alive_for_loki(moto: &Server) -> Vec<Value> {
    instances(moto)
        .into_iter()
        .filter(|i| i["tags"]["jarvis:host"] == "loki" && i["state"] != "terminated")
        .collect()
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
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

#[test]
fn deploy_redeploy_and_destroy_on_ec2_end_to_end() {
    let Some(w) = world() else { return };
    let (home, group, subnet) = home(&w);
    let mut sh = home.shell();
    sh.ask(
        "deploy loki",
        "deploy #1 of loki queued (ec2-deploy pipeline, 7 stages)",
    );
    for (i, task) in DEPLOY.iter().enumerate() {
        sh.expect(&format!("loki deploy #1: stage {}/7 {task} started", i + 1));
    }
    sh.expect("loki deploy #1 succeeded in");

    let made = alive_for_loki(&w.moto);
    assert_eq!(made.len(), 1, "one instance: {made:?}");
    let instance = &made[0];
    assert_eq!(instance["state"], "running");
    assert_eq!(instance["tags"]["Name"], "loki");
    assert_eq!(instance["tags"]["jarvis:run"], "1");
    assert_eq!(
        instance["token"], "jarvis-loki-run-1",
        "the run's ClientToken"
    );
    // The operator's choices, none of them the design's.
    assert_eq!(instance["key"], "jarvis-test");
    assert_eq!(instance["type"], "t3.nano", "size 512");
    assert_eq!(instance["image"], AMI);
    assert_eq!(instance["groups"], serde_json::json!([group]));
    assert_eq!(instance["subnet"], subnet.as_str());
    let public = instance["public"].as_str().expect("a public address");
    let private = instance["private"].as_str().expect("a private address");
    assert_eq!(
        dig(&w, "A"),
        public,
        "the A record is the instance's address"
    );
    assert!(dig(&w, "SSHFP").lines().count() >= 2, "SSHFP records");
    let entry = ldapsearch(&w);
    assert!(
        entry.contains(&format!("ipHostNumber: {public}")),
        "{entry}"
    );

    assert_loopback_only(&home, 1, DEPLOY, &[public, private]);
    let configured = home.sql("SELECT line FROM log_lines WHERE run_id = 1 AND stage = 7");
    assert!(
        configured.iter().any(|l| l.contains("configured loki")),
        "{configured:?}"
    );

    // SPEC 4's redeploy: the old instance stopped and terminated, a new one in its place.
    sh.ask(
        "redeploy loki",
        "redeploy #2 of loki queued (ec2-redeploy pipeline, 12 stages)",
    );
    sh.expect("loki redeploy #2 succeeded in");
    let now = alive_for_loki(&w.moto);
    assert_eq!(now.len(), 1, "one instance: {now:?}");
    assert_ne!(now[0]["id"], instance["id"], "a new instance");
    assert_eq!(now[0]["tags"]["jarvis:run"], "2");
    let public = now[0]["public"].as_str().expect("a public address");
    let private = now[0]["private"].as_str().expect("a private address");
    assert_eq!(
        dig(&w, "A"),
        public,
        "the A record follows the new instance"
    );
    assert_loopback_only(&home, 2, REDEPLOY, &[public, private]);
    let shutdown = home
        .sql("SELECT line FROM log_lines WHERE run_id = 2 AND stage = 3")
        .join("\n");
    assert!(shutdown.contains("is stopped"), "{shutdown}");

    sh.ask(
        "destroy loki",
        "destroy #3 of loki queued (ec2-destroy pipeline, 6 stages)",
    );
    sh.expect("loki destroy #3 succeeded in");
    let log = sh.ask("log #3 100", "[");
    let transcript = sh.finish().join("\n");

    assert!(
        alive_for_loki(&w.moto).is_empty(),
        "the instance is terminated"
    );
    let all = instances(&w.moto);
    assert_eq!(all.len(), 2, "and no other was made: {all:?}");
    assert_eq!(dig(&w, "A"), "", "the A record is gone");
    assert!(
        !ldapsearch(&w).contains("cn: loki"),
        "the LDAP entry is gone"
    );

    // The secret key reached moto (it checked every signature) and nothing else.
    let secret = w.moto.get("MOTO_SECRET_ACCESS_KEY");
    for (what, text) in [("log", &log), ("transcript", &transcript)] {
        assert!(!text.contains(secret), "the AWS secret is in the {what}");
    }
    let stored = home.sql("SELECT line FROM log_lines").join("\n");
    assert!(
        !stored.contains(secret),
        "the AWS secret is in the stored log"
    );
    let clipboards = home.sql("SELECT clipboard FROM stage_runs").join("\n");
    assert!(!clipboards.is_empty() && !clipboards.contains(secret));
}

/// Every SSH stage of run `run` worked on 127.0.0.1 and never named one of moto's `addresses`.
fn assert_loopback_only(home: &Home, run: u32, tasks: &[&str], addresses: &[&str]) {
    for stage in ssh_stages(tasks) {
        let text = home
            .sql(&format!(
                "SELECT line FROM log_lines WHERE run_id = {run} AND stage = {stage}"
            ))
            .join("\n");
        assert!(
            text.contains("127.0.0.1"),
            "run {run} stage {stage}:\n{text}"
        );
        for address in addresses {
            assert!(
                !text.contains(address),
                "run {run} stage {stage} named {address}:\n{text}"
            );
        }
    }
}

#[test]
fn a_wrong_secret_key_fails_the_deploy_with_one_line() {
    let Some(moto) = Server::start("moto").unwrap() else {
        return;
    };
    let wrong = "Wr0ngSecretKeyForTheTestsOnlyWr0ngSecretK";
    let home = Home::new(&format!(
        "workers:
  modules:
    ec2: {{ env: {ec2} }}
pipelines:
  ec2-deploy:
    command: deploy
    providers: [EC2]
    stages:
      - {{ task: \"ec2:deploy\", idempotent: true, retries: 2 }}
      - {{ task: \"ec2:wait\", idempotent: true, with: {{ poll_ms: 50 }} }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        ec2 = ec2_env(&moto, moto.get("MOTO_URL"), wrong),
    ));
    home.design("loki", DESIGN);
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    let failed = sh.expect("FAILED");
    let transcript = sh.finish().join("\n");
    assert!(
        failed.contains("FAILED at stage 1/2 ec2:deploy"),
        "{failed}"
    );
    assert!(
        failed.contains("EC2 refused the credentials on DescribeInstances")
            && failed.contains("AuthFailure")
            && failed.contains("AWS_SECRET_ACCESS_KEY"),
        "says what failed and why: {failed}"
    );
    assert!(!transcript.contains(wrong), "the key is never shown");
    // A refusal of the credentials is not worth the stage's retries.
    let attempts = home.sql("SELECT COUNT(*) FROM stage_runs WHERE run_id = 1");
    assert_eq!(attempts, vec!["1"], "tried once");
    assert!(alive_for_loki(&moto).is_empty());
}

#[test]
fn kill_9_during_ec2_deploy_then_a_restart_leaves_exactly_one_instance() {
    let Some(moto) = Server::start("moto").unwrap() else {
        return;
    };
    // moto ignores ClientToken, so only the look-up by tags keeps the re-run from making a
    // second instance. The proxy holds back RunInstances' answer: jarvis dies after the
    // instance was made and before the worker heard of it, the worst moment.
    let proxy = StallingProxy::start(moto.get("MOTO_PORT"), "Action=RunInstances");
    let home = Home::new(&format!(
        "workers:
  modules:
    ec2: {{ env: {ec2} }}
pipelines:
  ec2-deploy:
    command: deploy
    providers: [EC2]
    stages:
      - {{ task: \"ec2:deploy\", idempotent: true }}
      - {{ task: \"ec2:wait\", idempotent: true, with: {{ poll_ms: 50 }} }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        ec2 = ec2_env(&moto, &proxy.url, moto.get("MOTO_SECRET_ACCESS_KEY")),
    ));
    home.design("loki", DESIGN);
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    proxy
        .stalled
        .recv_timeout(support::PATIENCE)
        .expect("RunInstances reached moto");
    assert_eq!(alive_for_loki(&moto).len(), 1, "moto made the instance");
    sh.kill9();

    let mut sh = Shell::start(&home.config());
    sh.expect("loki deploy #1 succeeded");
    sh.finish();
    let made = alive_for_loki(&moto);
    assert_eq!(made.len(), 1, "exactly one instance: {made:?}");
    assert_eq!(made[0]["state"], "running");
    assert_eq!(
        proxy.matched.load(Ordering::SeqCst),
        1,
        "one RunInstances: the re-run found the instance by its tags"
    );
    let log = home
        .sql("SELECT line FROM log_lines WHERE run_id = 1 AND stage = 1")
        .join("\n");
    assert!(log.contains("was made by this run before"), "{log}");
}

/// A two-stage deploy against moto through a proxy with `fault` on `needle`.
fn faulty_deploy(moto: &Server, needle: &'static str, fault: Fault) -> (Home, StallingProxy) {
    let proxy = StallingProxy::with_fault(moto.get("MOTO_PORT"), needle, fault);
    let home = Home::new(&format!(
        "workers:
  modules:
    ec2: {{ env: {ec2} }}
pipelines:
  ec2-deploy:
    command: deploy
    providers: [EC2]
    stages:
      - {{ task: \"ec2:deploy\", idempotent: true }}
      - {{ task: \"ec2:wait\", idempotent: true, with: {{ poll_ms: 50 }} }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        ec2 = ec2_env(moto, &proxy.url, moto.get("MOTO_SECRET_ACCESS_KEY")),
    ));
    home.design("loki", DESIGN);
    (home, proxy)
}

#[test]
fn throttling_is_waited_out_and_a_quota_fails_in_one_line() {
    let Some(moto) = Server::start("moto").unwrap() else {
        return;
    };
    // RunInstances throttled twice: the worker backs off and tries again by itself.
    let (home, proxy) = faulty_deploy(
        &moto,
        "Action=RunInstances",
        Fault::Refuse(2, 503, "RequestLimitExceeded"),
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    sh.finish();
    assert_eq!(
        proxy.matched.load(Ordering::SeqCst),
        1,
        "one RunInstances reached moto"
    );
    assert_eq!(alive_for_loki(&moto).len(), 1);
    let log = home
        .sql("SELECT line FROM log_lines WHERE run_id = 1 AND stage = 1")
        .join("\n");
    assert!(
        log.contains("RequestLimitExceeded") && log.contains("trying again"),
        "{log}"
    );

    // A quota: one line that says so, and no retry.
    let Some(moto) = Server::start("moto").unwrap() else {
        return;
    };
    let (home, _proxy) = faulty_deploy(
        &moto,
        "Action=RunInstances",
        Fault::Refuse(usize::MAX, 400, "InstanceLimitExceeded"),
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    let failed = sh.expect("FAILED");
    sh.finish();
    assert!(
        failed.contains("FAILED at stage 1/2 ec2:deploy")
            && failed.contains("an account quota is reached (InstanceLimitExceeded"),
        "{failed}"
    );
    assert!(alive_for_loki(&moto).is_empty());
}

/// What the proxy does to the requests whose body contains its needle.
#[derive(Clone, Copy)]
enum Fault {
    /// The first one reaches moto, but its answer is never delivered.
    Stall,
    /// The first N never reach moto and are answered with this status and error code.
    Refuse(usize, u16, &'static str),
}

/// An HTTP proxy on 127.0.0.1 in front of moto that forwards everything, except requests
/// whose body contains `needle`, to which it does its `Fault`. It says on `stalled` when it
/// holds an answer back, and counts every matching request that reached moto.
struct StallingProxy {
    url: String,
    stalled: Receiver<()>,
    matched: Arc<AtomicUsize>,
}

impl StallingProxy {
    fn start(upstream_port: &str, needle: &'static str) -> StallingProxy {
        StallingProxy::with_fault(upstream_port, needle, Fault::Stall)
    }

    fn with_fault(upstream_port: &str, needle: &'static str, fault: Fault) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = format!("127.0.0.1:{upstream_port}");
        let (tx, stalled) = channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let matched = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = matched.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let upstream = upstream.clone();
                let tx = tx.clone();
                let counter = counter.clone();
                let refused = refused.clone();
                std::thread::spawn(move || {
                    let rule = Rule {
                        needle,
                        fault,
                        stall: &tx,
                        matched: &counter,
                        refused: &refused,
                    };
                    let _ = proxy_connection(client, &upstream, &rule);
                });
            }
        });
        StallingProxy {
            url,
            stalled,
            matched,
        }
    }
}

type Once = Arc<Mutex<Option<Sender<()>>>>;

struct Rule<'a> {
    needle: &'a str,
    fault: Fault,
    stall: &'a Once,
    matched: &'a AtomicUsize,
    refused: &'a AtomicUsize,
}

fn proxy_connection(client: TcpStream, upstream: &str, rule: &Rule) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut from_server = BufReader::new(server.try_clone()?);
    loop {
        let Some(request) = read_message(&mut from_client)? else {
            return Ok(());
        };
        let matches = String::from_utf8_lossy(&request).contains(rule.needle);
        if matches
            && let Fault::Refuse(times, status, code) = rule.fault
            && rule.refused.fetch_add(1, Ordering::SeqCst) < times
        {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>made up by the test's proxy</Message></Error></Errors><RequestID>test</RequestID></Response>"
            );
            let answer = format!(
                "HTTP/1.1 {status} Refused\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            to_client.write_all(answer.as_bytes())?;
            continue;
        }
        server.write_all(&request)?;
        let Some(response) = read_message(&mut from_server)? else {
            return Ok(());
        };
        if matches {
            rule.matched.fetch_add(1, Ordering::SeqCst);
        }
        if matches && matches!(rule.fault, Fault::Stall) {
            let first = rule.stall.lock().ok().and_then(|mut once| once.take());
            if let Some(tx) = first {
                let _ = tx.send(());
                // Hold the connection, answering nothing, until the worker is killed.
                let mut rest = Vec::new();
                let _ = from_client.read_to_end(&mut rest);
                return Ok(());
            }
        }
        to_client.write_all(&response)?;
    }
}

/// One HTTP/1.1 message (head and a `Content-Length` body); `None` at end of input.
fn read_message(input: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        message.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    input.read_exact(&mut body)?;
    message.extend_from_slice(&body);
    Ok(Some(message))
}
