//! The example workers of docs/workers.md (`docs/examples/greet` in shell and
//! `docs/examples/motd` in Python) run through the real jarvis, so the guide's examples
//! keep working: a clipboard in, a clipboard out, progress and notices, and a secret made by
//! the one and used by the other, masked wherever it shows.

mod support;

use std::path::{Path, PathBuf};

use support::Home;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples")
}

#[test]
fn the_shell_and_python_examples_run_as_a_pipeline() {
    let config = format!(
        "workers:
  folders: [{examples}]
  modules:
    motd: {{ secrets_from: [greet] }}
pipelines:
  hello:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"greet:hello\", notify: true }}
      - {{ task: \"motd:write\" }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        examples = examples().display(),
    );
    let home = Home::new(&config);
    home.design(
        "loki",
        "instance:\n  hostname: loki\n  fqdn: loki.example.com\n  provider: local\n",
    );
    let mut sh = home.shell();
    sh.ask("deploy loki", "deploy #1 of loki queued");
    let notice = sh.expect("said hello to loki");
    sh.expect("loki deploy #1 succeeded");
    let log = sh.ask("log #1 20", "using the greet token");
    sh.finish();

    // The token each worker shows is masked: the shell worker's own notice, and the Python
    // worker's line about the secret it got by environment.
    assert!(notice.contains("(token ********)"), "{notice}");
    assert!(log.contains("using the greet token ********"), "{log}");
    // The clipboard went through both: the shell worker's greeting and the Python worker's
    // message of the day built from it.
    let clipboard = home
        .sql("SELECT clipboard FROM runs WHERE id = 1")
        .join("\n");
    assert!(clipboard.contains("hello, loki (stage 2)"), "{clipboard}");
    assert!(!clipboard.contains("greet_token"), "{clipboard}");
}

#[test]
fn the_examples_refuse_a_task_they_do_not_know() {
    for (worker, known) in [("greet", "hello"), ("motd", "write")] {
        let out = std::process::Command::new(examples().join(worker))
            .arg("nope")
            .env("JARVIS_HOST", "loki")
            .env("JARVIS_SECRETS", "/dev/null")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the example runs");
        assert_eq!(out.status.code(), Some(2), "{worker}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(&format!("(it knows: {known})")),
            "{worker}: {said}"
        );
    }
}
