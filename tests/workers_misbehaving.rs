//! Each way a worker can misbehave fails its stage with a clear reason (SPEC 5), and jarvis
//! stays well: the real binary, real processes, `jarvis shell` on pipes.

mod support;

use support::{Home, alive, test_workers, wait_until};

/// A home whose pipeline `p` has a single stage running `task`, with a short timeout.
fn one_stage(task: &str, extra: &str) -> Home {
    let config = format!(
        "workers:\n  folders: [{}]\n  modules:\n    grandchild:\n      env: {{ PIDFILE: PIDFILE_PATH }}\n    sleeper:\n      env: {{ PIDFILE: PIDFILE_PATH }}\n\
         limits:\n  kill_grace: 1s\n\
         pipelines:\n  p:\n    providers: [test]\n    stages:\n      - {{ task: \"{task}\", timeout: 2s{extra} }}\n\
         roles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n",
        test_workers().display()
    );
    let home = Home::new(&config);
    let pidfile = home.path("grandchild.pid");
    let text = std::fs::read_to_string(home.config())
        .unwrap()
        .replace("PIDFILE_PATH", &pidfile.display().to_string());
    std::fs::write(home.config(), text).unwrap();
    home.design("h", "instance:\n  hostname: h\n  provider: test\n");
    home
}

/// Deploys `h` and returns the failure notification.
fn deploy_and_fail(home: &Home) -> String {
    let mut shell = home.shell();
    shell.ask("deploy h", "queued");
    let line = shell.expect_where(
        |l| l.contains("FAILED") || l.contains("succeeded"),
        "an outcome",
    );
    shell.finish();
    line
}

#[test]
fn a_hanging_worker_is_stopped_at_its_timeout() {
    let home = one_stage("hang:x", "");
    let line = deploy_and_fail(&home);
    assert!(line.contains("FAILED at stage 1/1 hang:x"), "{line}");
    assert!(line.contains("timed out after 2s"), "{line}");
}

#[test]
fn a_grandchild_left_behind_is_killed_with_its_group() {
    let home = one_stage("grandchild:x", "");
    let mut shell = home.shell();
    shell.ask("deploy h", "queued");
    shell.expect("succeeded");
    let pid: i32 = std::fs::read_to_string(home.path("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the grandchild to die", || !alive(pid));
    shell.finish();
}

#[test]
fn a_worker_flooding_stdout_is_capped_and_memory_stays_bounded() {
    let home = one_stage("flood:x", "");
    let mut shell = home.shell();
    shell.ask("deploy h", "queued");
    let line = shell.expect("FAILED");
    assert!(line.contains("more than 1 MiB on stdout"), "{line}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", shell.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        peak_kb < 100 * 1024,
        "jarvis peaked at {peak_kb} kB while a worker wrote 100 MiB"
    );
    shell.finish();
}

#[test]
fn invalid_yaml_on_stdout_fails_the_stage() {
    let line = deploy_and_fail(&one_stage("badyaml:x", ""));
    assert!(line.contains("stdout is not valid YAML"), "{line}");
}

#[test]
fn a_yaml_list_on_stdout_fails_the_stage() {
    let line = deploy_and_fail(&one_stage("yamllist:x", ""));
    assert!(line.contains("not one mapping (it is a list)"), "{line}");
}

#[test]
fn death_by_a_signal_fails_the_stage() {
    let line = deploy_and_fail(&one_stage("suicide:x", ""));
    assert!(line.contains("killed by signal SIGSEGV"), "{line}");
}

#[test]
fn exit_75_is_retried_with_backoff() {
    let home = one_stage("flaky:x", ", retries: 2, backoff: 100ms");
    let mut shell = home.shell();
    shell.ask("deploy h", "queued");
    shell.expect("succeeded");
    shell.ask("log h", "worked on attempt 2");
    shell.finish();
}

#[test]
fn exit_75_without_retries_left_fails_with_the_workers_reason() {
    let line = deploy_and_fail(&one_stage("flaky:x", ""));
    assert!(line.contains("the API said 503, try later"), "{line}");
}

#[test]
fn a_missing_worker_fails_the_stage_by_name() {
    let line = deploy_and_fail(&one_stage("nosuch:x", ""));
    assert!(line.contains("no worker named 'nosuch'"), "{line}");
}

#[test]
fn a_worker_that_is_not_executable_says_so() {
    let line = deploy_and_fail(&one_stage("notexec:x", ""));
    assert!(
        line.contains("worker notexec") && line.contains("is not executable"),
        "{line}"
    );
}

#[test]
fn workers_get_the_protocol_environment_and_nothing_else() {
    // SAFETY of the claim: a variable in jarvis's own environment must not reach workers.
    let home = one_stage("envdump:x", "");
    let mut shell = home.shell();
    shell.ask("deploy h", "queued");
    shell.expect("succeeded");
    shell.finish();
    let clip = home.sql("SELECT clipboard FROM runs WHERE id = 1").join("");
    for name in [
        "JARVIS_RUN_ID",
        "JARVIS_STAGE",
        "JARVIS_STAGES",
        "JARVIS_TASK",
        "JARVIS_HOST",
        "JARVIS_ATTEMPT",
    ] {
        assert!(
            clip.contains(&format!("\"{name}\"")),
            "{name} missing from {clip}"
        );
    }
    assert!(
        !clip.contains("JARVIS_LOG"),
        "jarvis's own environment leaked: {clip}"
    );
    assert!(
        !clip.contains("CARGO"),
        "jarvis's own environment leaked: {clip}"
    );
    assert!(
        clip.contains("/work/"),
        "workers run in a working folder of their own: {clip}"
    );
}

#[test]
fn workers_left_by_a_killed_jarvis_are_killed_before_anything_runs_again() {
    let home = one_stage("sleeper:x", "");
    let text = std::fs::read_to_string(home.config())
        .unwrap()
        .replace("timeout: 2s", "timeout: 10m");
    std::fs::write(home.config(), text).unwrap();
    let mut shell = home.shell();
    shell.ask("deploy h", "queued");
    let pidfile = home.path("grandchild.pid");
    wait_until("the worker to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    shell.kill9();
    assert!(alive(pid), "the worker outlives a kill -9 of jarvis");
    let mut shell = home.shell();
    let line = shell.expect("was interrupted at stage 1/1 sleeper:x by a restart");
    assert!(line.contains("resume #1"), "{line}");
    assert!(
        !alive(pid),
        "the restarted jarvis killed the left-behind worker"
    );
    shell.ask("cancel #1", "cancelled");
    shell.finish();
}
