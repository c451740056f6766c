//! The trust boundary through the real jarvis: designs carry data, never commands or
//! targets; host keys are pinned per host and a changed key stops the run until an admin
//! trusts the new one; secrets workers make are sealed, masked and never stored in clear.

mod support;

use std::path::Path;
use std::process::Command;

use jarvis_testbed::Server;
use support::{Home, Postgres, test_workers};

/// A pipeline that would run a command on the testbed sshd: `make` learns its host key
/// (it "creates" the host), `again` must find the key it pinned.
fn ssh_home(sshd: &Server, marker: &Path) -> Home {
    let target = format!(
        "host: 127.0.0.1, port: {port}",
        port = sshd.get("SSHD_PORT")
    );
    let config = format!(
        "workers:
  modules:
    ssh: {{ env: {{ SSH_KEY_FILE: '{key}', SSH_USER: '{user}' }} }}
pipelines:
  make:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"ssh:wait\", with: {{ {target}, host_key: learn, poll_ms: 50 }} }}
      - {{ task: \"ssh:run\", with: {{ {target}, commands: [[touch, '{marker}']] }} }}
  again:
    command: redeploy
    providers: [local]
    stages:
      - {{ task: \"ssh:run\", with: {{ {target}, commands: [[echo, 'configured {{instance.hostname}}']] }} }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        key = sshd.get("SSHD_KEY"),
        user = sshd.get("SSHD_USER"),
        marker = marker.display(),
    );
    let home = Home::new(&config);
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    home
}

/// `ssh-keygen -lf`'s algorithm and fingerprint of the sshd's ed25519 host key.
fn ed25519_fingerprint(sshd: &Server) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(sshd.dir().join("ssh_host_ed25519_key.pub"))
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_string()
}

#[test]
fn designs_that_try_commands_targets_users_or_sudo_are_refused_and_run_nothing() {
    let Some(sshd) = Server::start("sshd").unwrap() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("owned");
    let home = ssh_home(&sshd, &marker);
    let touch = format!("touch {}", marker.display());
    let attempts: Vec<(&str, String)> = vec![
        ("ssh.commands", format!("ssh:\n  commands: ['{touch}']\n")),
        (
            "ssh.scripts",
            format!("ssh:\n  scripts:\n    x: ['{touch}']\n"),
        ),
        ("ssh.script", "ssh:\n  script: x\n".into()),
        ("ssh.host", "ssh:\n  host: 127.0.0.1\n".into()),
        (
            "ssh.jump",
            "ssh:\n  jump: [{host: 127.0.0.1, port: 22}]\n".into(),
        ),
        ("ssh.user", "ssh:\n  user: root\n".into()),
        ("ssh.sudo", "ssh:\n  sudo: true\n".into()),
        ("instance.ip", String::new()),
    ];
    let mut sh = home.shell();
    for (i, (key, extra)) in attempts.iter().enumerate() {
        let name = format!("evil{i}");
        let ip = if *key == "instance.ip" {
            "  ip: 127.0.0.1\n"
        } else {
            ""
        };
        home.design(
            &name,
            &format!(
                "instance:\n  hostname: {name}\n  fqdn: {name}.example.com\n  provider: local\n{ip}{extra}"
            ),
        );
        let top = key.split('.').next().unwrap_or(key);
        let reply = sh.ask(&format!("deploy {name}"), top);
        assert!(
            reply.contains(top) && !reply.contains("queued"),
            "{key}: refused, naming the key: {reply}"
        );
    }
    sh.say("history");
    let history = sh.expect_where(|l| l.contains("no runs") || l.contains('#'), "history");
    assert!(history.contains("no runs"), "nothing was queued: {history}");
    sh.finish();
    assert!(!marker.exists(), "no command ran");
    let log = sshd.logs();
    assert!(
        !log.contains("Accepted") && !log.contains("Connection from"),
        "the sshd saw no connection: {log}"
    );
}

#[test]
fn a_changed_host_key_fails_with_both_fingerprints_until_an_admin_trusts_it() {
    let Some(mut sshd) = Server::start("sshd").unwrap() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("made");
    let home = ssh_home(&sshd, &marker);
    let first = ed25519_fingerprint(&sshd);

    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    assert!(marker.exists(), "the configured command ran");
    let log = sh.ask("log #1", "pinned");
    assert!(log.contains(&first), "the run's log says so: {log}");

    // The host is rebuilt behind jarvis's back: new host keys.
    for file in ["ssh_host_ed25519_key", "ssh_host_rsa_key"] {
        let _ = std::fs::remove_file(sshd.dir().join(file));
        let _ = std::fs::remove_file(sshd.dir().join(format!("{file}.pub")));
    }
    sshd.restart().unwrap();
    let second = ed25519_fingerprint(&sshd);
    assert_ne!(first, second);

    sh.ask("redeploy loki", "redeploy #2 of loki queued");
    let failed = sh.expect("FAILED");
    assert!(failed.contains("stage 1/1 ssh:run"), "{failed}");
    assert!(
        failed.contains(&first) && failed.contains(&second),
        "both fingerprints: {failed}"
    );
    assert!(failed.contains("trust loki"), "what to say: {failed}");

    let trusted = sh.ask(
        &format!("trust loki ssh-ed25519 {second}"),
        "is now pinned to",
    );
    assert!(trusted.contains(&second), "{trusted}");
    sh.ask("resume #2", "resuming loki redeploy #2");
    sh.expect("loki redeploy #2 succeeded");
    sh.finish();

    let audit = home.sql("SELECT command FROM audit ORDER BY id");
    assert!(
        audit.iter().any(|c| c.contains("trust loki")),
        "the trust is audited: {audit:?}"
    );
    assert!(
        audit.iter().any(|c| c.starts_with("pin loki")),
        "the learned pin is audited: {audit:?}"
    );
}

fn secrets_home(leak: &Path, fail_after: bool, postgres: Option<Postgres>) -> Home {
    let config = format!(
        "workers:
  folders: [{workers}]
  modules:
    secretmaker: {{ env: {{ LEAK_FILE: '{leak}' }} }}
    secretuser: {{ env: {{ FAIL_AFTER: '{fail}' }}, secrets_from: [secretmaker] }}
pipelines:
  make:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"secretmaker:make\", notify: true }}
      - {{ task: \"secretuser:use\" }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display(),
        leak = leak.display(),
        fail = if fail_after { "yes" } else { "no" },
    );
    let home = Home::on(&config, postgres);
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    home
}

#[test]
fn a_secret_a_worker_makes_is_sealed_masked_handed_on_and_erased() {
    a_secret_is_sealed_masked_handed_on_and_erased(None);
}

/// The same on PostgreSQL (sealed secrets are bytes there too).
#[test]
fn on_postgres_a_secret_is_sealed_masked_handed_on_and_erased() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    a_secret_is_sealed_masked_handed_on_and_erased(Some(Postgres::fresh(&server)));
}

fn a_secret_is_sealed_masked_handed_on_and_erased(postgres: Option<Postgres>) {
    let scratch = tempfile::tempdir().unwrap();
    let leak = scratch.path().join("password");
    let home = secrets_home(&leak, false, postgres);
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    sh.expect("loki deploy #1 succeeded");
    let status = sh.ask("status #1", "loki deploy #1");
    let log = sh.ask("log #1 20", "logging in with");
    let transcript = sh.finish();

    let password = std::fs::read(&leak).unwrap();
    assert!(password.len() >= 20, "the worker made a password");
    let shown = String::from_utf8_lossy(&password).into_owned();
    assert!(log.contains("********"), "masked in the log: {log}");
    assert!(!status.contains(&shown), "{status}");
    let all = transcript.join("\n");
    assert!(
        !all.contains(&shown),
        "the password is in the transcript:\n{all}"
    );
    assert!(
        all.contains("the new password is ********"),
        "the notice went out, masked:\n{all}"
    );
    let clipboard = home.sql("SELECT clipboard FROM runs WHERE id = 1");
    assert!(
        clipboard.iter().any(|c| c.contains("secret_seen")),
        "the later stage got it by environment: {clipboard:?}"
    );
    let leaks = support::files_containing(&home.path("data"), &password);
    assert!(leaks.is_empty(), "the password's bytes are in {leaks:?}");
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM run_secrets"),
        vec!["0".to_string()],
        "erased when the run ended"
    );
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM events WHERE run_id = 1 AND kind = 'run_started'"),
        vec!["1".to_string()],
        "the run's start is told once, though its stages start in shared commits"
    );
}

#[test]
fn a_failed_run_keeps_its_secret_sealed_for_a_resume_only() {
    let scratch = tempfile::tempdir().unwrap();
    let leak = scratch.path().join("password");
    let home = secrets_home(&leak, true, None);
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    let failed = sh.expect("FAILED");
    let password = std::fs::read(&leak).unwrap();
    let shown = String::from_utf8_lossy(&password).into_owned();
    assert!(
        failed.contains("refused the password ********") && !failed.contains(&shown),
        "the reason is masked: {failed}"
    );
    sh.finish();
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM run_secrets WHERE run_id = 1"),
        vec!["1".to_string()],
        "kept, sealed, while the run may resume"
    );
    let leaks = support::files_containing(&home.path("data"), &password);
    assert!(leaks.is_empty(), "the password's bytes are in {leaks:?}");
}
