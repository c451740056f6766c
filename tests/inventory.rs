//! The inventory (SPEC 6a) through the real binary: jarvis remembers the hosts it made, and
//! a design edited to name another host never moves a command there — from the console, a
//! schedule or a webhook; a host's environment is its record's.

mod support;

use jarvis::triggers::webhook::github_signature;
use serde_json::json;
use support::{Daemon, Home};

const SECRET: &str = "inventory-hook-secret";

/// Local pipelines for deploy, redeploy and destroy, an action, two environments (production
/// wants approval), a webhook and a schedule that both redeploy web1.
fn config(with_triggers: bool) -> String {
    let mut text = "pipelines:
  site-deploy:
    command: deploy
    providers: [local]
    stages:
      - { task: \"local:step\", idempotent: true }
  site-redeploy:
    command: redeploy
    providers: [local]
    stages:
      - { task: \"local:step\", idempotent: true }
  site-destroy:
    command: destroy
    providers: [local]
    stages:
      - { task: \"local:step\", idempotent: true }
actions:
  reboot:
    role: deployer
    stages:
      - { task: \"local:step\", idempotent: true }
environments:
  field: instance.environment
  order:
    - { name: staging }
    - { name: production, approval: true }
roles:
  people:
    ci: [{ console: ci }]
  grants:
    - { console: \"*\", roles: [admin] }
    - { person: ci, roles: [deployer] }
"
    .to_string();
    if with_triggers {
        text.push_str(
            "hooks:
  site:
    forge: github
    secret: ${INVENTORY_SECRET:-inventory-hook-secret}
    person: ci
    triggers:
      - { repository: acme/site, event: push, pattern: main, run: \"redeploy web1\" }
schedules:
  often:
    cron: \"* * * * * *\"
    run: redeploy web1
    person: ci
    catch_up: none
http:
  listen: 127.0.0.1:0
",
        );
    }
    text
}

fn design(host: &str, environment: &str) -> String {
    format!(
        "instance:\n  hostname: {host}\n  fqdn: {host}.example.com\n  provider: local\n  environment: {environment}\ndemo:\n  step_ms: 10\n"
    )
}

fn runs_of(home: &Home, host: &str) -> Vec<String> {
    home.sql(&format!(
        "SELECT id || ' ' || kind || ' ' || state FROM runs WHERE host = '{host}' ORDER BY id"
    ))
}

/// web1 and db1 deployed; then web1's design is edited to name db1.
fn two_hosts_then_an_edit(home: &Home) {
    home.design("web1", &design("web1", "staging"));
    home.design("db1", &design("db1", "staging"));
    let mut sh = home.shell();
    sh.say("deploy web1");
    sh.expect("web1 deploy #1 succeeded in");
    sh.say("deploy db1");
    sh.expect("db1 deploy #2 succeeded in");
    sh.finish();
    home.design("web1", &design("db1", "staging"));
}

#[test]
fn a_design_edited_to_name_another_host_moves_no_console_command_there() {
    let home = Home::new(&config(false));
    two_hosts_then_an_edit(&home);
    let mut sh = home.shell();
    let refusal = "the design web1 now names host db1, not web1; nothing was queued";
    for command in [
        "redeploy web1",
        "destroy web1",
        "run reboot on web1",
        "promote web1 to production",
    ] {
        let line = sh.ask(command, "failed");
        assert!(line.contains(refusal), "{command}: {line}");
    }
    // The records say what jarvis made.
    sh.ask("hosts", "db1 (staging, present)");
    let web1 = sh.expect("web1 (");
    assert!(web1.contains("web1 (staging, present): local"), "{web1}");
    let host = sh.ask("host web1", "web1 (staging, present)");
    assert!(host.contains("last good run #1"), "{host}");
    sh.expect("design: web1 (digest ");
    sh.finish();
    assert_eq!(runs_of(&home, "db1"), ["2 deploy succeeded"]);
    assert_eq!(runs_of(&home, "web1"), ["1 deploy succeeded"]);
}

#[test]
fn a_schedule_and_a_webhook_redeploying_an_edited_design_are_refused() {
    let home = Home::new(&config(true));
    two_hosts_then_an_edit(&home);
    let daemon = Daemon::start_with(&home, &[("INVENTORY_SECRET", SECRET)]);
    let body = json!({
        "ref": "refs/heads/main",
        "after": "3f2a1c0d",
        "repository": { "full_name": "acme/site" },
    })
    .to_string();
    let answer = daemon
        .client()
        .post(daemon.url("/hooks/site"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-1")
        .header(
            "X-Hub-Signature-256",
            github_signature(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .expect("jarvis answers");
    let text = answer.text().unwrap_or_default();
    assert!(
        text.contains("now names host db1, not web1"),
        "the webhook's answer: {text}"
    );
    // The schedule fires every second; its last outcome is the same refusal.
    support::wait_until("the schedule fired and was refused", || {
        home.sql("SELECT last_outcome FROM schedules WHERE name = 'often'")
            .first()
            .is_some_and(|o| o.contains("now names host db1, not web1"))
    });
    drop(daemon);
    assert_eq!(runs_of(&home, "db1"), ["2 deploy succeeded"]);
    assert_eq!(runs_of(&home, "web1"), ["1 deploy succeeded"]);
}

#[test]
fn a_host_keeps_the_environment_of_its_record() {
    // Production without approval first, so that prod1 gets a production record.
    let home = Home::new(&config(false).replace(
        "{ name: production, approval: true }",
        "{ name: production }",
    ));
    home.design("prod1", &design("prod1", "production"));
    let mut sh = home.shell();
    sh.say("deploy prod1");
    sh.expect("prod1 deploy #1 succeeded in");
    let refused = sh.ask("deploy prod1 to staging", "failed");
    assert!(
        refused.contains(
            "prod1 is recorded in production, not staging; a host changes environment only by 'promote prod1 to staging'"
        ),
        "{refused}"
    );
    // A design that now says staging changes nothing either.
    home.design("prod1", &design("prod1", "staging"));
    let refused = sh.ask("redeploy prod1", "failed");
    assert!(
        refused.contains("recorded in production, not staging"),
        "{refused}"
    );
    sh.finish();
    assert_eq!(runs_of(&home, "prod1"), ["1 deploy succeeded"]);

    // Promotion is the way between environments, and production's approval still holds it.
    let home = Home::new(&config(false));
    home.design("prod2", &design("prod2", "staging"));
    let mut sh = home.shell();
    sh.say("deploy prod2");
    sh.expect("prod2 deploy #1 succeeded in");
    sh.say("promote prod2 to production");
    sh.expect("promoting prod2 to production");
    sh.expect("waits for approval");
    // The promotion waits for an approver: the shell stops with it still waiting.
    drop(sh);
    assert_eq!(
        home.sql("SELECT environment || ' ' || state FROM hosts WHERE name = 'prod2'"),
        ["staging present"]
    );
}

/// A provider stage (`cloud:make`, a test worker that reports `cloud: {id: cm-RUN}`), then a
/// long stage to die in.
fn crash_config() -> String {
    format!(
        "workers:
  folders: [{workers}]
  modules:
    slowstep: {{ env: {{ STEP_SECONDS: '60' }} }}
pipelines:
  cloud-deploy:
    command: deploy
    providers: [cloud]
    stages:
      - {{ task: \"cloud:make\", idempotent: true }}
      - {{ task: \"slowstep:x\", notify: true }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = support::test_workers().display()
    )
}

fn killed_after_the_provider_stage(home: &Home) {
    home.design("c1", "instance:\n  hostname: c1\n  provider: cloud\n");
    let mut sh = home.shell();
    sh.say("deploy c1");
    sh.expect("c1 deploy #1: stage 2/2 slowstep:x started");
    sh.kill9();
    // The commit that kept the provider stage's clipboard kept the record too.
    let record = home.sql("SELECT state || ' ' || resources FROM hosts WHERE name = 'c1'");
    assert_eq!(record.len(), 1, "{record:?}");
    assert!(
        record[0].starts_with("present ") && record[0].contains("\"id\":\"cm-1\""),
        "{record:?}"
    );
    // A start after the crash shows it.
    let mut sh = home.shell();
    let line = sh.ask("host c1", "c1 (");
    assert!(line.contains("cloud cm-1 (lab)"), "{line}");
    assert!(line.contains("no good run yet, last run #1"), "{line}");
    drop(sh);
}

#[test]
fn a_kill_9_right_after_a_provider_stage_leaves_a_record_naming_its_resource() {
    killed_after_the_provider_stage(&Home::new(&crash_config()));
}

#[test]
fn a_kill_9_right_after_a_provider_stage_leaves_a_record_on_postgres_too() {
    let Some(server) = jarvis_testbed::Server::start("postgres").unwrap() else {
        return;
    };
    let pg = support::Postgres::fresh(&server);
    killed_after_the_provider_stage(&Home::on(&crash_config(), Some(pg)));
}

#[test]
fn hosts_deployed_before_the_inventory_get_a_record_rebuilt_from_their_runs() {
    let home = Home::new(&config(false));
    home.design("web1", &design("web1", "staging"));
    let mut sh = home.shell();
    sh.say("deploy web1");
    sh.expect("web1 deploy #1 succeeded in");
    sh.finish();
    // As a database from before the inventory: runs, and no records.
    let out = std::process::Command::new("sqlite3")
        .arg(home.db())
        .arg("DELETE FROM hosts")
        .output()
        .expect("sqlite3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sh = home.shell();
    let line = sh.ask("host web1", "web1 (");
    assert!(line.contains("web1 (staging, present): local"), "{line}");
    let design = sh.expect("design: web1");
    assert!(
        design.contains("this record was rebuilt from stored runs"),
        "{design}"
    );
    sh.finish();
}

#[test]
fn rollback_redeploys_the_content_of_the_last_good_run_before_the_current_one() {
    let home = Home::new(&config(false));
    let versioned = |v: u32| format!("{}app:\n  version: {v}\n", design("web1", "staging"));
    home.design("web1", &versioned(1));
    let mut sh = home.shell();
    sh.say("deploy web1");
    sh.expect("web1 deploy #1 succeeded in");
    home.design("web1", &versioned(2));
    sh.say("redeploy web1");
    sh.expect("web1 redeploy #2 succeeded in");

    let queued = sh.ask("rollback web1", "queued");
    assert!(
        queued.contains("redeploy #3 of web1 queued")
            && queued.contains("rolling back to the design content of #1"),
        "{queued}"
    );
    sh.expect("web1 redeploy #3 succeeded in");
    // Nothing to do where the content is already in place.
    let same = sh.ask("rollback web1 to #3", "roll back");
    assert!(
        same.contains("web1 already runs the design content of #3; nothing to roll back"),
        "{same}"
    );
    sh.finish();
    // The worker got version 1 again, and the record holds #1's content.
    let clipboard = home.sql("SELECT clipboard FROM runs WHERE id = 3").join("");
    assert!(clipboard.contains("\"version\":1"), "{clipboard}");
    assert_eq!(
        home.sql("SELECT h.design_digest = r.design_digest FROM hosts h, runs r WHERE h.name = 'web1' AND r.id = 1"),
        ["1"]
    );
    assert_eq!(runs_of(&home, "web1").len(), 3);
}
