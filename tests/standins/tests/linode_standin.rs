//! The Linode stand-in as a process: token checks, error shapes, status transitions over
//! time, pagination, X-Filter, throttling, and that what it serves is what Linode publishes.

use std::time::{Duration, Instant};

use jarvis_standins::openapi::Spec;
use jarvis_standins::process::{Answer, Standin};
use serde_json::{Value, json};

const TOKEN: &str = "test-token";
const BEARER: &str = "Bearer test-token";

fn standin(extra: &[&str]) -> Standin {
    let mut args = vec![
        "--token",
        TOKEN,
        "--provision-ms",
        "100",
        "--boot-ms",
        "100",
        "--shutdown-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    Standin::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_linode-standin")),
        &args,
    )
    .unwrap()
}

/// An API request with the right token.
fn api(standin: &Standin, method: &str, path: &str, body: Option<Value>) -> Answer {
    let path = format!("/v4{path}");
    standin
        .request(method, &path, &[("Authorization", BEARER)], body.as_ref())
        .unwrap()
}

fn create(standin: &Standin, label: &str) -> Value {
    let body = json!({
        "label": label, "region": "us-east", "type": "g6-nanode-1",
        "image": "linode/debian12", "root_pass": "a-long-enough-password",
        "authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm9kIPLxbBzbChzl2iYsnf4 x"],
        "tags": ["jarvis"],
    });
    let made = api(standin, "POST", "/linode/instances", Some(body));
    assert_eq!(made.status, 200, "{}", made.body);
    made.body
}

/// Polls an instance until it reaches `wanted`, recording every status seen.
fn statuses_until(standin: &Standin, id: u64, wanted: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let started = Instant::now();
    loop {
        let instance = api(standin, "GET", &format!("/linode/instances/{id}"), None).body;
        let status = instance["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == wanted {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stuck: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refuses_requests_without_the_token() {
    let standin = standin(&[]);
    for headers in [vec![], vec![("Authorization", "Bearer wrong")]] {
        let answer = standin
            .request("GET", "/v4/linode/instances", &headers, None)
            .unwrap();
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.body,
            json!({"errors": [{"reason": "Invalid Token"}]})
        );
    }
}

#[test]
fn instances_boot_and_shut_down_over_time() {
    let standin = standin(&["--ipv4", "127.0.0.1"]);
    let made = create(&standin, "loki");
    assert_eq!(made["status"], "provisioning");
    assert_eq!(made["ipv4"], json!(["127.0.0.1"]));
    assert!(made["ipv6"].as_str().unwrap().ends_with("/128"));
    let id = made["id"].as_u64().unwrap();
    let seen = statuses_until(&standin, id, "running");
    assert_eq!(seen.first().unwrap(), "provisioning");
    assert!(seen.contains(&"booting".to_string()), "{seen:?}");

    let path = format!("/linode/instances/{id}");
    assert_eq!(
        api(&standin, "POST", &format!("{path}/shutdown"), None).status,
        200
    );
    assert_eq!(
        statuses_until(&standin, id, "offline"),
        ["shutting_down", "offline"]
    );

    assert_eq!(api(&standin, "DELETE", &path, None).status, 200);
    let gone = api(&standin, "GET", &path, None);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body, json!({"errors": [{"reason": "Not found"}]}));
}

#[test]
fn lists_are_paginated_and_filtered() {
    let standin = standin(&["--page-size", "2"]);
    for label in [
        "one-host",
        "two-host",
        "three-host",
        "four-host",
        "five-host",
    ] {
        create(&standin, label);
    }
    let page = api(&standin, "GET", "/linode/instances?page=3", None).body;
    assert_eq!(page["page"], 3);
    assert_eq!(page["pages"], 3);
    assert_eq!(page["results"], 5);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["label"], "five-host");

    let filter = json!({"label": "three-host"}).to_string();
    let found = standin
        .request(
            "GET",
            "/v4/linode/instances",
            &[("Authorization", BEARER), ("X-Filter", &filter)],
            None,
        )
        .unwrap()
        .body;
    assert_eq!(found["results"], 1);
    assert_eq!(found["data"][0]["label"], "three-host");

    let refused = api(&standin, "GET", "/linode/instances?page_size=5", None);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["errors"][0]["field"], "page_size");
}

