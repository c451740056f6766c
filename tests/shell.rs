//! `jarvis shell` fed from a pipe: every command of SPEC 2 as a user sees it.

mod support;

use support::{Home, os_user, test_workers};

const DEMO_PIPELINE: &str = "pipelines:
  demo:
    providers: [local]
    stages:
      - { task: \"local:check\", idempotent: true }
      - { task: \"local:step\", idempotent: true, notify: true }
      - { task: \"local:step\", idempotent: true }
      - { task: \"local:step\", idempotent: true }
    on_failure:
      - { task: \"local:undo\" }
";

fn home(grants: &str) -> Home {
    let home = Home::new(&format!("{DEMO_PIPELINE}roles:\n  grants:\n{grants}"));
    home.design(
        "demo",
        "instance:\n  hostname: demo\n  provider: local\ndemo:\n  step_ms: 200\n",
    );
    home.design(
        "slow",
        "instance:\n  hostname: slow\n  provider: local\ndemo:\n  step_ms: 20000\n",
    );
    home.design(
        "broken",
        "instance:\n  hostname: broken\n  provider: local\ndemo:\n  step_ms: 100\n  fail_stage: 3\n",
    );
    home
}

const ADMIN: &str = "    - { console: \"*\", roles: [admin] }\n";

#[test]
fn every_command_answers_as_a_user_expects() {
    let home = home(ADMIN);
    let mut sh = home.shell();

    let help = sh.ask("help", "deploy REF|group:GROUP [to ENV] — load a design");
    assert!(help.starts_with("deploy REF"), "{help}");
    sh.expect("help [COMMAND]");
    let line = sh.ask("help deploy", "deploy REF|group:GROUP [to ENV] —");
    assert!(line.contains("Example: jarvis: deploy cn=loki"), "{line}");
    sh.ask(
        "stauts",
        "unknown command 'stauts' — did you mean 'status'? say 'help'",
    );
    let me = os_user();
    sh.ask(
        "whoami",
        &format!("you are console user {me}; roles: admin"),
    );
    sh.ask(
        "pipelines",
        "demo (deploy, providers local): 1 local:check (idempotent) → 2 local:step",
    );
    sh.ask(
        "plan demo",
        "plan for demo (local): demo pipeline, 4 stages; nothing was run",
    );
    sh.expect("1 local:check (idempotent) → 2 local:step");
    sh.ask("status", "nothing is running");
    sh.ask("history", "no runs yet");

    sh.ask(
        "deploy demo",
        "deploy #1 of demo queued (demo pipeline, 4 stages)",
    );
    sh.ask("deploy demo", "demo already has run #1");
    sh.ask("status", "demo deploy #1");
    sh.ask("status demo", "demo deploy #1");
    sh.expect("demo deploy #1 succeeded in");
    sh.ask("status #1", "demo deploy #1: succeeded in");
    sh.ask("history", "#1 demo deploy (demo): succeeded in");
    sh.ask("log #1 3", "[4] progress: local:step: working");

    sh.ask("deploy broken", "deploy #2 of broken queued");
    let failed = sh.expect("FAILED");
    assert!(
        failed.starts_with("broken deploy #2 FAILED at stage 3/4 local:step after ")
            && failed.ends_with("demo failure at stage 3, as demo.fail_stage asked — undoing with 1 on_failure stage"),
        "{failed}"
    );
    sh.expect("broken deploy #2: on_failure stages finished");
    sh.ask(
        "status broken",
        "broken deploy #2: FAILED at stage 3/4 local:step: demo failure at stage 3",
    );
    sh.ask(
        "resume #2",
        "run #2 cannot resume: its on_failure stages undid what it made; say 'retry #2'",
    );
    sh.ask("retry #2", "retry of #2: deploy #3 of broken queued");
    sh.expect("broken deploy #3 FAILED at stage 3/4");
    sh.expect("broken deploy #3: on_failure stages finished");

    sh.ask("deploy slow", "deploy #4 of slow queued");
    sh.expect("slow deploy #4: stage 2/4 local:step started");
    sh.ask("cancel slow", "cancelling slow deploy #4");
    sh.expect("slow deploy #4 cancelled by console:");
    sh.ask("status nosuchhost", "nosuchhost has no runs yet");
    sh.ask(
        "approve #4",
        "run #4 is cancelled, not waiting for approval",
    );
    sh.ask("log #99", "there is no run #99");
    sh.ask("deploy ../etc/passwd", "deploy failed:");
    sh.ask("deploy nosuch", "deploy failed:");
    sh.finish();

    let audit = home.sql("SELECT command || ' => ' || outcome FROM audit ORDER BY id");
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("deploy demo => deploy #1 of demo queued")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("cancel slow => cancelling")),
        "{audit:?}"
    );
    assert!(
        !audit.iter().any(|l| l.starts_with("status")),
        "status changes nothing: {audit:?}"
    );
}

#[test]
fn a_viewer_may_look_but_not_deploy() {
    let me = os_user();
    let home = home(&format!("    - {{ console: {me}, roles: [viewer] }}\n"));
    let mut sh = home.shell();
    sh.ask(
        "deploy demo",
        &format!("deploy needs the deployer role; you are console user {me}, with no such role"),
    );
    sh.ask("status", "nothing is running");
    let help: Vec<String> = {
        sh.say("help");
        let first = sh.expect("status [HOST|#ID|group:GROUP|rollout #ID]");
        vec![first]
    };
    assert!(!help.iter().any(|l| l.contains("deploy REF")), "{help:?}");
    sh.finish();
    assert_eq!(
        home.sql("SELECT identity || ' ' || outcome FROM audit"),
        vec![format!("console:{me} refused: needs deployer")]
    );
}

#[test]
fn the_requester_cannot_approve_their_own_run() {
    let home = Home::new(
        "pipelines:\n  gated:\n    providers: [local]\n    stages:\n      - { task: \"local:check\" }\n      - { task: \"local:step\", approval: true }\nroles:\n  grants:\n    - { console: \"*\", roles: [admin] }\n",
    );
    home.design(
        "g",
        "instance:\n  hostname: g\n  provider: local\ndemo:\n  step_ms: 10\n",
    );
    let mut sh = home.shell();
    sh.ask("deploy g", "deploy #1 of g queued");
    let line = sh.expect("waits for approval");
    assert!(
        line.contains("g deploy #1 waits for approval before stage 2/2 local:step"),
        "{line}"
    );
    sh.ask(
        "status g",
        "g deploy #1: waiting for approval before stage 2/2 local:step",
    );
    sh.ask(
        "approve #1",
        &format!(
            "you asked for run #1 from console:{}; another person must approve it",
            os_user()
        ),
    );
    sh.ask("cancel #1", "cancelling g deploy #1");
    sh.finish();
}

#[test]
fn secrets_on_the_clipboard_and_in_worker_output_never_show() {
    const SECRET: &str = "Zebra-Secret-42";
    const TOKEN: &str = "tok-9f8e7d6c5b";
    let home = Home::new(&format!(
        "workers:\n  folders: [{}]\n  modules:\n    leaky:\n      env: {{ API_TOKEN: {TOKEN} }}\n      secrets_from: [givesecret]\n\
         \x20   givesecret:\n      env: {{ SEED_SECRET: {SECRET} }}\n\
         pipelines:\n  p:\n    providers: [test]\n    stages:\n      - {{ task: \"givesecret:x\" }}\n      - {{ task: \"leaky:x\" }}\n\
         roles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n",
        test_workers().display()
    ));
    home.design("h", "instance:\n  hostname: h\n  provider: test\n");
    let mut sh = home.shell();
    sh.ask("plan h", "plan for h");
    sh.ask("deploy h", "deploy #1 of h queued");
    let failed = sh.expect("FAILED");
    assert!(
        failed.contains("login with ******** was refused"),
        "{failed}"
    );
    sh.ask("status #1", "FAILED");
    sh.say("log #1 50");
    sh.expect("using api key ********");
    sh.ask("history", "#1 h deploy");
    sh.ask("retry #1", "retry of #1");
    sh.expect("h deploy #2 FAILED");
    let stderr = sh.stderr_text();
    let out = sh.finish();
    for line in out.iter().chain(
        stderr
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert!(
            !line.contains(SECRET) && !line.contains(TOKEN),
            "a secret showed: {line}"
        );
    }
    for table in ["log_lines", "events", "outbox", "audit"] {
        let hits = home.sql(&format!(
            "SELECT COUNT(*) FROM {table} WHERE \
             CAST(({}) AS TEXT) LIKE '%{SECRET}%' OR CAST(({}) AS TEXT) LIKE '%{TOKEN}%'",
            columns(table),
            columns(table)
        ));
        assert_eq!(hits, vec!["0"], "a secret was stored in {table}");
    }
}

fn columns(table: &str) -> &'static str {
    match table {
        "log_lines" => "line",
        "events" => "body",
        "outbox" => "text",
        _ => "command || outcome",
    }
}

#[test]
fn piped_input_ends_the_shell_once_runs_are_done_and_announced() {
    let home = home(ADMIN);
    let mut sh = home.shell();
    sh.say("deploy demo");
    let out = sh.finish();
    assert!(
        out.iter().any(|l| l.contains("demo deploy #1 succeeded")),
        "{out:?}"
    );
}

/// Approvals are about people: the console user is one of alice's identities, so alice may
/// neither approve her run here nor from any other identity; the audit log names her.
#[test]
fn a_person_cannot_approve_their_own_run() {
    let me = os_user();
    let home = Home::new(&format!(
        "pipelines:\n  gated:\n    providers: [local]\n    stages:\n      - {{ task: \"local:check\" }}\n      - {{ task: \"local:step\", approval: true }}\n\
         roles:\n  people:\n    alice:\n      - {{ console: {me} }}\n      - {{ irc_account: alice, network: libera }}\n\
         \x20 grants:\n    - {{ person: alice, roles: [admin] }}\n"
    ));
    home.design(
        "g",
        "instance:\n  hostname: g\n  provider: local\ndemo:\n  step_ms: 10\n",
    );
    let mut sh = home.shell();
    sh.ask(
        "whoami",
        &format!("you are console user {me} (person alice); roles: admin"),
    );
    sh.ask("deploy g", "deploy #1 of g queued");
    sh.expect("waits for approval");
    sh.ask(
        "approve #1",
        &format!("you (alice) asked for run #1 from console:{me}; another person must approve it"),
    );
    sh.ask("cancel #1", "cancelling g deploy #1");
    sh.expect(&format!("cancelled by alice (console:{me})"));
    sh.finish();
    assert_eq!(
        home.sql("SELECT identity || ' ' || person || ' ' || substr(command, 1, 7) FROM audit ORDER BY id"),
        vec![
            format!("console:{me} alice deploy "),
            format!("console:{me} alice approve"),
            format!("console:{me} alice cancel "),
        ]
    );
}

#[test]
fn a_flood_of_notices_becomes_a_few_lines_and_the_log_keeps_them_all() {
    let home = Home::new(&format!(
        "workers:\n  folders: [{}]\n\
         pipelines:\n  noisy:\n    providers: [noisy]\n    stages:\n      - {{ task: \"noisy:talk\", idempotent: true }}\n\
         roles:\n  grants:\n{ADMIN}",
        support::test_workers().display()
    ));
    home.design("h", "instance:\n  hostname: h\n  provider: noisy\n");
    let mut sh = home.shell();
    sh.ask("deploy h", "queued");
    sh.expect("succeeded in");
    let said: Vec<String> = sh
        .seen
        .iter()
        .filter(|l| l.contains("noise ") || l.contains("more notices"))
        .cloned()
        .collect();
    // A handful of lines, the last one summing up the rest, and together all 200.
    assert!(said.len() <= 8, "{said:#?}");
    let last = said.last().unwrap();
    assert!(
        last.contains("more notices from stage 1/1 — say 'log #1'"),
        "{said:#?}"
    );
    let mut total = 0;
    for line in &said {
        total += match line.split_once("… and ") {
            Some((_, rest)) => rest.split(' ').next().unwrap().parse::<usize>().unwrap(),
            None => 1,
        };
    }
    assert_eq!(total, 200, "{said:#?}");
    // The log has every one.
    sh.say("log #1 200");
    for i in 1..=200 {
        sh.expect(&format!("noise {i} of 200"));
    }
    sh.finish();
}
