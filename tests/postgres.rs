//! jarvis on PostgreSQL, through the real binary against the testbed server: the runs live in
//! the database the configuration names (no SQLite file appears), `migrate` and `prune` work
//! on it, a second jarvis on the same database is refused with one line, and a database URL
//! jarvis does not know is refused by `check-config`. The store's own behaviour on both
//! databases is in tests/lifecycle.rs, tests/crash.rs and tests/trust.rs.

mod support;

use std::process::Command;

use jarvis_testbed::Server;
use support::{Home, JARVIS, Postgres, check_config, test_workers};

fn config() -> String {
    format!(
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
  keep: 3650d
  every: 1h
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display()
    )
}

fn jarvis(home: &Home, command: &str) -> (bool, String) {
    let out = Command::new(JARVIS)
        .args([command, "--config"])
        .arg(home.config())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn runs_live_in_postgres_and_survive_a_restart() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    let pg = Postgres::fresh(&server);
    let home = Home::on(&config(), Some(pg.clone()));
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );

    let (ok, said) = jarvis(&home, "migrate");
    assert!(ok, "{said}");
    assert!(said.contains("up to date"), "{said}");

    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    sh.ask("log #1", "done after 0s");
    sh.finish();
    assert_eq!(
        home.sql("SELECT state || ' ' || host FROM runs WHERE id = 1"),
        vec!["succeeded loki".to_string()]
    );
    assert!(
        home.sql("SELECT COUNT(*) FROM audit")[0] != "0",
        "the audit log is in PostgreSQL"
    );
    assert!(
        !home.path("data/jarvis.db").exists(),
        "no SQLite database beside the PostgreSQL one"
    );

    // A second start finds the run where the first left it, and numbers go on.
    let mut sh = home.shell();
    sh.ask("history loki", "#1 loki deploy (quick): succeeded");
    sh.ask("deploy loki", "deploy #2 of loki queued");
    sh.expect("loki deploy #2 succeeded");
    sh.finish();

    // Now old enough to forget (a daemon's start would prune too, so only now).
    let config = std::fs::read_to_string(home.config())
        .unwrap()
        .replace("keep: 3650d", "keep: 1ms\n  forget: 1ms");
    std::fs::write(home.config(), config).unwrap();
    let (ok, said) = jarvis(&home, "prune");
    assert!(ok, "{said}");
    // (the second start's own background prune may have taken run #1 already)
    assert!(
        said.contains("run summaries older than 1ms forgotten"),
        "{said}"
    );
    assert!(
        !said.contains("INFO"),
        "a PostgreSQL notice reached the user: {said}"
    );
    assert_eq!(home.sql("SELECT COUNT(*) FROM runs"), vec!["0".to_string()]);
}

#[test]
fn a_second_jarvis_with_a_node_name_in_use_is_refused_with_one_line() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    let pg = Postgres::fresh(&server);
    let first = Home::on(&config(), Some(pg.clone()));
    first.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    let mut sh = first.shell();
    sh.ask("whoami", "you are");

    // Another data folder, the same database, the same node name (both default to the
    // machine's host name): each would take the other's runs for its own.
    let second = Home::on(&config(), Some(pg));
    let out = Command::new(JARVIS)
        .args(["shell", "--config"])
        .arg(second.config())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second jarvis started: {said}");
    let line = said
        .lines()
        .find(|l| l.contains("another jarvis already runs as node"))
        .unwrap_or_else(|| panic!("no reason given: {said}"));
    assert!(
        line.contains("postgres://"),
        "the line names the database: {line}"
    );

    // The first one is unaffected.
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    sh.finish();
}

#[test]
fn a_database_url_jarvis_does_not_know_is_refused_by_check_config() {
    let home = Home::new("database_url: mysql://jarvis@127.0.0.1/jarvis\n");
    let (ok, said) = check_config(&home.config());
    assert!(!ok, "{said}");
    assert!(
        said.contains("database_url") && said.contains("'mysql:' is no database jarvis knows"),
        "{said}"
    );
    let home = Home::new("database_url: postgres://jarvis@127.0.0.1:1/jarvis\n");
    let (ok, said) = check_config(&home.config());
    assert!(ok, "{said}");
}