#[test]
fn refusals_name_the_field() {
    let standin = standin(&[]);
    let cases = [
        (json!({"type": "g6-nanode-1"}), "region"),
        (json!({"region": "us-east", "type": "g9-huge"}), "type"),
        (
            json!({"region": "us-east", "type": "g6-nanode-1", "image": "linode/debian12"}),
            "root_pass",
        ),
        (
            json!({"region": "us-east", "type": "g6-nanode-1", "label": "-bad"}),
            "label",
        ),
        (
            json!({"region": "us-east", "type": "g6-nanode-1", "root_password": "x"}),
            "root_password",
        ),
    ];
    for (body, field) in cases {
        let answer = api(&standin, "POST", "/linode/instances", Some(body.clone()));
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(
            answer.body["errors"][0]["field"], field,
            "{body}: {}",
            answer.body
        );
        assert!(answer.body["errors"][0]["reason"].is_string());
    }
    create(&standin, "loki");
    let body = json!({"region": "us-east", "type": "g6-nanode-1", "label": "loki"});
    let answer = api(&standin, "POST", "/linode/instances", Some(body));
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body["errors"][0]["reason"],
        "Label must be unique among your linodes"
    );
}

#[test]
fn throttles_with_retry_after_when_asked() {
    let standin = standin(&[]);
    standin.fail_next(1, 429, Some(7), false).unwrap();
    let answer = api(&standin, "GET", "/linode/instances", None);
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert!(answer.body["errors"][0]["reason"].is_string());
    let next = api(&standin, "GET", "/linode/instances", None);
    assert_eq!(next.status, 200, "only the next request fails");
}

#[test]
fn what_it_serves_is_published() {
    // Beside the repository, which holds this crate at tests/standins.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/linode-openapi.yaml");
    if !path.is_file() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "{} is missing, and CI must not skip", path.display());
        eprintln!("SKIPPING: {} is missing", path.display());
        return;
    }
    let standin = standin(&[]);
    let id = create(&standin, "loki")["id"].as_u64().unwrap();
    statuses_until(&standin, id, "running");
    let instance = format!("/linode/instances/{id}");
    for action in ["shutdown", "boot", "reboot"] {
        api(&standin, "POST", &format!("{instance}/{action}"), None);
    }
    let body = json!({"image": "linode/debian12", "root_pass": "another-long-password"});
    api(&standin, "POST", &format!("{instance}/rebuild"), Some(body));
    api(&standin, "DELETE", &instance, None);

    let spec = Spec::load(&path).unwrap();
    assert!(
        spec.operations.len() > 300,
        "{} operations",
        spec.operations.len()
    );
    for request in standin.requests().unwrap() {
        spec.check_recorded(&request)
            .unwrap_or_else(|why| panic!("{why}: {request}"));
    }
    // And the checker does refuse what Linode does not publish.
    let unpublished = json!({"method": "POST", "path": "/v4/linode/instances/1/explode"});
    assert!(spec.check_recorded(&unpublished).is_err());
    let missing = json!({"method": "POST", "path": "/v4/linode/instances",
                         "body": {"type": "g6-nanode-1"}});
    let why = spec.check_recorded(&missing).unwrap_err();
    assert!(why.contains("lacks required field region"), "{why}");
    let extra = json!({"method": "POST", "path": "/v4/linode/instances",
                       "body": {"type": "g6-nanode-1", "region": "us-east", "rootpw": "x"}});
    let why = spec.check_recorded(&extra).unwrap_err();
    assert!(why.contains("unpublished field rootpw"), "{why}");
}
