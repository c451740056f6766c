//! A worker gets all of its clipboard or none: jarvis dies an instant after spawning a
//! stage's worker (a hook of the test build), and the worker still reads the whole clipboard
//! — on SQLite and on PostgreSQL. Before, the input went through a pipe written after the
//! spawn, and such a worker read nothing and ran its task on an empty clipboard.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{Home, JARVIS, wait_until};

fn config(record: &std::path::Path) -> String {
    format!(
        "workers:
  folders: [{workers}]
  modules:
    recorder: {{ env: {{ RECORD_FILE: '{record}' }} }}
pipelines:
  rec-deploy:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"local:step\", idempotent: true }}
      - {{ task: \"recorder:x\" }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = support::test_workers().display(),
        record = record.display()
    )
}

fn dies_at_the_spawn_and_the_worker_reads_it_all(postgres: Option<support::Postgres>) {
    let scratch = tempfile::tempdir().unwrap();
    let record = scratch.path().join("read.yaml");
    let home = Home::on(&config(&record), postgres);
    home.design(
        "c1",
        "instance:\n  hostname: c1\n  provider: local\ndemo:\n  step_ms: 10\n  note: the whole clipboard\n",
    );
    let mut child = Command::new(JARVIS)
        .args(["shell", "--config"])
        .arg(home.config())
        .env("JARVIS_TEST_DIE_AFTER_SPAWN", "recorder:x")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("jarvis starts");
    if let Some(stdin) = child.stdin.as_mut() {
        writeln!(stdin, "deploy c1").unwrap();
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "jarvis died at the spawn: {status}");
    wait_until("the orphaned worker wrote down what it read", || {
        record.exists()
    });
    let read = std::fs::read_to_string(&record).unwrap();
    for needle in ["hostname: c1", "note: the whole clipboard", "run_id: 1"] {
        assert!(read.contains(needle), "the worker read: {read}");
    }
}

#[test]
fn a_worker_spawned_an_instant_before_jarvis_died_reads_its_whole_clipboard() {
    dies_at_the_spawn_and_the_worker_reads_it_all(None);
}

#[test]
fn a_worker_spawned_an_instant_before_jarvis_died_reads_its_whole_clipboard_on_postgres() {
    let Some(server) = jarvis_testbed::Server::start("postgres").unwrap() else {
        return;
    };
    dies_at_the_spawn_and_the_worker_reads_it_all(Some(support::Postgres::fresh(&server)));
}
