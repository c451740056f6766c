//! Approval gates that hold, through the real jarvis against the testbed slapd: destroying a
//! host whose LDAP entry says production waits for an approver, and its requester cannot be
//! that approver; a host not in production goes straight through.

mod support;

use jarvis_testbed::Server;
use support::{Home, test_workers};

#[test]
fn destroying_a_production_host_waits_for_someone_else_to_approve() {
    let Some(slapd) = Server::start("slapd").unwrap() else {
        return;
    };
    let home = Home::new(&format!(
        "workers:
  folders: [{workers}]
  modules:
    ldap: {{ env: {{ LDAP_URL: '{url}', LDAP_BASE: '{base}', LDAP_BIND_DN: '{dn}', LDAP_PASSWORD: '{pw}' }} }}
    slowstep: {{ env: {{ STEP_SECONDS: '0' }} }}
pipelines:
  local-destroy:
    command: destroy
    providers: [local]
    stages:
      - {{ task: \"ldap:lookup\", idempotent: true }}
      - {{ task: \"slowstep:remove\", approval_if: ldap.production, notify: true }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display(),
        url = slapd.get("LDAP_URL"),
        base = slapd.get("LDAP_BASE"),
        dn = slapd.get("LDAP_BIND_DN"),
        pw = slapd.get("LDAP_PASSWORD"),
    ));
    for host in ["loki", "plain"] {
        home.design(
            host,
            &format!(
                "instance:\n  hostname: {host}\n  fqdn: {host}.example.com\n  provider: local\n"
            ),
        );
    }
    let mut sh = home.shell();
    sh.ask("destroy plain", "destroy #1 of plain queued");
    sh.expect("plain destroy #1 succeeded");

    sh.ask("destroy loki", "destroy #2 of loki queued");
    sh.expect("approval");
    let status = sh.ask("status #2", "loki destroy #2");
    assert!(
        status.contains("waiting for approval before stage 2/2 slowstep:remove"),
        "{status}"
    );
    let refused = sh.ask("approve #2", "#2");
    assert!(
        refused.contains("another person must approve it"),
        "the requester cannot approve: {refused}"
    );
    let status = sh.ask("status #2", "loki destroy #2");
    assert!(
        status.contains("waiting for approval"),
        "still waiting: {status}"
    );
    sh.ask("cancel #2", "cancelling loki destroy #2");
    sh.finish();
    assert_eq!(
        home.sql("SELECT COUNT(*) FROM stage_runs WHERE run_id = 2 AND task = 'slowstep:remove'"),
        vec!["0".to_string()],
        "the gated stage never ran"
    );
}
