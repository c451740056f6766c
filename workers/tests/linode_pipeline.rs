//! The `linode` worker against the Linode API stand-in (a process), and the pipeline
//! `linode:deploy → linode:wait → ssh:wait → ssh:fingerprints → ssh:run` run stage by stage
//! against the stand-in and real sshds, directly and through a jump host.

mod hosts_common;

use hosts_common::*;
use jarvis_standins::openapi::Spec;
use jarvis_testbed::Server;
use serde_json::{Value, json};

/// Runs the stages in order as the engine does, each with its parameters, on the clipboard
/// the one before printed.
fn pipeline(stages: &[(&str, Value)], mut clipboard: Mapping, env: &[(&str, String)]) -> Mapping {
    for (task, with) in stages {
        clipboard = stage(task, with.clone(), &clipboard, env).ok(task);
    }
    clipboard
}

/// The parameters of the linode stages that wait.
fn quick() -> Value {
    json!({"poll_ms": 50, "wait_seconds": 30})
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
    let secrets = Secrets::new();
    // One operator key for both: the jump host lets in the target's client key too.
    let key = target.get("SSHD_KEY").to_string();
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    let authorized = jump.dir().join("authorized_keys");
    let mut text = std::fs::read_to_string(&authorized).unwrap();
    text.push_str(&public);
    std::fs::write(&authorized, text).unwrap();

    let mut env = linode_env(&standin, "101");
    env.push(("SSH_KEY_FILE", key));
    env.push(secrets.grant());
    let clipboard = design("loki", "101");
    // The pipeline's settings: the "instance" answers on 127.0.0.1 (jarvis.target from
    // linode), and its sshd on the testbed's port.
    let port: u16 = target.get("SSHD_PORT").parse().unwrap();
    let ssh = json!({"port": port, "user": target.get("SSHD_USER"), "poll_ms": 50});
    let learning = {
        let mut w = ssh.clone();
        w["host_key"] = json!("learn");
        w
    };
    let done = pipeline(
        &[
            ("linode:deploy", Value::Null),
            ("linode:wait", quick()),
            ("ssh:wait", learning.clone()),
            ("ssh:fingerprints", learning),
        ],
        clipboard,
        &env,
    );
    assert_eq!(get(&done, "linode.status"), &json!("running"));
    assert_eq!(get(&done, "instance.ip"), &json!("127.0.0.1"));
    assert_eq!(
        get(&done, "jarvis.target"),
        &json!({"host": "127.0.0.1", "port": 22})
    );
    assert!(
        get(&done, "linode.ipv6")
            .as_str()
            .unwrap()
            .starts_with("2001:db8::")
    );
    assert_eq!(get(&done, "jarvis.host_keys").as_array().unwrap().len(), 2);
    assert_eq!(get(&done, "ssh.sshfp").as_array().unwrap().len(), 2);
    let (password_name, password) = secrets.lines().pop().unwrap();
    assert_eq!(password_name, "root_password");
    assert!(!holds(&done, &password), "no password on the clipboard");

    let mut run = ssh.clone();
    run["commands"] = json!([
        ["echo", "configuring {instance.hostname} at {instance.ip}"],
        "uname -s"
    ]);
    let ran = stage("ssh:run", run.clone(), &done, &env);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("127.0.0.1| configuring loki at 127.0.0.1")
    );
    assert!(ran.stderr.contains("127.0.0.1| Linux"));

    // The same run through the jump host: a direct-tcpip channel from it to the target. The
    // jump host's key is pinned in the stage's parameters.
    let jump_port: u16 = jump.get("SSHD_PORT").parse().unwrap();
    let (jump_key, _) = keygen_fingerprint(&format!(
        "{}/ssh_host_ed25519_key.pub",
        jump.dir().display()
    ));
    let hop = json!({"host": "127.0.0.1", "port": jump_port, "user": jump.get("SSHD_USER")});
    let mut via = ssh.clone();
    via["jump"] = json!([hop]);
    let unpinned = stage("ssh:wait", via.clone(), &ran.clipboard, &env);
    assert_eq!(unpinned.code, 1);
    assert!(
        unpinned.error().unwrap().starts_with(&format!(
            "with.jump[0] (127.0.0.1:{jump_port}) has no host_key: "
        )),
        "{}",
        unpinned.stderr
    );
    let mut wrong = via.clone();
    wrong["jump"][0]["host_key"] = json!(get(&done, "jarvis.host_keys")[0]["fingerprint"]);
    let mismatch = stage("ssh:wait", wrong, &ran.clipboard, &env);
    assert_eq!(mismatch.code, 1, "{}", mismatch.stderr);
    assert!(
        mismatch.error().unwrap().starts_with(&format!(
            "jump host 127.0.0.1:{jump_port}'s host key is not the pinned one: "
        )),
        "{}",
        mismatch.stderr
    );
    assert!(mismatch.error().unwrap().contains(&jump_key));

    via["jump"][0]["host_key"] = json!(jump_key);
    let mut via_run = via.clone();
    via_run["commands"] = run["commands"].clone();
    let through = pipeline(
        &[("ssh:wait", via.clone()), ("ssh:run", via_run.clone())],
        ran.clipboard.clone(),
        &env,
    );
    // Without the jump host the route is broken: the run really went through it.
    jump.stop(None).unwrap();
    let broken = stage("ssh:run", via_run, &through, &env);
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
        let mut env = linode_env(&standin, &format!("{}", 900 + i));
        env.push(("JARVIS_SECRETS", "/dev/null".to_string()));
        worker("linode:deploy", &design(other, "x"), &env).ok("deploy another host");
    }
    let secrets = Secrets::new();
    let mut env = linode_env(&standin, "202");
    env.push(secrets.grant());
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

    // The password went to jarvis before the create; the retry gets it back.
    let lines = secrets.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, "root_password");
    env.push(("JARVIS_SECRET_ROOT_PASSWORD", lines[0].1.clone()));

    // Run again on the clipboard stored before the crash: it finds what it made.
    let rerun = worker("linode:deploy", &clipboard, &env);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert!(
        !rerun.stderr.contains("root password"),
        "the password was not lost: {}",
        rerun.stderr
    );
    assert_eq!(secrets.lines().len(), 1);
    let first = rerun.clipboard;
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
    let mut env = linode_env(&standin, "303");
    env.push(("JARVIS_SECRETS", "/dev/null".to_string()));
    let other = worker("linode:deploy", &clipboard, &env);
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

    let secrets = Secrets::new();
    let mut env = env;
    env.push(secrets.grant());

    // The password goes out on the secret channel, never on the clipboard.
    let made = worker("linode:password", &clipboard, &env);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let lines = secrets.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "root_password");
    let password = lines[0].1.clone();
    assert_eq!(password.len(), 32);
    assert!(!holds(&made.clipboard, &password));
    assert!(
        !made.stderr.contains(&password),
        "the password is never logged"
    );

    // Later stages of the run get it by environment, and use it instead of making another.
    env.push(("JARVIS_SECRET_ROOT_PASSWORD", password.clone()));
    let deployed = worker("linode:deploy", &made.clipboard, &env);
    assert_eq!(deployed.code, 0, "{}", deployed.stderr);
    assert_eq!(secrets.lines().len(), 1, "no second password");
    assert!(!holds(&deployed.clipboard, &password));
    assert!(
        !deployed.stderr.contains(&password),
        "the password is never logged"
    );
    let created = standin
        .requests()
        .unwrap()
        .into_iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/v4/linode/instances")
        .unwrap();
    assert_eq!(created["body"]["root_pass"], json!(password), "{created:#}");

    // Without a secret channel, a worker that makes a secret says how to give it one.
    let lonely = worker(
        "linode:password",
        &clipboard,
        &[env[0].clone(), env[1].clone()],
    );
    assert_eq!(lonely.code, 1);
    assert_eq!(
        lonely.error().unwrap(),
        "no secret channel: JARVIS_SECRETS is not set (run by hand? set JARVIS_SECRETS=/dev/stderr)"
    );

    // Throttled twice: the worker waits as Retry-After says, then goes on.
    standin.fail_next(2, 429, Some(1), false).unwrap();
    let started = std::time::Instant::now();
    let waited = stage("linode:wait", quick(), &deployed.clipboard, &env);
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        waited
            .stderr
            .contains("progress: Linode API rate limit on GET /linode/instances")
    );

    let stages = [
        ("linode:shutdown", quick()),
        ("linode:rebuild", Value::Null),
        ("linode:wait", quick()),
        ("linode:delete", Value::Null),
    ];
    let deleted = pipeline(&stages, waited.clipboard, &env);
    assert_eq!(get(&deleted, "jarvis.target"), &Value::Null);
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
