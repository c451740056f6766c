//! Webhooks, schedules and named actions end to end: the real `jarvis run` with its HTTP
//! server on a free loopback port, deliveries signed as GitHub and GitLab sign them, and
//! `run ACTION on HOST` over the API as people with and without the action.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use jarvis::triggers::webhook::github_signature;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use support::{Daemon, Home, JARVIS, wait_until};

/// GitHub's published example (docs.github.com, "Validating webhook deliveries").
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_PAYLOAD: &str = "Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const GITLAB_SECRET: &str = "gitlab-token-0123456789";

fn config(with_hooks: bool) -> String {
    let text = format!(
        "pipelines:
  site:
    providers: [local]
    stages:
      - {{ task: \"local:check\", idempotent: true }}
      - {{ task: \"local:step\", idempotent: true }}
workers:
  folders: [{workers}]
actions:
  reload:
    description: reload the web server gracefully
    role: admin
    stages:
      - task: reloader:reload
        with: {{ script: \"systemctl reload nginx\" }}
    lines: 3
groups:
  web: {{ hosts: [web1, web2, web3], max_parallel: 2 }}
roles:
  people:
    ci: []
    alice: []
    dev: []
    bob: []
  grants:
    - {{ person: ci, roles: [deployer] }}
    - {{ person: alice, roles: [deployer] }}
    - {{ person: dev, actions: [reload] }}
    - {{ person: bob, roles: [viewer] }}
    - {{ console: \"*\", roles: [admin] }}
hooks:
  site:
    forge: github
    secret: ${{SITE_SECRET}}
    person: ci
    max_body: 4096
    triggers:
      - {{ repository: acme/site, event: push, pattern: main, run: \"deploy web1\" }}
      - {{ repository: acme/site, event: push, pattern: \"release-*\", run: \"deploy web2\" }}
      - {{ repository: acme/site, event: push, pattern: fleet, run: \"deploy group:web\" }}
  lab:
    forge: gitlab
    secret: ${{LAB_SECRET}}
    person: ci
    triggers:
      - {{ repository: acme/site, event: tag, pattern: \"v*\", run: \"deploy web3\" }}
schedules:
  nightly:
    cron: \"0 3 * * *\"
    timezone: Europe/Berlin
    run: redeploy web1
    person: ci
http:
  listen: 127.0.0.1:0
",
        workers = support::test_workers().display()
    );
    if with_hooks {
        return text;
    }
    // Without the hooks (and so without their secrets' variables), for `jarvis shell`.
    let start = text.find("hooks:\n").expect("a hooks section");
    let end = text.find("schedules:\n").expect("a schedules section");
    format!("{}{}", &text[..start], &text[end..])
}

fn home() -> Home {
    home_with(true)
}

fn home_with(hooks: bool) -> Home {
    let home = Home::new(&config(hooks));
    for host in ["web1", "web2", "web3"] {
        home.design(
            host,
            &format!("instance:\n  hostname: {host}\n  provider: local\ndemo:\n  step_ms: 50\n"),
        );
    }
    home
}

/// jarvis with the hooks' secrets in its environment, where the configuration reads them.
fn jarvis() -> Command {
    let mut cmd = Command::new(JARVIS);
    cmd.env("SITE_SECRET", GITHUB_SECRET)
        .env("LAB_SECRET", GITLAB_SECRET)
        .env("NO_COLOR", "1");
    cmd
}

fn token(home: &Home, person: &str) -> String {
    support::token_with(
        home,
        person,
        &[
            ("SITE_SECRET", GITHUB_SECRET),
            ("LAB_SECRET", GITLAB_SECRET),
        ],
    )
}

/// `jarvis run` with the hooks' secrets in its environment, where the configuration reads
/// them.
fn daemon(home: &Home) -> Daemon {
    Daemon::start_with(
        home,
        &[
            ("SITE_SECRET", GITHUB_SECRET),
            ("LAB_SECRET", GITLAB_SECRET),
        ],
    )
}

fn client() -> Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a reqwest client")
}

fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().expect("jarvis answers");
    let status = res.status();
    let body = res.json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

fn github(
    d: &Daemon,
    event: &str,
    delivery: &str,
    body: &str,
    signature: &str,
) -> (StatusCode, Value) {
    send(
        client()
            .post(d.url("/hooks/site"))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body.to_string()),
    )
}

fn runs(home: &Home) -> usize {
    home.sql("SELECT count(*) FROM runs")[0].parse().unwrap()
}

fn push(git_ref: &str, commit: &str) -> String {
    json!({
        "ref": git_ref,
        "after": commit,
        "repository": { "full_name": "acme/site" },
        "pusher": { "name": "alice" },
    })
    .to_string()
}

#[test]
fn github_deliveries_are_verified_deduplicated_and_queue_their_deploy() {
    let home = home();
    let d = daemon(&home);

    // GitHub's documented example: this key and payload sign to this value, and jarvis
    // accepts a delivery signed so (a ping, answered; nothing queued).
    assert_eq!(
        github_signature(GITHUB_SECRET.as_bytes(), GITHUB_PAYLOAD.as_bytes()),
        GITHUB_SIGNATURE
    );
    let (status, body) = github(&d, "ping", "ping-1", GITHUB_PAYLOAD, GITHUB_SIGNATURE);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "pong");

    // A push to main, signed: the configured deploy is queued, and the answer names it.
    let commit = "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49";
    let main = push("refs/heads/main", commit);
    let signature = github_signature(GITHUB_SECRET.as_bytes(), main.as_bytes());
    let (status, body) = github(&d, "push", "d-1", &main, &signature);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let queued = body["queued"].as_array().expect("a list of runs");
    assert_eq!(queued.len(), 1, "{body}");
    let run = queued[0]["run"].as_i64().expect("a run id");
    assert!(
        queued[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("deploy #{run} of web1 queued"))),
        "{body}"
    );

    // The run records its trigger and who it acted as; its announcement tells it.
    let alice = token(&home, "alice");
    let (_, json) = send(
        client()
            .get(d.url(&format!("/api/v1/runs/{run}")))
            .bearer_auth(&alice),
    );
    assert_eq!(json["requester_identity"], "trigger:hook.site:ci", "{json}");
    assert_eq!(json["trigger"]["by"], "push");
    assert_eq!(json["trigger"]["repository"], "acme/site");
    assert_eq!(json["trigger"]["ref"], "refs/heads/main");
    assert_eq!(json["trigger"]["commit"], commit);
    let page = client()
        .get(d.url(&format!("/runs/{run}")))
        .bearer_auth(&alice)
        .send()
        .expect("the run's page answers")
        .text()
        .unwrap_or_default();
    assert!(
        page.contains("by push of acme/site refs/heads/main @ 3f2a1c0d9e8b"),
        "{page}"
    );
    let announced = home.sql(&format!(
        "SELECT body FROM events WHERE run_id = {run} AND kind = 'triggered'"
    ));
    assert!(
        announced.iter().any(|b| b.contains(&format!(
            "deploy #{run} of web1 for acme/site@3f2a1c0 by push"
        ))),
        "{announced:?}"
    );
    let audit = home.sql("SELECT identity, person, command FROM audit");
    assert!(
        audit
            .iter()
            .any(|a| a == "trigger:hook.site:ci|ci|deploy web1"),
        "{audit:?}"
    );
    wait_until("the pushed deploy succeeds", || {
        home.sql(&format!("SELECT state FROM runs WHERE id = {run}")) == ["succeeded"]
    });
    assert_eq!(runs(&home), 1);

    // The same delivery again (GitHub redelivers): nothing queued.
    let (status, body) = github(&d, "push", "d-1", &main, &signature);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["queued"], json!([]));
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("handled before")
    );

    // A wrong signature, a signature of another body, none at all: 401, nothing queued.
    let wrong = github_signature(b"not the secret", main.as_bytes());
    assert_eq!(
        github(&d, "push", "d-2", &main, &wrong).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        github(&d, "push", "d-3", &main, GITHUB_SIGNATURE).0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = send(
        client()
            .post(d.url("/hooks/site"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "d-4")
            .body(main.clone()),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A body over the hook's max_body (4096): 413, nothing queued — even when signed.
    let big = push("refs/heads/main", commit).replace("alice", &"a".repeat(5000));
    let big_sig = github_signature(GITHUB_SECRET.as_bytes(), big.as_bytes());
    let (status, body) = github(&d, "push", "d-5", &big, &big_sig);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // An event no trigger can match, an unknown hook, a branch no trigger names.
    let other = github_signature(GITHUB_SECRET.as_bytes(), b"{}");
    assert_eq!(
        github(&d, "issues", "d-6", "{}", &other).0,
        StatusCode::BAD_REQUEST
    );
    let (status, _) = send(client().post(d.url("/hooks/nope")).body("{}"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let dev = push("refs/heads/dev", commit);
    let dev_sig = github_signature(GITHUB_SECRET.as_bytes(), dev.as_bytes());
    let (status, body) = github(&d, "push", "d-7", &dev, &dev_sig);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("no trigger matches")
    );
    assert_eq!(runs(&home), 1, "only the first push queued a run");

    // A delivery id is kept: after a restart the same delivery still queues nothing.
    drop(d);
    let d = daemon(&home);
    let (status, body) = github(&d, "push", "d-1", &main, &signature);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(runs(&home), 1);

    // A trigger may start a rollout: each of its runs records the push and tells of it.
    let fleet = push("refs/heads/fleet", commit);
    let fleet_sig = github_signature(GITHUB_SECRET.as_bytes(), fleet.as_bytes());
    let (status, body) = github(&d, "push", "d-8", &fleet, &fleet_sig);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        body["queued"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("rollout #1 of group web started")),
        "{body}"
    );
    wait_until("the pushed rollout finishes", || {
        home.sql("SELECT state FROM rollouts WHERE id = 1") == ["succeeded"]
    });
    let children = home.sql("SELECT id FROM runs WHERE rollout_id = 1 ORDER BY id");
    assert_eq!(children.len(), 3, "{children:?}");
    for child in &children {
        let (_, json) = send(
            client()
                .get(d.url(&format!("/api/v1/runs/{child}")))
                .bearer_auth(&alice),
        );
        assert_eq!(json["trigger"]["ref"], "refs/heads/fleet", "{json}");
        assert_eq!(json["trigger"]["commit"], commit, "{json}");
        let told = home.sql(&format!(
            "SELECT body FROM events WHERE run_id = {child} AND kind = 'triggered'"
        ));
        assert!(
            told.iter()
                .any(|b| b.contains(&format!("deploy #{child} of ")) && b.contains("by push")),
            "{told:?}"
        );
    }

    // The hook's secret is in no log line, answer or database row.
    let log = d.log();
    assert!(!log.contains(GITHUB_SECRET), "{log}");
    let dump = home.sql("SELECT * FROM hook_deliveries").join("\n");
    assert!(!dump.contains(GITHUB_SECRET));
}

#[test]
fn gitlab_tokens_are_compared_and_tags_match_their_pattern() {
    let home = home();
    let d = daemon(&home);
    let tag = json!({
        "ref": "refs/tags/v1.4.0",
        "checkout_sha": "89abcdef0123456789abcdef0123456789abcdef",
        "project": { "path_with_namespace": "acme/site" },
    })
    .to_string();
    let lab = |token: &str, id: &str| {
        send(
            client()
                .post(d.url("/hooks/lab"))
                .header("X-Gitlab-Event", "Tag Push Hook")
                .header("X-Gitlab-Event-UUID", id)
                .header("X-Gitlab-Token", token)
                .body(tag.clone()),
        )
    };
    assert_eq!(
        lab("gitlab-token-0123456788", "g-1").0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(runs(&home), 0);
    let (status, body) = lab(GITLAB_SECRET, "g-2");
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        body["queued"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("of web3 queued")),
        "{body}"
    );
    assert_eq!(lab(GITLAB_SECRET, "g-2").1["queued"], json!([]));
    assert_eq!(runs(&home), 1);
}

#[test]
fn a_replayed_delivery_under_a_new_id_and_a_gitlab_retry_are_duplicates() {
    let home = home();
    let d = daemon(&home);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let main = push("refs/heads/main", commit);
    let signature = github_signature(GITHUB_SECRET.as_bytes(), main.as_bytes());
    let (status, body) = github(&d, "push", "r-1", &main, &signature);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(runs(&home), 1);
    // Captured and replayed with a fresh (unsigned) delivery id: the same delivery.
    let (status, body) = github(&d, "push", "r-2-forged", &main, &signature);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["queued"], json!([]), "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("handled before")),
        "{body}"
    );
    assert_eq!(runs(&home), 1, "nothing is queued twice");

    // GitLab retries one event under a new X-Gitlab-Event-UUID with its Idempotency-Key.
    let tag = |version: &str| {
        json!({
            "ref": format!("refs/tags/{version}"),
            "checkout_sha": "89abcdef0123456789abcdef0123456789abcdef",
            "project": { "path_with_namespace": "acme/site" },
        })
        .to_string()
    };
    let lab = |uuid: &str, key: &str, body: String| {
        send(
            client()
                .post(d.url("/hooks/lab"))
                .header("X-Gitlab-Event", "Tag Push Hook")
                .header("X-Gitlab-Event-UUID", uuid)
                .header("Idempotency-Key", key)
                .header("X-Gitlab-Token", GITLAB_SECRET)
                .body(body),
        )
    };
    let (status, body) = lab("u-1", "k-1", tag("v2.0.0"));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(runs(&home), 2);
    // A new UUID, the same key (the body differs here, so only the key can tell).
    let (status, body) = lab("u-2", "k-1", tag("v2.0.1"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["queued"], json!([]), "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("handled before")),
        "{body}"
    );
    // Another key and UUID is another event: its trigger is tried (web3 may still be busy
    // with the first tag's deploy, which refuses it; either way it is no repeat).
    let (_, body) = lab("u-3", "k-2", tag("v2.0.2"));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| !m.contains("handled before")),
        "{body}"
    );
    assert_eq!(
        body["queued"].as_array().map_or(0, Vec::len)
            + body["refused"].as_array().map_or(0, Vec::len),
        1,
        "{body}"
    );
    // What is kept is a digest, never the secret.
    let dump = home
        .sql("SELECT delivery || ' ' || digest || ' ' || coalesce(idempotency_key, '-') FROM hook_deliveries")
        .join("\n");
    assert!(
        !dump.contains(GITLAB_SECRET) && !dump.contains(GITHUB_SECRET),
        "{dump}"
    );
    assert!(dump.contains("u-1 ") && dump.contains(" k-1"), "{dump}");
}

#[test]
fn a_named_action_runs_for_its_grant_and_no_one_else() {
    let home = home();
    let d = daemon(&home);
    let (dev, bob) = (token(&home, "dev"), token(&home, "bob"));
    let reload = |token: &str| {
        send(
            client()
                .post(d.url("/api/v1/actions/reload"))
                .bearer_auth(token)
                .json(&json!({ "host": "web1" })),
        )
    };

    // dev holds a grant of `reload` and nothing else: the action runs, and the last lines
    // of its output come back (the action's `lines: 3`).
    let (status, body) = reload(&dev);
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = body["run"].as_i64().expect("a run");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("reload #{run} on web1 succeeded"))),
        "{body}"
    );
    let lines: Vec<&str> = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        lines,
        [
            "checking the configuration",
            "running: systemctl reload nginx",
            "reload done, 4 workers replaced"
        ],
        "{body}"
    );

    // bob (a viewer) may not: refused with the role it needs; nothing queued.
    let (status, body) = reload(&bob);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().is_some_and(
            |e| e.starts_with("run reload needs the admin role or a grant of action reload")
        ),
        "{body}"
    );
    // Nor on a group: the rollout is refused before it starts.
    let (status, body) = send(
        client()
            .post(d.url("/api/v1/actions/reload"))
            .bearer_auth(&bob)
            .json(&json!({ "host": "group:web" })),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(home.sql("SELECT count(*) FROM rollouts"), ["0"]);
    // And dev may do exactly that: a deploy is refused.
    let (status, _) = send(
        client()
            .post(d.url("/api/v1/deploy"))
            .bearer_auth(&dev)
            .json(&json!({ "design": "web1" })),
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(runs(&home), 1);
    let audit = home.sql("SELECT person, command, outcome FROM audit ORDER BY id");
    assert!(
        audit
            .iter()
            .any(|a| a.starts_with("bob|run reload on web1|run reload needs the admin role")),
        "{audit:?}"
    );

    // The schedules, as the API and the page list them.
    let (status, body) = send(client().get(d.url("/api/v1/schedules")).bearer_auth(&bob));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["schedules"][0]["name"], "nightly");
    assert_eq!(body["schedules"][0]["timezone"], "Europe/Berlin");
    wait_until("the schedule is planned", || {
        home.sql("SELECT count(*) FROM schedules") == ["1"]
    });
    let page = client()
        .get(d.url("/schedules"))
        .bearer_auth(&bob)
        .send()
        .expect("the page answers");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().unwrap_or_default();
    assert!(html.contains("<td>nightly</td>"), "{html}");
    assert!(html.contains("<code>run reload on HOST</code>"), "{html}");
}

#[test]
fn chat_runs_actions_and_lists_schedules() {
    let home = home_with(false);
    let mut shell = home.shell();
    shell.ask("run reload on web1", "running: systemctl reload nginx");
    shell.ask(
        "schedules",
        "nightly — 0 3 * * * Europe/Berlin: redeploy web1; next ",
    );
    shell.ask("help run", "run ACTION on HOST|group:GROUP");

    // On a group: a rollout that runs the action on each host, two at a time.
    shell.ask(
        "run reload on group:web",
        "rollout #1 of group web started: run reload on 3 hosts, 2 at a time",
    );
    wait_until("the rollout finishes", || {
        home.sql("SELECT state FROM rollouts") == ["succeeded"]
    });
    shell.ask(
        "status rollout #1",
        "rollout #1 web (run reload): 3/3 done, 0 running, 0 failed; finished",
    );
    assert_eq!(
        home.sql("SELECT host, pipeline, state FROM runs WHERE rollout_id = 1 ORDER BY host"),
        [
            "web1|reload|succeeded",
            "web2|reload|succeeded",
            "web3|reload|succeeded"
        ]
    );
    shell.finish();
}

#[test]
fn a_schedule_fires_in_the_daemon_and_skips_a_busy_host() {
    // Every second (croner's optional seconds field): the first firing queues a run that
    // takes a while; the firings meanwhile find the host busy and say so.
    let home = Home::new(
        "pipelines:
  site:
    providers: [local]
    stages:
      - { task: \"local:step\", idempotent: true }
roles:
  people:
    ci: []
  grants:
    - { person: ci, roles: [deployer] }
schedules:
  tick:
    cron: \"* * * * * *\"
    run: deploy slow
    person: ci
",
    );
    home.design(
        "slow",
        "instance:\n  hostname: slow\n  provider: local\ndemo:\n  step_ms: 10000\n",
    );
    let mut child = jarvis()
        .arg("run")
        .arg("--config")
        .arg(home.config())
        .env("JARVIS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jarvis starts");
    // Started (the database migrated) once it says it has no chat networks.
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("no chat networks"));
    assert!(started, "jarvis did not start");
    std::thread::spawn(move || lines.for_each(drop));
    wait_until("a firing queues a run", || {
        home.sql("SELECT count(*) FROM runs") == ["1"]
    });
    wait_until("a firing for the busy host is skipped", || {
        home.sql("SELECT last_outcome FROM schedules WHERE name = 'tick'")
            .iter()
            .any(|o| o.starts_with("skipped: slow already has run #1"))
    });
    let told = home.sql("SELECT body FROM events WHERE kind = 'triggered'");
    assert!(
        told.iter()
            .any(|b| b.contains("deploy #1 of slow by schedule tick")),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|b| b.contains("schedule tick skipped: slow already has run #1")),
        "{told:?}"
    );
    assert_eq!(home.sql("SELECT count(*) FROM runs"), ["1"]);
    // With no `announce`, its runs record no origin: nothing waits in the outbox for a
    // network that does not exist.
    assert_eq!(home.sql("SELECT count(*) FROM outbox"), ["0"]);
    assert_eq!(home.sql("SELECT origin FROM runs"), [""]);
    let _ = child.kill();
    let _ = child.wait();
}

/// A push to main deploys on staging; a tag promotes the host to production, and only once
/// the same design content has succeeded on staging (the pipeline's `promote_within`).
fn promotion_config() -> String {
    format!(
        "pipelines:
  site:
    providers: [local]
    promote_within: 1h
    stages:
      - {{ task: \"local:check\", idempotent: true }}
      - {{ task: \"local:step\", idempotent: true }}
workers:
  folders: [{workers}]
environments:
  order:
    - {{ name: staging }}
    - {{ name: production }}
roles:
  people:
    ci: []
  grants:
    - {{ person: ci, roles: [deployer] }}
    - {{ console: \"*\", roles: [admin] }}
hooks:
  site:
    forge: github
    secret: ${{SITE_SECRET}}
    person: ci
    triggers:
      - {{ repository: acme/site, event: push, pattern: main, run: \"deploy site\", environment: staging }}
      - {{ repository: acme/site, event: tag, pattern: \"v*\", run: \"promote site to production\" }}
http:
  listen: 127.0.0.1:0
",
        workers = support::test_workers().display()
    )
}

fn site_design(version: u32) -> String {
    format!(
        "instance:\n  hostname: site\n  provider: local\n  environment: staging\n\
         app:\n  version: {version}\ndemo:\n  step_ms: 50\n"
    )
}

#[test]
fn a_push_deploys_on_staging_and_production_waits_for_the_same_design_there() {
    let home = Home::new(&promotion_config());
    home.design("site", &site_design(1));
    let d = daemon(&home);
    let deliver = |id: &str, git_ref: &str| {
        // Each push is its own event, so its body differs (as GitHub's do): the same signed
        // body again is a replay, whatever its delivery id.
        let mut body: Value =
            serde_json::from_str(&push(git_ref, "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49"))
                .unwrap();
        body["hook_delivery"] = json!(id);
        let body = body.to_string();
        let signature = github_signature(GITHUB_SECRET.as_bytes(), body.as_bytes());
        github(&d, "push", id, &body, &signature)
    };
    let refusal = |body: &Value| {
        assert_eq!(body["queued"], json!([]), "{body}");
        body["refused"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let succeeded = |run: i64| {
        wait_until(&format!("run #{run} succeeds"), || {
            home.sql(&format!("SELECT state FROM runs WHERE id = {run}")) == ["succeeded"]
        });
    };

    // A release tag before staging ever ran this design: there is nothing to promote,
    // nothing is queued, and the answer says why.
    let (status, body) = deliver("t-1", "refs/tags/v1.0");
    assert_eq!(status, StatusCode::OK, "{body}");
    let why = refusal(&body);
    assert!(
        why.contains("site has no runs, so there is nothing to promote"),
        "{why}"
    );
    assert_eq!(runs(&home), 0);

    // A push to main deploys on staging.
    let (status, body) = deliver("p-1", "refs/heads/main");
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let staging = body["queued"][0]["run"].as_i64().expect("a run");
    succeeded(staging);

    // The same tag again (a new delivery): now production runs the design staging ran.
    let (status, body) = deliver("t-2", "refs/tags/v1.0");
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let production = body["queued"][0]["run"].as_i64().expect("a run");
    succeeded(production);
    assert_eq!(
        home.sql("SELECT id, environment FROM runs ORDER BY id"),
        [
            format!("{staging}|staging"),
            format!("{production}|production")
        ]
    );
    assert_eq!(
        home.sql("SELECT COUNT(DISTINCT design_digest) FROM runs WHERE design_digest IS NOT NULL"),
        ["1"]
    );

    // The design changes without going through staging: production is refused again,
    // naming the staging run that had other content.
    home.design("site", &site_design(2));
    let (status, body) = deliver("t-3", "refs/tags/v1.1");
    assert_eq!(status, StatusCode::OK, "{body}");
    let why = refusal(&body);
    assert!(
        why.contains(&format!("site deploy #{staging}, succeeded"))
            && why.contains("with other content"),
        "{why}"
    );
    assert_eq!(runs(&home), 2);
}
