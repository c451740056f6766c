//! One policy for every door (SPEC 7): the same request, refused, gets the same one-line
//! refusal from the console, the API, a webhook, a schedule, a named action, and retry and
//! resume of that action — every door asks the bot's one decision.

mod support;

use jarvis::triggers::webhook::github_signature;
use serde_json::{Value, json};
use support::{Daemon, Home, os_user, token, wait_until};

const SECRET: &str = "policy-hook-secret";

fn config() -> String {
    format!(
        "pipelines:
  site-deploy:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"local:step\", idempotent: true }}
  site-redeploy:
    command: redeploy
    providers: [local]
    stages:
      - {{ task: \"local:step\", idempotent: true }}
actions:
  reboot:
    role: admin
    stages:
      - {{ task: \"local:step\", idempotent: true }}
roles:
  people:
    vic: [{{ console: {me} }}]
    bob: []
    ada: []
  grants:
    - {{ person: vic, roles: [viewer] }}
    - {{ person: bob, roles: [deployer] }}
    - {{ person: ada, roles: [admin] }}
hooks:
  site:
    forge: github
    secret: ${{POLICY_SECRET:-{SECRET}}}
    person: vic
    triggers:
      - {{ repository: acme/site, event: push, pattern: main, run: \"redeploy web1\" }}
schedules:
  often:
    cron: \"* * * * * *\"
    run: redeploy web1
    person: vic
    catch_up: none
http:
  listen: 127.0.0.1:0
",
        me = os_user()
    )
}

const REDEPLOY: &str = "redeploy needs the deployer role; ";
const REBOOT: &str = "run reboot needs the admin role or a grant of action reboot; ";

/// A push of `branch` to the `site` hook, signed as GitHub signs: jarvis's answer.
fn push(http: &reqwest::blocking::Client, daemon: &Daemon, branch: &str, delivery: &str) -> Value {
    let body = json!({
        "ref": format!("refs/heads/{branch}"),
        "after": format!("3f2a1c0d{delivery}"),
        "repository": { "full_name": "acme/site" },
    })
    .to_string();
    http.post(daemon.url("/hooks/site"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header(
            "X-Hub-Signature-256",
            github_signature(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .expect("jarvis answers")
        .json()
        .unwrap_or(Value::Null)
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_refused_request_reads_the_same_from_every_door() {
    let home = Home::new(&config());
    home.design(
        "web1",
        "instance:\n  hostname: web1\n  provider: local\ndemo:\n  step_ms: 10\n",
    );
    let mut refusals: Vec<(&str, String)> = Vec::new();

    // The console, as vic (a viewer).
    let mut sh = home.shell();
    refusals.push(("console", sh.ask("redeploy web1", "needs")));
    refusals.push(("console action", sh.ask("run reboot on web1", "needs")));
    sh.finish();

    let (vic, bob, ada) = (
        token(&home, "vic"),
        token(&home, "bob"),
        token(&home, "ada"),
    );
    let daemon = Daemon::start_with(&home, &[]);
    let http = daemon.client();
    let post = |path: &str, token: &str, body: Value| -> (u16, Value) {
        let res = http
            .post(daemon.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .expect("jarvis answers");
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };

    // The API, as vic.
    let (status, body) = post("/api/v1/redeploy", &vic, json!({ "host": "web1" }));
    assert_eq!(status, 403, "{body}");
    refusals.push(("api", error_of(&body)));

    // A webhook acting as vic.
    let answer = push(&http, &daemon, "main", "p-1");
    refusals.push(("webhook", error_of(&answer["refused"][0])));

    // A schedule acting as vic: its last outcome.
    wait_until("the schedule fired", || {
        home.sql("SELECT last_outcome FROM schedules WHERE name = 'often'")
            .first()
            .is_some_and(|o| o.contains("needs"))
    });
    // The schedule's record says how the firing ended ("refused: …"), then the same line.
    let outcome = home.sql("SELECT last_outcome FROM schedules WHERE name = 'often'");
    let outcome = outcome.join("");
    refusals.push((
        "schedule",
        outcome
            .strip_prefix("refused: ")
            .unwrap_or(&outcome)
            .to_string(),
    ));

    // The action over the API, as bob (a deployer); then ada (an admin) runs it, and bob
    // may neither retry nor resume it.
    let (status, body) = post("/api/v1/actions/reboot", &bob, json!({ "host": "web1" }));
    assert_eq!(status, 403, "{body}");
    refusals.push(("api action", error_of(&body)));
    let (status, body) = post("/api/v1/actions/reboot", &ada, json!({ "host": "web1" }));
    assert_eq!(status, 200, "{body}");
    let run = body["run"].as_i64().expect("a run");
    let (status, body) = post(&format!("/api/v1/runs/{run}/retry"), &bob, json!({}));
    assert_eq!(status, 403, "{body}");
    refusals.push(("retry", error_of(&body)));
    let (status, body) = post(&format!("/api/v1/runs/{run}/resume"), &bob, json!({}));
    assert_eq!(status, 403, "{body}");
    refusals.push(("resume", error_of(&body)));

    for (door, line) in &refusals {
        let wanted = if door.contains("action") || *door == "retry" || *door == "resume" {
            REBOOT
        } else {
            REDEPLOY
        };
        assert!(line.starts_with(wanted), "{door}: {line}");
        assert!(!line.contains('\n'), "{door}: one line: {line}");
    }
    // Nothing ran but ada's action.
    assert_eq!(
        home.sql("SELECT kind || ' ' || requester FROM runs ORDER BY id"),
        ["action web:ada"]
    );
    drop(daemon);
}

/// The table: every role × a gated and an ungated environment × the console, the API and a
/// webhook, the same `redeploy` asked through each. The verdict is the same from every door:
/// refused in the same words, or queued (and, in the gated environment, waiting for an
/// approver).
#[test]
fn every_role_gets_the_same_verdict_from_every_door_in_a_gated_and_an_ungated_environment() {
    for role in ["viewer", "approver", "deployer", "admin"] {
        let allowed = matches!(role, "deployer" | "admin");
        let config = format!(
            "pipelines:
  site-redeploy:
    command: redeploy
    providers: [local]
    stages:
      - {{ task: \"local:step\", idempotent: true }}
environments:
  field: instance.environment
  order:
    - {{ name: staging }}
    - {{ name: production, approval: true }}
roles:
  people:
    who: [{{ console: {me} }}]
  grants:
    - {{ person: who, roles: [{role}] }}
hooks:
  site:
    forge: github
    secret: {SECRET}
    person: who
    triggers:
      - {{ repository: acme/site, event: push, pattern: staging, run: \"redeploy hook-staging\" }}
      - {{ repository: acme/site, event: push, pattern: production, run: \"redeploy hook-production\" }}
http:
  listen: 127.0.0.1:0
",
            me = os_user()
        );
        let home = Home::new(&config);
        for door in ["console", "api", "hook"] {
            for env in ["staging", "production"] {
                home.design(
                    &format!("{door}-{env}"),
                    &format!(
                        "instance:\n  hostname: {door}-{env}\n  provider: local\n  environment: {env}\ndemo:\n  step_ms: 10\n"
                    ),
                );
            }
        }
        // (door, environment, what the door answered, whether it queued)
        let mut answers: Vec<(String, String, String, bool)> = Vec::new();
        let mut sh = home.shell();
        for env in ["staging", "production"] {
            sh.say(&format!("redeploy console-{env}"));
            let queued_line = format!("of console-{env} queued");
            let line = sh.expect_where(
                |l| l.contains(&queued_line) || l.starts_with(REDEPLOY),
                "the answer",
            );
            let queued = line.contains("queued");
            answers.push(("console".into(), env.into(), line, queued));
        }
        if allowed {
            sh.expect("waits for approval");
        }
        drop(sh);
        let who = token(&home, "who");
        let daemon = Daemon::start_with(&home, &[]);
        let http = daemon.client();
        for env in ["staging", "production"] {
            let res = http
                .post(daemon.url("/api/v1/redeploy"))
                .bearer_auth(&who)
                .json(&json!({ "host": format!("api-{env}") }))
                .send()
                .expect("jarvis answers");
            let queued = res.status().as_u16() == 202;
            let body: Value = res.json().unwrap_or(Value::Null);
            let line = body["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or_default()
                .to_string();
            answers.push(("api".into(), env.into(), line, queued));

            let body = push(&http, &daemon, env, &format!("{role}-{env}"));
            let queued = body["queued"].as_array().is_some_and(|q| !q.is_empty());
            let line = body["queued"][0]["message"]
                .as_str()
                .or(body["refused"][0]["error"].as_str())
                .unwrap_or_default()
                .to_string();
            answers.push(("hook".into(), env.into(), line, queued));
        }
        if allowed {
            wait_until("the production runs wait for an approver", || {
                home.sql("SELECT count(*) FROM runs WHERE state = 'waiting_approval'") == ["3"]
            });
        }
        drop(daemon);
        for (door, env, line, queued) in &answers {
            assert_eq!(*queued, allowed, "{role} via {door} in {env}: {line}");
            if allowed {
                assert!(
                    line.starts_with("redeploy #")
                        && line.contains(&format!("of {door}-{env} queued")),
                    "{role} via {door} in {env}: {line}"
                );
            } else {
                assert!(
                    line.starts_with(REDEPLOY),
                    "{role} via {door} in {env}: {line}"
                );
            }
        }
        // The gated environment holds every door's run for an approver; the other runs.
        let states = home.sql("SELECT host || ' ' || state FROM runs ORDER BY host");
        if allowed {
            for door in ["api", "console", "hook"] {
                assert!(
                    states.contains(&format!("{door}-production waiting_approval")),
                    "{role}: {states:?}"
                );
            }
        } else {
            assert!(states.is_empty(), "{role}: {states:?}");
        }
    }
}
