//! Environments and rollouts through the real jarvis (issue 18): a design goes to production
//! only once the same content succeeded on staging, and a rollout over six local hosts in
//! batches of two stops at the batch that failed, resumes once the design is fixed, and
//! loses nothing to a `kill -9`.

mod support;

use std::time::Duration;

use jarvis_testbed::Server;
use support::{Home, Postgres, Shell};

const GRANTS: &str = "roles:\n  grants:\n    - { console: \"*\", roles: [admin] }\n";

fn pipelines(trace: &str, promote: &str) -> String {
    format!(
        "workers:
  modules:
    local:
      env: {{ LOCAL_TRACE: {trace} }}
pipelines:
  local-deploy:
    command: deploy
    providers: [local]
{promote}    stages:
      - {{ task: \"local:step\", idempotent: true }}
      - {{ task: \"local:step\", idempotent: true }}
  local-redeploy:
    command: redeploy
    providers: [local]
{promote}    stages:
      - {{ task: \"local:step\", idempotent: true }}
      - {{ task: \"local:step\", idempotent: true }}
"
    )
}

fn home(promote: &str, extra: &str, postgres: Option<Postgres>) -> Home {
    let home = Home::on("", postgres);
    let trace = home.path("trace");
    let config = std::fs::read_to_string(home.config()).unwrap()
        + &pipelines(&trace.display().to_string(), promote)
        + extra
        + GRANTS;
    std::fs::write(home.config(), config).unwrap();
    home
}

/// Says `command` until the line that starts with `prefix` contains `needle`; returns it.
fn until(shell: &mut Shell, command: &str, prefix: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    loop {
        shell.say(command);
        let line = shell.expect_where(|l| l.starts_with(prefix), prefix);
        if line.contains(needle) {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "'{command}' never said {needle:?}; last: {line}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn site(version: u32, fail: bool) -> String {
    format!(
        "instance:\n  hostname: site\n  provider: local\n  environment: staging\n\
         app:\n  version: {version}\ndemo:\n  step_ms: 100\n{}",
        if fail { "  fail_stage: 2\n" } else { "" }
    )
}

#[test]
fn production_waits_for_the_same_design_to_succeed_on_staging() {
    promotion(None);
}

#[test]
fn production_waits_for_staging_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    promotion(Some(Postgres::fresh(&server)));
}

fn promotion(postgres: Option<Postgres>) {
    let home = home(
        "    promote_within: 1h\n",
        "environments:
  order:
    - { name: staging }
    - { name: production }
    - { name: vault, approval: true }
",
        postgres,
    );
    home.design("site", &site(1, true));
    let mut shell = home.shell();

    // Nothing on staging yet.
    let refused = shell.ask("deploy site to production", "deploy failed");
    assert!(
        refused.contains("production needs site's design")
            && refused.contains("succeeded on staging within 1h")
            && refused.contains("it has no run there yet"),
        "{refused}"
    );

    // Staging fails: production is refused, naming that run.
    shell.ask("deploy site", "deploy #1 of site queued");
    shell.expect("site deploy #1 FAILED");
    let refused = shell.ask("promote site to production", "promote failed");
    assert!(
        refused.contains("the last run there: site deploy #1, failed"),
        "{refused}"
    );

    // The design is fixed: that is other content, still refused until staging ran it.
    home.design("site", &site(1, false));
    let refused = shell.ask("promote site to production", "promote failed");
    assert!(
        refused.contains("site deploy #1, failed") && refused.contains("with other content"),
        "{refused}"
    );
    shell.ask("deploy site", "deploy #2 of site queued");
    shell.expect("site deploy #2 succeeded");
    shell.ask(
        "promote site to production",
        "promoting site to production: deploy #3 of site queued",
    );
    shell.expect("site deploy #3 succeeded");
    assert_eq!(
        home.sql("SELECT id, environment FROM runs ORDER BY id"),
        ["1|staging", "2|staging", "3|production"]
    );
    assert_eq!(
        home.sql(
            "SELECT COUNT(DISTINCT design_digest) FROM runs WHERE id IN (2, 3) \
             AND design_digest IS NOT NULL"
        ),
        ["1"]
    );

    // A changed design is refused again, naming the run that had other content.
    home.design("site", &site(2, false));
    let refused = shell.ask("promote site to production", "promote failed");
    assert!(
        refused.contains("site deploy #2, succeeded") && refused.contains("with other content"),
        "{refused}"
    );

    // An environment that wants approval holds the run before its first stage.
    home.design("site", &site(1, false));
    shell.ask("promote site to vault", "deploy #4 of site queued");
    until(&mut shell, "status #4", "site deploy #4", "approval");
    shell.ask("cancel #4", "cancelling");
    shell.finish();
}

fn web(n: usize, fail: bool) -> String {
    format!(
        "instance:\n  hostname: web{n}\n  provider: local\n  role: web\ndemo:\n  step_ms: 150\n{}",
        if fail { "  fail_stage: 1\n" } else { "" }
    )
}

#[test]
fn a_rollout_stops_at_the_failed_batch_resumes_and_survives_kill_9() {
    rollout(None);
}

#[test]
fn a_rollout_on_postgres_stops_resumes_and_survives_kill_9() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    rollout(Some(Postgres::fresh(&server)));
}

fn rollout(postgres: Option<Postgres>) {
    let home = home(
        "",
        "groups:
  web:
    designs: { field: instance.role, value: web }
    max_parallel: 2
    max_failures: 1
",
        postgres,
    );
    for n in 1..=6 {
        home.design(&format!("web{n}"), &web(n, n == 4));
    }
    home.design(
        "other",
        "instance:\n  hostname: other\n  provider: local\n  role: db\n",
    );
    let mut shell = home.shell();
    shell.ask(
        "deploy group:web",
        "rollout #1 of group web started: deploy 6 hosts, 2 at a time",
    );

    // web4 fails in the second batch: the rollout stops at once, web3 still finishes, and
    // nothing of the third batch starts.
    let stopped = until(
        &mut shell,
        "status rollout #1",
        "rollout #1",
        "0 running, 1 failed; STOPPED",
    );
    assert!(
        stopped.contains("3/6 done, 0 running, 1 failed")
            && stopped.contains("web4 deploy #")
            && stopped.contains("local:step")
            && stopped.contains("demo failure at stage 1"),
        "{stopped}"
    );
    let hosts = home.sql("SELECT host FROM runs ORDER BY host");
    assert_eq!(hosts, ["web1", "web2", "web3", "web4"]);
    // The stop is announced where the rollout was asked for, as a run's end is.
    support::wait_until("the stop's notification", || {
        home.sql("SELECT text FROM outbox WHERE text LIKE 'rollout #1 web%'")
            .iter()
            .any(|t| t.contains("STOPPED") && t.contains("web4 deploy #"))
    });
    let started = shell.ask("deploy group:web", "group web already has rollout #1");
    assert!(started.contains("stopped"), "{started}");

    // Fixed, resumed; killed while the third batch runs.
    home.design("web4", &web(4, false));
    shell.ask(
        "resume rollout #1",
        "resuming rollout #1 of web; again: web4",
    );
    support::wait_until("the third batch to start", || {
        !home
            .sql("SELECT id FROM runs WHERE host IN ('web5', 'web6') AND state = 'running'")
            .is_empty()
    });
    shell.kill9();

    let mut shell = Shell::start(&home.config());
    let finished = until(&mut shell, "status group:web", "rollout #1", "finished");
    assert!(
        finished.contains("6/6 done, 0 running, 0 failed"),
        "{finished}"
    );
    shell.say("status rollout #1");
    shell.expect("rollout #1");
    let hosts = shell.expect("web1 done");
    assert!(
        hosts.contains("web4 done") && hosts.contains("web6 done"),
        "{hosts}"
    );

    // Every host succeeded exactly once; only web4 ran twice; the rest of the folder was
    // never part of it.
    assert_eq!(
        home.sql(
            "SELECT host, COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) \
             FROM runs WHERE rollout_id = 1 GROUP BY host ORDER BY host"
        ),
        [
            "web1|1|1", "web2|1|1", "web3|1|1", "web4|2|1", "web5|1|1", "web6|1|1"
        ]
    );
    assert!(
        home.sql("SELECT id FROM runs WHERE host = 'other'")
            .is_empty()
    );
    assert_eq!(
        home.sql("SELECT state FROM rollouts WHERE id = 1"),
        ["succeeded"]
    );
    assert_eq!(
        home.sql("SELECT kind FROM events WHERE kind LIKE 'rollout%' ORDER BY id"),
        ["rollout_stopped", "rollout_finished"]
    );
    shell.finish();
}

/// A group from LDAP, its filter escaped, and a host's environment from its LDAP entry.
#[test]
fn a_group_and_an_environment_from_ldap() {
    let Some(slapd) = Server::start("slapd").unwrap() else {
        return;
    };
    let ldif = "dn: cn=loki,ou=Hosts,dc=example,dc=com\nchangetype: modify\nadd: o\no: local\n";
    let mut child = std::process::Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            slapd.get("LDAP_URL"),
            "-D",
            slapd.get("LDAP_BIND_DN"),
            "-w",
            slapd.get("LDAP_PASSWORD"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), ldif.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "ldapmodify");

    let home = home(
        "",
        "environments:
  order: [{ name: staging }, { name: production }]
groups:
  prod: { ldap: { attribute: description, value: production } }
  star: { ldap: { attribute: description, value: \"*\" } }
",
        None,
    );
    let text = std::fs::read_to_string(home.config()).unwrap().replacen(
        "designs:\n",
        &format!(
            "designs:\n  ldap:\n    url: {}\n    bind_dn: {}\n    password: {}\n    base: ou=Hosts,dc=example,dc=com\n    attributes:\n      cn: instance.hostname\n      o: instance.provider\n      description: instance.environment\n",
            slapd.get("LDAP_URL"),
            slapd.get("LDAP_BIND_DN"),
            slapd.get("LDAP_PASSWORD")
        ),
        1,
    );
    std::fs::write(home.config(), text).unwrap();
    let mut shell = home.shell();
    shell.ask(
        "deploy group:prod",
        "rollout #1 of group prod started: deploy 1 host",
    );
    until(&mut shell, "status rollout #1", "rollout #1", "finished");
    // `*` is a value, not a wildcard: it matches no entry.
    shell.ask("deploy group:star", "group 'star' has no hosts");
    shell.finish();
    assert_eq!(
        home.sql("SELECT host, environment, design_ref, state FROM runs"),
        ["loki|production|cn=loki|succeeded"]
    );
}

#[test]
fn check_config_names_the_key_of_a_bad_group_or_environment() {
    for (extra, needle) in [
        (
            "groups:\n  web: { hosts: [a], designs: { field: instance.role, value: web } }\n",
            "groups.web.hosts: give exactly one of hosts, designs or ldap",
        ),
        (
            "groups:\n  web: { hosts: [a], max_parallel: 0 }\n",
            "groups.web.max_parallel: must be at least 1",
        ),
        (
            "environments:\n  order: [{ name: staging }, { name: Staging }]\n",
            "environments.order[1].name",
        ),
    ] {
        let home = Home::new(&format!("{extra}{GRANTS}"));
        let (ok, text) = support::check_config(&home.config());
        assert!(!ok && text.contains(needle), "{needle}: {text}");
        assert!(text.contains("jarvis.yaml:"), "names the place: {text}");
    }
    let home = home("    promote_within: 1h\n", "", None);
    let (ok, text) = support::check_config(&home.config());
    assert!(
        !ok && text.contains("promote_within: needs at least two environments"),
        "{text}"
    );
}
