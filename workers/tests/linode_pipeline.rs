//! The `linode` worker against the Linode API stand-in (a process), and the pipeline
//! `linode:deploy → linode:wait → ssh:wait → ssh:fingerprints → ssh:run` run stage by stage
//! against the stand-in and real sshds, directly and through a jump host.

mod hosts_common;

use hosts_common::*;
use jarvis_standins::openapi::Spec;
use jarvis_testbed::Server;
use serde_json::{Value, json};

/// Runs the stages in order, each on the clipboard the one before printed.
fn pipeline(stages: &[&str], mut clipboard: Mapping, env: &[(&str, String)]) -> Mapping {
    for stage in stages {
        clipboard = worker(stage, &clipboard, env).ok(stage);
    }
    clipboard
}

#[test]
fn linode_to_ssh_pipeline_direct_and_through_a_jump_host() {
    let Some(target) = Server::start("sshd").unwrap() else {
        return;
    };
    let Some(jump) = Server::start("sshd").unwrap() else {
        return;
    };
    let standin = linode_standin(&[]);
    // One operator key for both: the jump host lets in the target's client key too.
    let key = target.get("SSHD_KEY").to_string();
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    let authorized = jump.dir().join("authorized_keys");
    let mut text = std::fs::read_to_string(&authorized).unwrap();
    text.push_str(&public);
    std::fs::write(&authorized, text).unwrap();

    let mut env = linode_env(&standin, "101");
    env.push(("SSH_KEY_FILE", key));
    let mut clipboard = design("loki", "101");
    // The pipeline's settings: the "instance" answers on 127.0.0.1, at the sshd's port.
    set(
        &mut clipboard,
        "ssh.port",
        json!(target.get("SSHD_PORT").parse::<u16>().unwrap()),
    );
    set(&mut clipboard, "ssh.user", json!(target.get("SSHD_USER")));
    set(&mut clipboard, "ssh.poll_ms", json!(50));
    set(
        &mut clipboard,
        "ssh.commands",
        json!([
            ["echo", "configuring {instance.hostname} at {instance.ip}"],
            "uname -s"
        ]),
    );

    let done = pipeline(
        &[
            "linode:deploy",
            "linode:wait",
            "ssh:wait",
            "ssh:fingerprints",
        ],
        clipboard,
        &env,
    );
    assert_eq!(get(&done, "linode.status"), &json!("running"));
    assert_eq!(get(&done, "instance.ip"), &json!("127.0.0.1"));
    assert!(
        get(&done, "linode.ipv6")
            .as_str()
            .unwrap()
            .starts_with("2001:db8::")
    );
    assert_eq!(get(&done, "ssh.known_hosts").as_array().unwrap().len(), 2);
    assert_eq!(get(&done, "ssh.sshfp").as_array().unwrap().len(), 2);

    let ran = worker("ssh:run", &done, &env);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("127.0.0.1| configuring loki at 127.0.0.1")
    );
    assert!(ran.stderr.contains("127.0.0.1| Linux"));

    // The same run through the jump host: a direct-tcpip channel from it to the target.
    let mut via = ran.clipboard.clone();
    let jump_port: u16 = jump.get("SSHD_PORT").parse().unwrap();
    set(
        &mut via,
        "ssh.jump",
        json!([{"host": "127.0.0.1", "port": jump_port, "user": jump.get("SSHD_USER")}]),
    );
    let via = pipeline(&["ssh:wait", "ssh:run"], via, &env);
    let pins = get(&via, "ssh.known_hosts").as_array().unwrap();
    assert!(
        pins.iter().any(|p| p
            .as_str()
            .unwrap()
            .starts_with(&format!("[127.0.0.1]:{jump_port} "))),
        "the jump host is pinned at first contact: {pins:?}"
    );
    // Without the jump host the route is broken: the run really went through it.
    jump.stop(None).unwrap();
    let broken = worker("ssh:run", &via, &env);
    assert_eq!(broken.code, 75, "{}", broken.stderr);
    assert!(
        broken
            .error()
            .unwrap()
            .starts_with(&format!("127.0.0.1:{jump_port}: "))
    );
}

