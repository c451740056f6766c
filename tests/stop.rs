//! A graceful stop (SIGTERM, as `systemctl stop` sends it) through the real jarvis: running
//! stages finish, nothing is stored as cancelled, the next start goes on; a worker that
//! ignores SIGTERM is killed after the grace and leaves no process behind.

mod support;

use support::{Home, Shell, test_workers};

fn home(stages: &str, limits: &str, pidfile: &std::path::Path) -> Home {
    let config = format!(
        "workers:
  folders: [{workers}]
  modules:
    stubborn: {{ env: {{ PIDFILE: '{pidfile}' }} }}
pipelines:
  slow:
    command: deploy
    providers: [local]
    stages:
{stages}limits:
{limits}roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display(),
        pidfile = pidfile.display(),
    );
    let home = Home::new(&config);
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    home
}

#[test]
fn sigterm_lets_the_running_stage_finish_and_the_next_start_goes_on() {
    let scratch = tempfile::tempdir().unwrap();
    let home = home(
        "      - { task: \"slowstep:one\", notify: true }\n      - { task: \"slowstep:two\", notify: true }\n",
        "  stop_grace: 60s\n",
        &scratch.path().join("pid"),
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1: stage 1/2 slowstep:one started");
    sh.terminate();
    let (status, seen) = sh.wait_exit();
    assert!(status.success(), "a graceful stop ends well: {status}");
    let seen = seen.join("\n");
    assert!(
        !seen.contains("cancelled"),
        "nothing was cancelled:\n{seen}"
    );
    assert_eq!(
        home.sql("SELECT state || ' ' || next_stage FROM runs WHERE id = 1"),
        vec!["queued 1".to_string()],
        "the first stage finished; the run waits for the next start"
    );
    assert_eq!(
        home.sql("SELECT state FROM stage_runs WHERE run_id = 1 AND stage = 0"),
        vec!["succeeded".to_string()]
    );

    let mut sh = Shell::start(&home.config());
    sh.expect("loki deploy #1: stage 2/2 slowstep:two started");
    sh.expect("loki deploy #1 succeeded");
    sh.finish();
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM stage_runs WHERE run_id = 1 AND stage = 0"),
        vec!["1".to_string()],
        "the finished stage did not run again"
    );
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM events WHERE run_id = 1 AND kind = 'run_started'"),
        vec!["1".to_string()],
        "the run's start is told once"
    );
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_grace_and_the_run_is_interrupted() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let home = home(
        "      - { task: \"stubborn:x\", notify: true }\n",
        "  stop_grace: 1s\n  kill_grace: 1s\n",
        &pidfile,
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1: stage 1/1 stubborn:x started");
    support::wait_until("the worker's pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.trim().parse::<i32>().is_ok())
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sh.terminate();
    let (status, seen) = sh.wait_exit();
    assert!(status.success(), "{status}");
    assert!(
        support::group_members(pid).is_empty(),
        "no process of the worker's group is left: {:?}",
        support::group_members(pid)
    );
    let seen = seen.join("\n");
    assert!(
        !seen.contains("cancelled"),
        "nothing was cancelled:\n{seen}"
    );

    // As after a crash: a stage that is not idempotent waits for a person.
    let mut sh = Shell::start(&home.config());
    sh.expect("interrupted");
    let status = sh.ask("status #1", "loki deploy #1");
    assert!(status.contains("interrupted"), "{status}");
    sh.ask("cancel #1", "loki deploy #1");
    sh.finish();
}
