//! Approval gates rest on facts jarvis trusts: `check-config` refuses a gate on design data
//! or on a fact no earlier stage writes, and a design cannot pick its way around a gate by
//! naming a pipeline that does not serve its provider. Through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Home, check_config};

/// A pipeline `guarded` for `local` whose second stage carries `gate`.
fn gated(gate: &str) -> String {
    format!(
        "pipelines:
  guarded:
    command: destroy
    providers: [local]
    stages:
      - {{ task: \"ldap:lookup\", idempotent: true }}
      - {{ task: \"local:step\", idempotent: true, approval_if: {gate} }}
"
    )
}

fn refusal(config: &str) -> String {
    let home = Home::new(config);
    let (ok, text) = check_config(&home.config());
    assert!(!ok, "check-config accepted:\n{config}\nsaying: {text}");
    text.trim().to_string()
}

#[test]
fn gates_on_design_data_or_on_facts_no_earlier_stage_writes_are_refused() {
    let design_data = refusal(&gated("instance.production"));
    assert_eq!(design_data.lines().count(), 1, "{design_data}");
    assert!(
        design_data.contains("pipelines.guarded.stages[1] (local:step).approval_if")
            && design_data.contains("'instance.production' is design data"),
        "{design_data}"
    );
    let unwritten = refusal(&gated("dns.production"));
    assert_eq!(unwritten.lines().count(), 1, "{unwritten}");
    assert!(
        unwritten.contains("pipelines.guarded.stages[1] (local:step).approval_if")
            && unwritten.contains("'dns.production' is written by no earlier stage"),
        "{unwritten}"
    );
    // The fact of the stage before it is trusted.
    let home = Home::new(&gated("ldap.production"));
    let (ok, text) = check_config(&home.config());
    assert!(ok, "{text}");
}

#[test]
fn a_design_cannot_pick_a_pipeline_that_does_not_serve_its_provider() {
    let home = Home::new(
        "pipelines:
  gated-deploy:
    command: deploy
    providers: [local]
    stages:
      - { task: \"local:check\", idempotent: true, approval: true }
  open-deploy:
    command: deploy
    providers: [elsewhere]
    stages:
      - { task: \"local:check\", idempotent: true }
roles:
  grants:
    - { console: \"*\", roles: [admin] }
",
    );
    home.design(
        "sly",
        "instance:\n  hostname: sly\n  provider: local\npipeline: open-deploy\n",
    );
    let mut sh = home.shell();
    let refused = sh.ask("deploy sly", "open-deploy");
    assert!(
        refused.contains("does not serve provider 'local'"),
        "{refused}"
    );
    sh.finish();
    assert_eq!(home.sql("SELECT COUNT(*) FROM runs"), vec!["0".to_string()]);
}