#[test]
fn deploy_run_again_after_a_crash_leaves_one_instance() {
    // Small pages and no server-side filter: the worker must page through and check labels.
    let standin = linode_standin(&["--page-size", "2", "--ignore-filter"]);
    for (i, other) in ["alpha", "bravo", "charlie", "delta", "echo"]
        .iter()
        .enumerate()
    {
        let env = linode_env(&standin, &format!("{}", 900 + i));
        worker("linode:deploy", &design(other, "x"), &env).ok("deploy another host");
    }
    let env = linode_env(&standin, "202");
    let clipboard = design("loki", "202");

    // The create goes through, but its answer is lost (a crash or a cut connection).
    standin
        .fail_next_matching(
            1,
            502,
            None,
            true,
            Some("POST"),
            Some("/v4/linode/instances"),
        )
        .unwrap();
    let crashed = worker("linode:deploy", &clipboard, &env);
    assert_eq!(
        crashed.code, 75,
        "a 5xx is worth a retry: {}",
        crashed.stderr
    );
    assert!(
        crashed
            .error()
            .unwrap()
            .starts_with("Linode API POST /linode/instances failed (502")
    );

    // Run again on the clipboard stored before the crash: it finds what it made.
    let first = worker("linode:deploy", &clipboard, &env).ok("deploy after the crash");
    let second = worker("linode:deploy", &first, &env).ok("deploy once more");
    assert_eq!(get(&first, "linode.id"), get(&second, "linode.id"));
    let instances = standin.instances().unwrap();
    let lokis: Vec<&Value> = instances.iter().filter(|i| i["label"] == "loki").collect();
    assert_eq!(lokis.len(), 1, "{instances:#?}");
    assert_eq!(instances.len(), 6);
    assert_eq!(lokis[0]["id"], *get(&first, "linode.id"));
    let tags = lokis[0]["tags"].as_array().unwrap();
    assert!(tags.contains(&json!("jarvis-run-202")));
    let listed_pages = standin
        .requests()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"] == "/v4/linode/instances")
        .filter(|r| {
            r["query"]
                .as_array()
                .unwrap()
                .contains(&json!(["page", "3"]))
        })
        .count();
    assert!(listed_pages >= 2, "the worker read every page");

    // Another run must not take over an instance it did not make.
    let other = worker("linode:deploy", &clipboard, &linode_env(&standin, "303"));
    assert_eq!(other.code, 1);
    let error = other.error().unwrap();
    assert!(
        error.starts_with("a Linode labelled 'loki' already exists (id "),
        "{error}"
    );
    assert_eq!(standin.instances().unwrap().len(), 6);
}

#[test]
fn every_linode_request_is_one_the_published_api_defines() {
    let standin = linode_standin(&[]);
    let env = linode_env(&standin, "404");
    let clipboard = design("loki", "404");

    let with_password = worker("linode:password", &clipboard, &env).ok("linode:password");
    let password = get(&with_password, "linode.root_password")
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 32);
    let deployed = worker("linode:deploy", &with_password, &env);
    assert_eq!(deployed.code, 0, "{}", deployed.stderr);
    assert_eq!(
        get(&deployed.clipboard, "linode.root_password"),
        &json!(password)
    );
    assert!(
        !deployed.stderr.contains(&password),
        "the password is never logged"
    );

    // Throttled twice: the worker waits as Retry-After says, then goes on.
    standin.fail_next(2, 429, Some(1), false).unwrap();
    let started = std::time::Instant::now();
    let waited = worker("linode:wait", &deployed.clipboard, &env);
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        waited
            .stderr
            .contains("progress: Linode API rate limit on GET /linode/instances")
    );

    let stages = [
        "linode:shutdown",
        "linode:rebuild",
        "linode:wait",
        "linode:delete",
    ];
    let deleted = pipeline(&stages, waited.clipboard, &env);
    assert_eq!(get(&deleted, "linode.id"), &Value::Null);
    assert!(standin.instances().unwrap().is_empty());
    let again = worker("linode:delete", &deleted, &env).ok("delete what is gone");
    assert_eq!(get(&again, "linode.id"), &Value::Null);

    // Refusals come back as one line with the API's reasons.
    let mut bad = clipboard.clone();
    set(&mut bad, "instance.datacenter", json!("mars-1"));
    let refused = worker("linode:deploy", &bad, &env);
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.error().unwrap(),
        "Linode API refused POST /linode/instances (400 Bad Request): region: region is not valid"
    );
    let wrong_token = worker(
        "linode:wait",
        &deployed.clipboard,
        &[("LINODE_TOKEN", "nope".into()), env[1].clone()],
    );
    assert_eq!(wrong_token.code, 1);
    assert!(
        wrong_token
            .error()
            .unwrap()
            .starts_with("Linode API refused the token")
    );
    let no_token = worker("linode:deploy", &clipboard, &[env[1].clone()]);
    assert!(no_token.error().unwrap().starts_with("no LINODE_TOKEN"));

    let Some(path) = linode_openapi() else { return };
    let spec = Spec::load(&path).unwrap();
    let requests = standin.requests().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for request in &requests {
        match spec.check_recorded(request) {
            Ok(op) => {
                seen.insert(op.operation_id.clone());
            }
            Err(why) => panic!("unpublished request: {why}\n{request:#}"),
        }
    }
    for op in [
        "get-linode-instances",
        "post-linode-instance",
        "get-linode-instance",
        "post-shutdown-linode-instance",
        "post-rebuild-linode-instance",
        "delete-linode-instance",
    ] {
        assert!(seen.contains(op), "the worker never used {op}: {seen:?}");
    }
}
