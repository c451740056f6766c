//! Retention through the real jarvis: `jarvis prune` removes a finished run's log lines,
//! clipboards and events past the configured age, and keeps its summary and the audit log.

mod support;

use std::process::Command;

use support::{Home, JARVIS, test_workers};

#[test]
fn prune_keeps_the_summary_and_the_audit_and_drops_the_rest() {
    let home = Home::new(&format!(
        "workers:
  folders: [{workers}]
  modules:
    slowstep: {{ env: {{ STEP_SECONDS: '0' }} }}
pipelines:
  quick:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"slowstep:a\", notify: true }}
      - {{ task: \"slowstep:b\" }}
retention:
  keep: 1ms
  every: 1h
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display()
    ));
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    sh.ask("log #1", "done after 0s");
    sh.finish();
    let count = |table: &str| home.sql(&format!("SELECT COUNT(*) FROM {table} WHERE run_id = 1"));
    assert_ne!(count("log_lines"), vec!["0".to_string()]);

    let out = Command::new(JARVIS)
        .args(["prune", "--config"])
        .arg(home.config())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("pruned 1 runs"), "{said}");

    assert_eq!(
        count("log_lines"),
        vec!["0".to_string()],
        "log lines pruned"
    );
    assert_eq!(count("events"), vec!["0".to_string()], "events pruned");
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM stage_runs WHERE run_id = 1"),
        vec!["0".to_string()],
        "stage records and their clipboards pruned"
    );
    assert_eq!(
        home.sql("SELECT state || ' ' || host FROM runs WHERE id = 1"),
        vec!["succeeded loki".to_string()],
        "the summary stays"
    );
    assert_ne!(
        home.sql("SELECT COUNT(*) FROM audit"),
        vec!["0".to_string()],
        "the audit log stays"
    );
    let mut sh = home.shell();
    sh.ask("history loki", "#1 loki deploy (quick): succeeded");
    sh.finish();
}

#[test]
fn forget_drops_old_summaries_and_audit_rows_and_numbers_go_on() {
    let home = Home::new(&format!(
        "workers:
  folders: [{workers}]
  modules:
    slowstep: {{ env: {{ STEP_SECONDS: '0' }} }}
pipelines:
  quick:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"slowstep:a\" }}
retention:
  keep: 1ms
  every: 1h
  forget: 1ms
  audit: 1ms
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display()
    ));
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    sh.finish();

    let out = Command::new(JARVIS)
        .args(["prune", "--config"])
        .arg(home.config())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("1 run summaries older than 1ms forgotten"),
        "{said}"
    );
    assert_eq!(home.sql("SELECT COUNT(*) FROM runs"), vec!["0".to_string()]);
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM audit"),
        vec!["0".to_string()]
    );

    // A forgotten run's number is never given again.
    let mut sh = home.shell();
    sh.ask("history loki", "no runs yet");
    sh.ask("deploy loki", "deploy #2 of loki queued");
    sh.expect("loki deploy #2 succeeded");
    sh.finish();
}
