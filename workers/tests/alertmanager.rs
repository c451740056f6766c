//! `alertmanager:silence` / `alertmanager:unsilence` against a real Alertmanager
//! (tests/testbed/servers/alertmanager.sh), checked through its API.

mod world;

use jarvis_testbed::Server;
use serde_json::Value;
use world::{Outcome, http, run_worker};

const CLIPBOARD: &str = "instance:
  hostname: loki
  fqdn: loki.example.com
jarvis:
  run_id: 42
  pipeline: redeploy
  requester: alice
";

fn alertmanager() -> Option<Server> {
    Server::start("alertmanager").expect("Alertmanager did not start")
}

fn run(server: &Server, task: &str, clip: &str) -> Outcome {
    run_worker(
        "alertmanager",
        task,
        clip,
        &[("ALERTMANAGER_URL", server.get("ALERTMANAGER_URL"))],
    )
}

fn get(server: &Server, path: &str) -> Value {
    let (status, body) = http(
        "GET",
        &format!("{}{path}", server.get("ALERTMANAGER_URL")),
        None,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn silence_state(server: &Server, id: &str) -> String {
    get(server, &format!("/api/v2/silence/{id}"))["status"]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Fires a HostDown alert for each `instance` and returns whether each is suppressed.
fn suppressed(server: &Server, instances: &[&str]) -> Vec<bool> {
    let alerts: Vec<Value> = instances
        .iter()
        .map(|i| serde_json::json!({"labels": {"alertname": "HostDown", "instance": i}}))
        .collect();
    let url = format!("{}/api/v2/alerts", server.get("ALERTMANAGER_URL"));
    let (status, body) = http("POST", &url, Some(&Value::Array(alerts).to_string()));
    assert_eq!(status, 200, "{body}");
    let now = get(server, "/api/v2/alerts");
    instances
        .iter()
        .map(|i| {
            now.as_array()
                .unwrap()
                .iter()
                .find(|a| a["labels"]["instance"] == *i)
                .map(|a| a["status"]["state"] == "suppressed")
                .unwrap()
        })
        .collect()
}

#[test]
fn silence_mutes_the_host_and_unsilence_lifts_it_twice_over() {
    let Some(server) = alertmanager() else { return };
    let out = run(&server, "silence", CLIPBOARD);
    out.assert_success();
    let clip = out.clipboard();
    let id = clip["alertmanager"]["silence_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(clip["instance"]["hostname"], "loki");

    let silences = get(&server, "/api/v2/silences");
    let silence = silences
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("the silence exists");
    assert_eq!(silence["status"]["state"], "active");
    assert_eq!(silence["createdBy"], "jarvis");
    assert_eq!(
        silence["comment"],
        "jarvis run #42: loki, redeploy pipeline, asked by alice"
    );
    assert_eq!(silence["matchers"][0]["name"], "instance");
    assert_eq!(
        suppressed(
            &server,
            &[
                "loki.example.com:9100",
                "loki",
                "lokix.example.com:9100",
                "other:9100"
            ]
        ),
        [true, true, false, false],
        "the silence matches the host and only the host"
    );

    let lifted = run(&server, "unsilence", &out.stdout);
    lifted.assert_success();
    assert_eq!(silence_state(&server, &id), "expired");
    assert!(
        lifted.clipboard()["alertmanager"]
            .get("silence_id")
            .is_none()
    );
    assert_eq!(suppressed(&server, &["loki.example.com:9100"]), [false]);

    // Idempotent: the same input again, and an on_failure run before any silence existed.
    run(&server, "unsilence", &out.stdout).assert_success();
    run(&server, "unsilence", CLIPBOARD).assert_success();
}

#[test]
fn silence_twice_in_one_run_keeps_one_silence() {
    let Some(server) = alertmanager() else { return };
    let first = run(&server, "silence", CLIPBOARD);
    first.assert_success();
    let second = run(&server, "silence", CLIPBOARD);
    second.assert_success();
    assert_eq!(
        first.clipboard()["alertmanager"]["silence_id"],
        second.clipboard()["alertmanager"]["silence_id"]
    );
    let active = get(&server, "/api/v2/silences")
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"]["state"] == "active")
        .count();
    assert_eq!(active, 1);
}

#[test]
fn unsilence_of_an_unknown_silence_is_fine_and_garbage_ids_are_refused() {
    let Some(server) = alertmanager() else { return };
    let unknown =
        format!("{CLIPBOARD}alertmanager:\n  silence_id: 0b1f6b8e-7a55-4f2f-9f3f-000000000000\n");
    run(&server, "unsilence", &unknown).assert_success();

    let garbage = format!("{CLIPBOARD}alertmanager:\n  silence_id: ../../-/reload\n");
    let out = run(&server, "unsilence", &garbage);
    assert_eq!(out.code, 1);
    assert!(out.error().contains("not a silence id"), "{}", out.stderr);
}

#[test]
fn an_unreachable_alertmanager_is_worth_a_retry_and_hides_credentials() {
    let out = run_worker(
        "alertmanager",
        "silence",
        CLIPBOARD,
        &[("ALERTMANAGER_URL", "http://jarvis:hunter2@127.0.0.1:9")],
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(
        out.error(),
        "Alertmanager at http://127.0.0.1:9: cannot connect"
    );
    assert!(!out.all_output().contains("hunter2"));
}

#[test]
fn a_silence_survives_a_restart_and_can_still_be_lifted() {
    let Some(mut server) = alertmanager() else {
        return;
    };
    let out = run(&server, "silence", CLIPBOARD);
    out.assert_success();
    let id = out.clipboard()["alertmanager"]["silence_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.stop(None).unwrap();
    server.restart().unwrap();
    assert_eq!(silence_state(&server, &id), "active");
    run(&server, "unsilence", &out.stdout).assert_success();
    assert_eq!(silence_state(&server, &id), "expired");
}
