//! The HTTP adapter end to end: the real `jarvis run` with an `http:` section on a free
//! loopback port, driven with reqwest (the JSON API, live events, /metrics) and with a real
//! headless Chromium through chromedriver (the web page).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use support::{Home, JARVIS, PATIENCE};

#[path = "http/webdriver.rs"]
mod webdriver;

#[path = "http/openapi.rs"]
mod openapi;

/// A secret a worker makes (givesecret): it must come back masked, never as itself, in any
/// answer.
const PLANTED: &str = "planted-Secr3t-7731";

const CONFIG: &str = "workers:
  folders: [WORKERS, HTTP_WORKERS]
  modules:
    givesecret:
      env: { SEED_SECRET: PLANTED }
    leaky:
      env: { API_TOKEN: tok-8e7d6c5b4a }
      secrets_from: [givesecret]
    clipleak:
      secrets_from: [givesecret]
pipelines:
  demo:
    providers: [local]
    stages:
      - { task: \"local:check\", idempotent: true }
      - { task: \"local:step\", idempotent: true, notify: true }
      - { task: \"local:step\", idempotent: true }
      - { task: \"local:step\", idempotent: true }
  demo-again:
    command: redeploy
    providers: [local]
    stages:
      - { task: \"local:step\", idempotent: true }
  demo-gone:
    command: destroy
    providers: [local]
    stages:
      - { task: \"local:step\", idempotent: true }
  gated:
    providers: [gated]
    stages:
      - { task: \"local:check\", idempotent: true }
      - { task: \"local:step\", approval: true }
      - { task: \"local:step\", idempotent: true }
  leaky:
    providers: [leaky]
    stages:
      - { task: \"givesecret:x\" }
      - { task: \"clipleak:x\" }
      - { task: \"leaky:x\" }
roles:
  people:
    alice: [ { xmpp_jid: alice@example.com } ]
    bob: [ { xmpp_jid: bob@example.com } ]
    carol: [ { xmpp_jid: carol@example.com } ]
    dana: []
  grants:
    - { person: alice, roles: [deployer, approver] }
    - { person: bob, roles: [approver] }
    - { person: carol, roles: [viewer] }
    - { person: dana, roles: [viewer] }
    - { console: \"*\", roles: [admin] }
http:
  listen: 127.0.0.1:0
";

pub fn home() -> Home {
    let workers = support::test_workers();
    let config = CONFIG
        .replace(
            "HTTP_WORKERS",
            &workers.join("../http/workers").display().to_string(),
        )
        .replace("WORKERS", &workers.display().to_string())
        .replace("PLANTED", PLANTED);
    let home = Home::new(&config);
    home.design(
        "demo",
        "instance:\n  hostname: demo\n  provider: local\ndemo:\n  step_ms: 300\n",
    );
    home.design(
        "broken",
        "instance:\n  hostname: broken\n  provider: local\ndemo:\n  step_ms: 200\n  fail_stage: 3\n",
    );
    home.design(
        "walk",
        "instance:\n  hostname: walk\n  provider: local\ndemo:\n  step_ms: 1500\n",
    );
    home.design(
        "secretive",
        "instance:\n  hostname: secretive\n  provider: leaky\n",
    );
    home.design(
        "gated",
        "instance:\n  hostname: gated\n  provider: gated\ndemo:\n  step_ms: 100\n",
    );
    home
}

/// `jarvis token create PERSON`: the token, printed once on stdout.
pub fn make_token(home: &Home, person: &str) -> String {
    let token = support::token(home, person);
    assert!(token.starts_with("jv_"), "{token}");
    token
}

/// `jarvis run` with its HTTP server; the address is read from its log once it listens.
pub struct Daemon {
    child: Child,
    pub base: String,
    stderr: Receiver<String>,
}

impl Daemon {
    pub fn start(home: &Home) -> Daemon {
        let mut child = Command::new(JARVIS)
            .arg("run")
            .arg("--config")
            .arg(home.config())
            .env("JARVIS_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jarvis starts");
        let errout = child.stderr.take().expect("stderr is piped");
        let (tx, stderr) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(errout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stderr.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "jarvis did not say it serves HTTP; it said:\n{}",
                    seen.join("\n")
                )
            });
            let plain = strip_ansi(&line);
            if plain.contains("serving HTTP")
                && let Some(addr) = plain
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                break addr;
            }
            seen.push(line);
        };
        Daemon {
            child,
            base: format!("http://{addr}"),
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stderr_text(&self) -> String {
        let mut text = String::new();
        while let Ok(l) = self.stderr.try_recv() {
            text.push_str(&l);
            text.push('\n');
        }
        text
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// reqwest here has rustls without a provider chosen (the workers' choice): ring, once.
pub fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

fn client() -> Client {
    install_tls_provider();
    Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// Every answer's body, to check that no token ever leaves in one; every answer under
/// /api/v1 is checked against the OpenAPI document as it comes.
struct Api {
    daemon: Daemon,
    http: Client,
    bodies: Vec<String>,
    spec: openapi::Spec,
}

impl Api {
    /// Starts the daemon and reads its OpenAPI document (no login needed for it).
    fn start(home: &Home) -> Api {
        let daemon = Daemon::start(home);
        let http = client();
        let resp = http
            .get(daemon.url("/api/v1/openapi.json"))
            .send()
            .expect("jarvis answers");
        assert_eq!(resp.status(), StatusCode::OK);
        let doc: Value = resp.json().expect("the OpenAPI document is JSON");
        let mut spec = openapi::Spec::new(doc.clone());
        spec.check("GET", "/api/v1/openapi.json", 200, &doc);
        Api {
            daemon,
            http,
            bodies: Vec::new(),
            spec,
        }
    }

    /// Checks an answer got some other way against the document.
    fn check(&mut self, method: &str, path: &str, status: StatusCode, body: &Value) {
        self.bodies.push(body.to_string());
        self.spec.check(method, path, status.as_u16(), body);
    }

    fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = self.daemon.url(path);
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("jarvis answers");
        let status = resp.status();
        let text = resp.text().expect("a body");
        self.bodies.push(text.clone());
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        if path.starts_with(openapi::PREFIX) && self.spec.template_of(path).is_some() {
            self.spec.check(method, path, status.as_u16(), &value);
        }
        (status, value)
    }

    fn get(&mut self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call("GET", path, token, None)
    }

    fn post(&mut self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(body))
    }

    /// Waits until run `id` is in `state` (the run's own answer, polled).
    fn wait_state(&mut self, id: i64, token: &str, state: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (code, run) = self.get(&format!("/api/v1/runs/{id}"), Some(token));
            assert_eq!(code, StatusCode::OK, "{run}");
            if run["state"] == state {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run #{id} never became {state}: {run}\n{}",
                self.daemon.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

#[test]
fn api_deploys_approves_and_refuses_as_chat_does() {
    let home = home();
    let alice = make_token(&home, "alice");
    let bob = make_token(&home, "bob");
    let carol = make_token(&home, "carol");
    let dana = make_token(&home, "dana");
    // Only the hash is stored.
    let data = home.path("data");
    for t in [&alice, &bob, &carol] {
        assert!(support::files_containing(&data, t.as_bytes()).is_empty());
    }
    let mut api = Api::start(&home);

    for path in ["/healthz", "/readyz"] {
        let health = api.http.get(api.daemon.url(path)).send().unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }

    // Nobody, a wrong token, a malformed header.
    let (code, body) = api.get("/api/v1/runs", None);
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(error_of(&body).contains("needs the viewer role"), "{body}");
    let (code, body) = api.get("/api/v1/runs", Some("jv_not-a-token"));
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        error_of(&body).contains("not known or was revoked"),
        "{body}"
    );
    let (code, _) = api.call(
        "POST",
        "/api/v1/deploy",
        None,
        Some(json!({"design": "demo"})),
    );
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // whoami and the pipelines.
    let (code, me) = api.get("/api/v1/whoami", Some(&alice));
    assert_eq!(code, StatusCode::OK);
    assert_eq!(me["identity"], "web:alice");
    assert_eq!(me["person"], "alice");
    assert_eq!(me["roles"], json!(["deployer", "approver"]));
    let (code, p) = api.get("/api/v1/pipelines", Some(&carol));
    assert_eq!(code, StatusCode::OK);
    assert_eq!(p["pipelines"][0]["name"], "demo");
    // A person with no chat identity at all: the web only.
    let (code, me) = api.get("/api/v1/whoami", Some(&dana));
    assert_eq!(code, StatusCode::OK);
    assert_eq!(me["roles"], json!(["viewer"]));
    let (code, plan) = api.get("/api/v1/plan?design=demo", Some(&dana));
    assert_eq!(code, StatusCode::OK, "{plan}");
    assert_eq!(
        plan["lines"][0],
        "plan for demo (local): demo pipeline, 4 stages; nothing was run"
    );
    let (code, body) = api.get("/api/v1/plan?design=nosuch", Some(&dana));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (code, _) = api.get("/api/v1/plan", Some(&dana));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    // A viewer may not deploy: 403, with the role named as chat names it.
    let (code, body) = api.post("/api/v1/deploy", &carol, json!({"design": "demo"}));
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&body),
        "deploy needs the deployer role; you are web user carol, with no such role"
    );

    // Bad requests: 422 with one sentence; too large: 413.
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "nosuch"}));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error_of(&body).starts_with("deploy failed: "), "{body}");
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"desing": "demo"}));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(&body).contains("unknown field 'desing'"), "{body}");
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "../etc passwd"}));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let resp = api
        .http
        .post(api.daemon.url("/api/v1/deploy"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"design\": \"demo\"")
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().expect("a JSON error");
    api.check(
        "POST",
        "/api/v1/deploy",
        StatusCode::UNPROCESSABLE_ENTITY,
        &body,
    );
    let big = format!("{{\"design\": \"{}\"}}", "x".repeat(64 * 1024));
    // Its own connection: the server closes one whose body it would not read.
    let resp = client()
        .post(api.daemon.url("/api/v1/deploy"))
        .bearer_auth(&alice)
        .body(big)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().expect("a JSON error");
    assert!(error_of(&body).contains("body"), "{body}");
    api.check(
        "POST",
        "/api/v1/deploy",
        StatusCode::PAYLOAD_TOO_LARGE,
        &body,
    );

    // Deploy: 202 with the run id at once; a second one for the host: 409 naming the run.
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "demo"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let id = body["run"].as_i64().expect("a run id");
    assert_eq!(
        body["message"],
        format!("deploy #{id} of demo queued (demo pipeline, 4 stages)")
    );
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "demo"}));
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["run"], id);
    assert!(error_of(&body).starts_with(&format!("demo already has run #{id}")));

    let run = api.wait_state(id, &carol, "succeeded");
    assert!(
        run["status"]
            .as_str()
            .unwrap()
            .starts_with(&format!("demo deploy #{id}: succeeded in")),
        "{run}"
    );
    assert_eq!(run["stages"].as_array().unwrap().len(), 4);
    assert_eq!(run["stages"][3]["state"], "succeeded");
    assert!(
        run["stages"][1]["attempts"][0]["finished_us"]
            .as_i64()
            .is_some()
    );
    assert_eq!(run["requester"], "alice");
    assert_eq!(run["requester_identity"], "web:alice");

    let (code, log) = api.get(&format!("/api/v1/runs/{id}/log?lines=5"), Some(&carol));
    assert_eq!(code, StatusCode::OK);
    assert!(!log["lines"].as_array().unwrap().is_empty(), "{log}");

    let (code, list) = api.get("/api/v1/runs?host=demo&state=succeeded", Some(&carol));
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["runs"][0]["id"], id);
    let (code, body) = api.get("/api/v1/runs?state=happy", Some(&carol));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(&body).contains("state 'happy'"), "{body}");
    let (code, body) = api.get("/api/v1/runs/9999", Some(&carol));
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body), "there is no run #9999");
    let (code, _) = api.get("/api/v1/nothing", Some(&carol));
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The host jarvis made has a record: its environment, state and last good run.
    let (code, hosts) = api.get("/api/v1/hosts", Some(&carol));
    assert_eq!(code, StatusCode::OK, "{hosts}");
    assert_eq!(hosts["hosts"][0]["name"], "demo", "{hosts}");
    let (code, demo) = api.get("/api/v1/hosts/demo", Some(&carol));
    assert_eq!(code, StatusCode::OK, "{demo}");
    assert_eq!(demo["state"], "present");
    assert_eq!(demo["last_good_run"], id);
    let (code, body) = api.get("/api/v1/hosts/nosuch", Some(&carol));
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body), "jarvis has no record of nosuch");
    let (code, _) = api.get("/api/v1/hosts", None);
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // A finished run cannot be cancelled: 409. A viewer cannot cancel: 403.
    let (code, body) = api.post(&format!("/api/v1/runs/{id}/cancel"), &alice, json!({}));
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, body) = api.post(&format!("/api/v1/runs/{id}/cancel"), &carol, json!({}));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(error_of(&body).contains("needs the deployer role"));
    let (code, _) = api.post(&format!("/api/v1/runs/{id}/explode"), &alice, json!({}));
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The gate: nobody approves their own run; another person may.
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "gated"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let gated = body["run"].as_i64().unwrap();
    api.wait_state(gated, &carol, "waiting_approval");
    let (code, body) = api.post(&format!("/api/v1/runs/{gated}/approve"), &alice, json!({}));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        error_of(&body).contains("another person must approve it"),
        "{body}"
    );
    let (code, body) = api.post(&format!("/api/v1/runs/{gated}/approve"), &carol, json!({}));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        error_of(&body).contains("needs the approver role"),
        "{body}"
    );
    let (code, body) = api.post(&format!("/api/v1/runs/{gated}/approve"), &bob, json!({}));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("approved gated deploy"),
        "{body}"
    );
    let run = api.wait_state(gated, &carol, "succeeded");
    assert!(
        run["approved_by"]
            .as_str()
            .unwrap()
            .starts_with("bob (web:bob)"),
        "{run}"
    );

    // A failure, and resume/retry on it.
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "broken"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let broken = body["run"].as_i64().unwrap();
    let run = api.wait_state(broken, &carol, "failed");
    assert_eq!(run["failed_stage"], 3);
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("demo failure at stage 3"),
        "{run}"
    );
    let (code, body) = api.post(&format!("/api/v1/runs/{broken}/retry"), &alice, json!({}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let retried = body["run"].as_i64().unwrap();
    let run = api.wait_state(retried, &carol, "failed");
    assert_eq!(run["retry_of"], broken);
    // Resume goes on with the same run: 200, not a new run.
    let (code, body) = api.post(&format!("/api/v1/runs/{retried}/resume"), &alice, json!({}));
    assert_eq!(code, StatusCode::OK, "{body}");
    api.wait_state(retried, &carol, "failed");
    let (code, body) = api.post(&format!("/api/v1/runs/{retried}/resume"), &carol, json!({}));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");

    // The clipboard after each stage, and what the stage changed: each step adds its
    // (1-based) stage number to `local.done`; the check changes nothing.
    let run = api.wait_state(id, &carol, "succeeded");
    assert_eq!(run["initial_clipboard"]["instance"]["hostname"], "demo");
    assert_eq!(run["stages"][0]["changes"], json!([]), "{run}");
    assert_eq!(
        run["stages"][1]["changes"],
        json!([{"path": "local", "change": "added", "after": {"done": [2]}}]),
        "{run}"
    );
    assert_eq!(
        run["stages"][2]["changes"],
        json!([{"path": "local.done", "change": "changed", "before": [2], "after": [2, 3]}]),
        "{run}"
    );
    assert_eq!(
        run["stages"][3]["clipboard"]["local"]["done"],
        json!([2, 3, 4])
    );

    // A secret a worker made (sealed, handed to later workers) comes back masked in the
    // run's log and pages, and as itself in no answer; a clipboard that holds it is refused
    // and never stored, its stage failing by the secret's name.
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({"design": "secretive"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let secretive = body["run"].as_i64().unwrap();
    let run = api.wait_state(secretive, &carol, "failed");
    assert_eq!(run["stages"][1]["state"], "failed", "{run}");
    assert_eq!(run["stages"][1]["clipboard"], Value::Null, "{run}");
    assert_eq!(
        error_of(&run),
        "the worker put the run's secret 'root_password' on the clipboard; secrets go on the secret channel only",
        "{run}"
    );
    let (_, log) = api.get(
        &format!("/api/v1/runs/{secretive}/log?lines=1000"),
        Some(&carol),
    );
    assert!(log.to_string().contains("********"), "{log}");
    api.get("/api/v1/runs?host=secretive", Some(&carol));
    api.get("/api/v1/plan?design=secretive", Some(&alice));
    for page in [
        format!("/runs/{secretive}"),
        format!("/parts/runs/{secretive}"),
        "/".to_string(),
    ] {
        let html = api
            .http
            .get(api.daemon.url(&page))
            .bearer_auth(&carol)
            .send()
            .unwrap()
            .text()
            .unwrap();
        api.bodies.push(html);
    }

    // Redeploy and destroy by their own pipelines; refusals for a host with no history.
    let (code, body) = api.post("/api/v1/redeploy", &alice, json!({"host": "demo"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    api.wait_state(body["run"].as_i64().unwrap(), &carol, "succeeded");
    let (code, body) = api.post("/api/v1/redeploy", &carol, json!({"host": "demo"}));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, body) = api.post("/api/v1/destroy", &alice, json!({"host": "demo"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    api.wait_state(body["run"].as_i64().unwrap(), &carol, "succeeded");
    let (code, body) = api.post("/api/v1/destroy", &alice, json!({"hots": "demo"}));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (code, _) = api.get("/api/v1/runs/9999/log", Some(&carol));
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = api.get("/api/v1/pipelines", None);
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = api.get("/api/v1/whoami", Some("jv_not-a-token"));
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let resp = api
        .http
        .get(api.daemon.url("/api/v1/events?after=x"))
        .bearer_auth(&carol)
        .send()
        .unwrap();
    let code = resp.status();
    let body: Value = resp.json().expect("a JSON error");
    api.check("GET", "/api/v1/events?after=x", code, &body);
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    // A host's history: success rate and the duration trend; the pipelines page.
    let page = |path: &str| {
        let resp = api
            .http
            .get(api.daemon.url(path))
            .bearer_auth(&carol)
            .send()
            .unwrap();
        (resp.status(), resp.text().unwrap())
    };
    let (code, html) = page("/hosts/demo");
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(
        html.contains("100% of the last 3 finished runs succeeded (3 of 3)"),
        "{html}"
    );
    assert!(
        html.contains("<svg id=\"trend\"") && html.contains("role=\"img\""),
        "{html}"
    );
    assert_eq!(html.matches("<rect class=\"ok\"").count(), 3, "{html}");
    // The record: what jarvis made and keeps for the host (destroyed by the last run).
    assert!(
        html.contains("<dl id=\"record\"><dt>State</dt><dd>destroyed</dd>"),
        "{html}"
    );
    let (code, html) = page("/hosts/broken");
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("jarvis has no record of this host"), "{html}");
    assert!(
        html.contains("0% of the last 2 finished runs succeeded"),
        "{html}"
    );
    assert!(html.contains("<rect class=\"bad\""), "{html}");
    let (code, _) = page("/hosts/nosuch");
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, html) = page("/pipelines");
    assert_eq!(code, StatusCode::OK);
    for needle in [
        "<h2 id=\"p-demo-again\">demo-again</h2>",
        "redeploy for providers local",
        "<code>local:check</code>",
        "(may wait for approval)",
    ] {
        assert!(html.contains(needle), "no {needle} in {html}");
    }
    let (_, html) = page("/");
    assert!(html.contains("<a href=\"/hosts/demo\">demo</a>"), "{html}");

    // Every documented operation answered well at least once, and every one that can
    // refuse did refuse here (events' stream is checked in its own test, the rollouts API in
    // api_rolls_over_a_group_and_promotes_a_host).
    for (template, method) in api.spec.operations() {
        if rollouts_api(&template) || triggers_api(&template) {
            continue;
        }
        let seen = api
            .spec
            .seen()
            .get(&(template.clone(), method.clone()))
            .cloned()
            .unwrap_or_default();
        if template != "/events" {
            assert!(
                seen.iter().any(|s| *s < 300),
                "{method} {template} never answered well: {seen:?}"
            );
        }
        if template != "/openapi.json" {
            assert!(
                seen.iter().any(|s| *s >= 400),
                "{method} {template} never refused: {seen:?}"
            );
        }
    }

    // Audit rows like chat's, with the web user as identity and the client as channel.
    let rows = home.sql(
        "SELECT identity || '|' || IFNULL(person, '') || '|' || network || '|' || channel || '|' || command FROM audit ORDER BY id",
    );
    assert!(
        rows.iter()
            .any(|r| r == "web:alice|alice|web|127.0.0.1|deploy demo"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r == &format!("web:bob|bob|web|127.0.0.1|approve #{gated}")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("web:carol|carol|web|127.0.0.1|deploy demo")),
        "{rows:?}"
    );
    let refused =
        home.sql("SELECT outcome FROM audit WHERE identity = 'web:carol' ORDER BY id LIMIT 1");
    assert_eq!(refused, vec!["refused: needs deployer".to_string()]);

    // /metrics in Prometheus text format.
    let metrics = api
        .http
        .get(api.daemon.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "jarvis_runs{pipeline=\"demo\",state=\"succeeded\"} 1",
        "jarvis_runs{pipeline=\"gated\",state=\"succeeded\"} 1",
        "jarvis_runs{pipeline=\"demo\",state=\"failed\"} 2",
        "# TYPE jarvis_stage_duration_seconds histogram",
        "jarvis_stage_duration_seconds_bucket{task=\"local:step\",le=\"+Inf\"}",
        "jarvis_stage_duration_seconds_count{task=\"local:check\"}",
        "jarvis_workers_running 0",
        "jarvis_outbox_undeliverable{network=\"web\"} 0",
        "jarvis_outbox_lag_seconds{network=\"web\"} 0",
        "jarvis_queue_depth{pipeline=\"demo\"} 0",
        "# TYPE jarvis_store_write_seconds histogram",
        "jarvis_store_write_seconds_bucket{le=\"+Inf\"}",
        "# TYPE jarvis_chat_connected gauge",
    ] {
        assert!(metrics.contains(needle), "no {needle} in:\n{metrics}");
    }

    // No token, and no secret of a design, ever came back in an answer.
    for body in &api.bodies {
        for t in [&alice, &bob, &carol] {
            assert!(!body.contains(t.as_str()), "a token leaked: {body}");
        }
        assert!(!body.contains(PLANTED), "a secret leaked: {body}");
        assert!(
            !body.contains("tok-8e7d6c"),
            "a worker's token leaked: {body}"
        );
    }
    // Nor went to the log.
    let log = api.daemon.stderr_text();
    for t in [&alice, &bob, &carol] {
        assert!(!log.contains(t.as_str()), "a token in the log");
    }

    // Revoked: refused from then on.
    let out = Command::new(JARVIS)
        .args(["token", "revoke", "carol", "--config"])
        .arg(home.config())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = api.get("/api/v1/runs", Some(&carol));
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}

/// The document and the router agree: every documented operation is served (it reaches a
/// handler, not the API's "no such endpoint" nor 405), every other method on a documented
/// path is 405, and the router's API routes are only the documented ones (the one list in
/// `api::routes`, which makes both).
#[test]
fn the_openapi_document_is_what_the_router_serves() {
    let home = home();
    let mut api = Api::start(&home);
    let operations = api.spec.operations();
    assert!(operations.len() >= 12, "{operations:?}");
    let concrete = |template: &str| {
        template
            .replace("{id}", "1")
            .replace("{action}", "cancel")
            .replace("{name}", "reload")
    };
    for (template, method) in &operations {
        let path = format!("{}{}", openapi::PREFIX, concrete(template));
        let resp = match method.as_str() {
            "GET" => api.http.get(api.daemon.url(&path)),
            "POST" => api.http.post(api.daemon.url(&path)).json(&json!({})),
            other => panic!("an operation with method {other}"),
        }
        .send()
        .expect("jarvis answers");
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let text = resp.text().unwrap_or_default();
        assert!(
            !text.contains("no such API endpoint"),
            "{method} {path} is documented but not served: {text}"
        );
        if template != "/events" {
            let body: Value = serde_json::from_str(&text).expect("JSON");
            api.check(method, &path, status, &body);
        }
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if operations.iter().any(|(t, m)| t == template && m == other) {
                continue;
            }
            let resp = api
                .http
                .request(other.parse().expect("a method"), api.daemon.url(&path))
                .send()
                .expect("jarvis answers");
            assert_eq!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {path} is served but not documented"
            );
            // Like every other error: JSON, one sentence naming what the path takes.
            let allow = resp
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert!(
                allow.contains(method.as_str()),
                "{other} {path}: Allow {allow:?}"
            );
            assert_eq!(
                resp.headers()
                    .get("cache-control")
                    .and_then(|v| v.to_str().ok()),
                Some("no-store"),
                "{other} {path}"
            );
            // The path as sent (`{host}` is left unreplaced, so percent-encoded).
            let sent = resp.url().path().to_string();
            let text = resp.text().unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{other} {path}: a 405 that is not JSON ({e}): {text:?}")
            });
            assert_eq!(
                error_of(&body),
                format!(
                    "{other} is not allowed on {sent}; it takes {}",
                    allow.replace(',', ", ")
                ),
            );
        }
    }
    // An undocumented path under /api/v1 reaches the API's own 404, in JSON.
    let (code, body) = api.get("/api/v1/runs/1/log/more", None);
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("no such API endpoint"), "{body}");
    // The API router is made only of documented routes: `api::routes` adds each with
    // `routes!` (route and operation together), and the server nests nothing else there.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/api.rs"))
        .expect("the API's source");
    let body = source
        .split("pub(crate) fn routes()")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("api::routes");
    for line in body.lines().map(str::trim).filter(|l| l.starts_with('.')) {
        assert!(
            line.starts_with(".routes(routes!(") || line == ".fallback(not_found)",
            "api::routes adds a route the document would not know: {line}"
        );
    }
    let server = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs"))
        .expect("the server's source");
    assert_eq!(
        server.matches("\"/api").count(),
        1,
        "one API mount in src/http/mod.rs"
    );
    assert!(server.contains(".nest(\"/api/v1\", api)"));
}

/// The OpenAPI document is valid for a validator that is not the crate that writes it
/// (openapi-spec-validator from PyPI, which tests/testbed/install puts in a venv of its own),
/// and every `$ref` in it resolves — which client generators need and which the checker in
/// tests/http/openapi.rs, following only body schemas, would not notice.
#[test]
fn the_openapi_document_is_valid_for_an_independent_validator() {
    let home = home();
    let api = Api::start(&home);
    let doc = api.spec.doc.clone();
    let mut refs = Vec::new();
    openapi::refs(&doc, &mut refs);
    assert!(
        refs.iter().any(|r| r == "#/components/schemas/RunAction"),
        "{refs:?}"
    );
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("a $ref outside the document: {r}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "the $ref {r} does not resolve in the document"
        );
    }

    let venv = std::env::var("OPENAPI_VALIDATOR_VENV")
        .unwrap_or_else(|_| "/opt/jarvis-testbed/openapi-spec-validator".into());
    let validator = std::path::Path::new(&venv).join("bin/openapi-spec-validator");
    if !validator.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no {} (tests/testbed/install installs it)",
            validator.display()
        );
        eprintln!(
            "SKIPPED the independent validator: no {}",
            validator.display()
        );
        return;
    }
    let file = home.path("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("JSON")).expect("written");
    let out = Command::new(&validator)
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document:\n{said}"
    );
    assert!(said.contains("OK"), "{said}");
}

/// The small promises of docs/http.md's errors: a 405 has a body (JSON under the API, the
/// refusal page on the page's own paths), API answers are never cached, and a limit of 0 is
/// refused rather than read as 1.
#[test]
fn errors_have_bodies_api_answers_are_not_cached_and_limit_0_is_refused() {
    let home = home();
    let alice = make_token(&home, "alice");
    let mut api = Api::start(&home);

    let resp = api
        .http
        .delete(api.daemon.url("/api/v1/runs"))
        .bearer_auth(&alice)
        .send()
        .expect("jarvis answers");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        resp.headers()
    );
    let body: Value = resp.json().expect("a JSON 405");
    assert_eq!(
        error_of(&body),
        "DELETE is not allowed on /api/v1/runs; it takes GET, HEAD"
    );
    // A page's path asked with the wrong method: the refusal page, saying the same.
    let resp = api
        .http
        .get(api.daemon.url("/logout"))
        .send()
        .expect("jarvis answers");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let html = resp.text().expect("a body");
    assert!(
        html.contains("GET is not allowed on /logout; it takes POST"),
        "{html}"
    );
    // Hooks are for programs: JSON.
    let resp = api
        .http
        .get(api.daemon.url("/hooks/deploy"))
        .send()
        .expect("jarvis answers");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = resp.json().expect("a JSON 405");
    assert!(error_of(&body).starts_with("GET is not allowed on /hooks/deploy"));

    // Every API answer says no-store: a success, a refusal, the API's 404, the document.
    for (path, token, status) in [
        ("/api/v1/runs", Some(alice.as_str()), StatusCode::OK),
        ("/api/v1/runs", None, StatusCode::UNAUTHORIZED),
        ("/api/v1/nothing-here", None, StatusCode::NOT_FOUND),
        ("/api/v1/openapi.json", None, StatusCode::OK),
    ] {
        let mut req = api.http.get(api.daemon.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("jarvis answers");
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{path} ({status})"
        );
    }

    // limit=0 is a page of nothing: 422 with one line, where it used to mean 1; so is
    // lines=0. 1 and more than 200 still answer.
    let (code, body) = api.get("/api/v1/runs?limit=0", Some(&alice));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body), "limit must be 1 to 200, as in ?limit=50");
    let (code, _) = api.get("/api/v1/runs?limit=1", Some(&alice));
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api.get("/api/v1/runs?limit=500", Some(&alice));
    assert_eq!(code, StatusCode::OK);
    let (code, run) = api.post("/api/v1/deploy", &alice, json!({"design": "demo"}));
    assert_eq!(code, StatusCode::ACCEPTED, "{run}");
    let id = run["run"].as_i64().expect("a run id");
    let (code, body) = api.get(&format!("/api/v1/runs/{id}/log?lines=0"), Some(&alice));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body), "lines must be 1 to 1000, as in ?lines=50");
    api.wait_state(id, &alice, "succeeded");
}

/// What ships turns the web part on, on loopback only: the example configuration (which the
/// systemd unit runs) has `http:` on 127.0.0.1.
#[test]
fn the_example_configuration_serves_http_on_loopback() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/config/example.yaml")).unwrap();
    assert!(
        example.contains("\nhttp:\n  listen: 127.0.0.1:8080\n"),
        "config/example.yaml enables http on 127.0.0.1:8080"
    );
    let unit = std::fs::read_to_string(format!("{root}/deploy/jarvis.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/jarvis run --config /etc/jarvis/jarvis.yaml"));
    assert!(
        unit.contains("127.0.0.1:8080"),
        "the unit says where the page is"
    );
}

/// Reads SSE events from `resp` until `n` have come: (id, data).
fn read_events(resp: &mut reqwest::blocking::Response, n: usize) -> Vec<(i64, Value)> {
    let mut events = Vec::new();
    let mut reader = BufReader::new(resp.by_ref());
    let (mut id, mut data) = (None, None);
    let mut line = String::new();
    while events.len() < n {
        line.clear();
        let read = reader.read_line(&mut line).expect("the stream goes on");
        assert!(read > 0, "the event stream ended after {events:?}");
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("id:") {
            id = v.trim().parse::<i64>().ok();
        } else if let Some(v) = l.strip_prefix("data:") {
            data = serde_json::from_str::<Value>(v.trim()).ok();
        } else if l.is_empty()
            && let (Some(i), Some(d)) = (id.take(), data.take())
        {
            events.push((i, d));
        }
    }
    events
}

#[test]
fn events_stream_live_and_resume_after_the_last_seen() {
    let home = home();
    let alice = make_token(&home, "alice");
    let daemon = Daemon::start(&home);
    let http = client();
    let stream = |after: Option<i64>| {
        let mut req = http
            .get(daemon.url("/api/v1/events"))
            .bearer_auth(&alice)
            .timeout(PATIENCE);
        if let Some(a) = after {
            req = req.header("Last-Event-ID", a.to_string());
        }
        let resp = req.send().expect("the event stream opens");
        assert_eq!(resp.status(), StatusCode::OK);
        resp
    };
    let mut live = stream(None);
    let resp = http
        .post(daemon.url("/api/v1/deploy"))
        .bearer_auth(&alice)
        .json(&json!({"design": "demo"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // run_started, stage_started (stage 2 notifies), succeeded.
    let events = read_events(&mut live, 3);
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, d)| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["run_started", "stage_started", "succeeded"],
        "{events:?}"
    );
    assert!(
        events[2].1["text"].as_str().unwrap().contains("succeeded"),
        "{events:?}"
    );
    drop(live);
    // Reconnected after the first: the rest, each once, in order.
    let mut again = stream(Some(events[0].0));
    let rest = read_events(&mut again, 2);
    assert_eq!(rest, events[1..].to_vec());
    // Unauthenticated: 401.
    let resp = http.get(daemon.url("/api/v1/events")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn tokens_are_made_in_chat_by_admins_and_shown_once_privately() {
    let home = home();
    let mut sh = home.shell();
    sh.ask(
        "help token",
        "token create PERSON | token revoke PERSON|#ID | token list",
    );
    let public = sh.ask("token create alice", "token #1 for alice made");
    assert!(!public.contains("jv_"), "{public}");
    let private = sh.expect("token #1 for alice: jv_");
    let token = private.rsplit(' ').next().unwrap().to_string();
    sh.ask(
        "token create mallory",
        "token failed: no person 'mallory' under roles.people",
    );
    sh.ask("token list", "#1 alice made");
    sh.ask("token revoke #1", "token #1 revoked");
    sh.ask(
        "token revoke alice",
        "token failed: alice has no live tokens",
    );
    sh.ask("token list", "no live tokens");
    let rows = home.sql("SELECT command || ' → ' || outcome FROM audit ORDER BY id");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("token create alice → token #1 for alice made")),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| !r.contains(&token)), "{rows:?}");
    assert!(support::files_containing(&home.path("data"), token.as_bytes()).is_empty());
    drop(sh);
}

#[test]
fn the_page_needs_a_login_and_forms_need_their_csrf_token() {
    let home = home();
    let alice = make_token(&home, "alice");
    let daemon = Daemon::start(&home);
    let http = client();
    // The anonymous are sent to log in.
    let resp = http.get(daemon.url("/")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // The login form sets its own nonce cookie; a login without it is refused.
    let resp = http
        .post(daemon.url("/login"))
        .form(&[("token", alice.as_str()), ("csrf", "x")])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let form = http.get(daemon.url("/login")).send().unwrap();
    let nonce_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("jarvis_login=")))
        .unwrap()
        .to_string();
    let nonce = nonce_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("jarvis_login=")
        .to_string();
    let resp = http
        .post(daemon.url("/login"))
        .header("cookie", format!("jarvis_login={nonce}"))
        .form(&[("token", alice.as_str()), ("csrf", nonce.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("jarvis_session=")))
        .unwrap()
        .to_string();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let cookie = session.split(';').next().unwrap().to_string();
    let page = http
        .get(daemon.url("/"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().unwrap();
    assert!(html.contains("id=\"deploy-button\""), "{html}");
    assert!(!html.contains(&alice), "the token is on the page");
    // A form without its CSRF token, or with another: refused, nothing queued.
    for csrf in [None, Some("forged")] {
        let mut fields = vec![("design", "demo")];
        if let Some(c) = csrf {
            fields.push(("csrf", c));
        }
        let resp = http
            .post(daemon.url("/deploy"))
            .header("cookie", &cookie)
            .form(&fields)
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.text().unwrap().contains("CSRF"));
    }
    assert_eq!(home.sql("SELECT COUNT(*) FROM runs"), vec!["0".to_string()]);
    // With it: the run's page.
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let resp = http
        .post(daemon.url("/deploy"))
        .header("cookie", &cookie)
        .form(&[("design", "demo"), ("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get("location").unwrap(), "/runs/1");
    // A run action without its CSRF token: refused, as every form.
    let resp = http
        .post(daemon.url("/runs/1/cancel"))
        .header("cookie", &cookie)
        .form(&[("x", "y")])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A run action redirects to the run's page, which shows its outcome once.
    let resp = http
        .post(daemon.url("/runs/1/approve"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get("location").unwrap(), "/runs/1");
    let flash = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("jarvis_flash=")))
        .expect("the outcome in a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let resp = http
        .get(daemon.url("/runs/1"))
        .header("cookie", format!("{cookie}; {flash}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cleared = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with("jarvis_flash=;")));
    assert!(cleared, "the outcome is shown once");
    let html = resp.text().unwrap();
    assert!(
        html.contains("<p class=\"failure\" role=\"alert\">run #1 "),
        "{html}"
    );
    let rows = home.sql("SELECT identity || ' ' || command FROM audit WHERE network = 'web'");
    assert_eq!(rows[0], "web:alice deploy demo");
}

#[test]
fn the_browser_logs_in_deploys_with_the_button_and_sees_the_run_live() {
    let Some(driver) = webdriver::Driver::start() else {
        return;
    };
    let home = home();
    let alice = make_token(&home, "alice");
    let bob = make_token(&home, "bob");
    let daemon = Daemon::start(&home);
    let artifacts = webdriver::artifacts();

    let browser = driver.session();
    browser.go(&daemon.url("/"));
    browser.wait_text("h1", "Log in");
    browser.type_into("#token", &alice);
    browser.click("#login-button");
    browser.wait_text("h1", "Runs");

    // The button: the run page follows it, and the stages go on without a reload.
    browser.type_into("#design", "walk");
    browser.click("#deploy-button");
    browser.wait_text("h1", "Run #1");
    // Every status line the page shows from now on, and a mark that a reload would lose.
    browser.eval(
        "window.jarvisMarker = 42; \
         var live = document.querySelector('#live'); \
         window.jarvisSeen = [document.querySelector('#status').innerText]; \
         new MutationObserver(function () { \
           var s = document.querySelector('#status'); if (!s) { return; } \
           var seen = window.jarvisSeen; \
           if (seen[seen.length - 1] !== s.innerText) { seen.push(s.innerText); } \
         }).observe(live, { childList: true, subtree: true, characterData: true }); \
         return 1;",
    );
    browser.wait_text("#status", "running");
    browser.screenshot(&artifacts.join("run-running.png"));
    // A selection in the log: kept while the log grows (new lines are appended to it, not
    // the log replaced).
    browser.wait_until(
        "var log = document.querySelector('#log'); \
         return log !== null && log.textContent.indexOf('(no log lines yet)') < 0;",
        PATIENCE,
        "a log line on the run page",
    );
    browser.eval(
        "var log = document.querySelector('#log'); var r = document.createRange(); \
         r.selectNodeContents(log); var s = window.getSelection(); s.removeAllRanges(); \
         s.addRange(r); window.jarvisSelected = s.toString(); \
         window.jarvisLogText = log.firstChild; return 1;",
    );
    browser.wait_text("#status", "succeeded in");
    browser.screenshot(&artifacts.join("run-succeeded.png"));
    assert_eq!(
        browser.eval("return window.jarvisMarker;"),
        json!(42),
        "the page was reloaded"
    );
    let seen = browser.eval("return window.jarvisSeen;");
    let seen: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        seen.iter()
            .any(|s| s.contains("stage 3/4") || s.contains("stage 4/4")),
        "the timeline did not advance live: {seen:?}"
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('li.stage.st-succeeded').length;"),
        json!(4)
    );
    assert_eq!(
        browser.eval(
            "var sel = window.getSelection().toString(); \
             return [window.jarvisSelected.length > 0, sel === window.jarvisSelected \
                     || sel.indexOf(window.jarvisSelected) === 0, \
                     window.jarvisLogText === document.querySelector('#log').firstChild];"
        ),
        json!([true, true, true]),
        "the selection in the log was lost, or the log replaced"
    );
    // Times: UTC in `datetime` (and the title), shown in the browser's zone with how long ago.
    let times = browser.eval(
        "return Array.prototype.map.call(document.querySelectorAll('#times time'), \
           function (t) { return [t.getAttribute('datetime'), t.title, t.textContent]; });",
    );
    let times = times.as_array().expect("a list").clone();
    assert_eq!(times.len(), 3, "asked, started, finished: {times:?}");
    for t in &times {
        let (iso, title, text) = (
            t[0].as_str().unwrap(),
            t[1].as_str().unwrap(),
            t[2].as_str().unwrap(),
        );
        assert!(iso.ends_with('Z') && iso.len() == 20, "{t}");
        assert!(title.ends_with(" UTC"), "{t}");
        assert!(text.ends_with("(just now)"), "{t}");
    }

    // A failure shows its stage and reason; this time the plan first, then its button.
    browser.go(&daemon.url("/"));
    browser.type_into("#design", "broken");
    browser.click("#plan-button");
    browser.wait_text("#plan", "plan for broken (local): demo pipeline, 4 stages");
    browser.click("#deploy-button");
    browser.wait_text("h1", "Run #2");
    browser.wait_text(
        "#failure",
        "Failed at stage 3/4 local:step: demo failure at stage 3",
    );
    browser.screenshot(&artifacts.join("run-failed.png"));

    // A gated run waits; alice cannot approve her own, bob can, from his own browser.
    browser.go(&daemon.url("/"));
    browser.type_into("#design", "gated");
    browser.click("#deploy-button");
    browser.wait_text("h1", "Run #3");
    browser.wait_text("#status", "waiting for approval");
    browser.click("#approve-button");
    browser.wait_text(".failure", "another person must approve it");

    let second = driver.session();
    second.go(&daemon.url("/login"));
    second.type_into("#token", &bob);
    second.click("#login-button");
    second.wait_text("h1", "Runs");
    second.go(&daemon.url("/runs/3"));
    second.click("#approve-button");
    second.wait_text(".notice", "approved gated deploy #3");
    second.wait_text("#status", "succeeded in");
    second.screenshot(&artifacts.join("run-approved.png"));
    // alice's page saw it too, live.
    browser.wait_text("#status", "succeeded in");

    // An open runs page with no run active (so no polling): a run started elsewhere (the
    // API here, as chat would) appears on it without a reload, brought by the stream's
    // named events alone.
    browser.go(&daemon.url("/"));
    browser.wait_text("h1", "Runs");
    assert_eq!(
        browser.eval("return document.querySelector('#live [data-active=\"1\"]') === null;"),
        json!(true),
        "a run is still active, so polling could bring the row"
    );
    assert_eq!(
        browser.eval("return document.querySelector('#live').hasAttribute('aria-live');"),
        json!(false),
        "aria-live on the whole table makes a screen reader read every row again"
    );
    browser.wait_until(
        "return document.querySelector('#live').getAttribute('data-listening') === '1';",
        PATIENCE,
        "the runs page following the event stream",
    );
    // Focus on a row's link, and marks a reload or a replaced row would lose.
    browser.eval(
        "window.jarvisMarker = 43; window.jarvisRow = document.getElementById('run-3'); \
         document.querySelector('#run-3 a').focus(); return 1;",
    );
    let http = client();
    let deploy = |design: &str| -> i64 {
        let resp = http
            .post(daemon.url("/api/v1/deploy"))
            .bearer_auth(&alice)
            .json(&json!({ "design": design }))
            .send()
            .expect("jarvis answers");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let body: Value = resp.json().expect("JSON");
        body["run"].as_i64().expect("the run's id")
    };
    let started = Instant::now();
    let id = deploy("demo");
    browser.wait_until(
        &format!("return document.getElementById('run-{id}') !== null;"),
        PATIENCE,
        &format!("run #{id}'s row on the open runs page"),
    );
    eprintln!(
        "run #{id} appeared on the open page after {:?}",
        started.elapsed()
    );
    browser.wait_until(
        &format!(
            "var r = document.getElementById('run-{id}'); \
             return r !== null && r.className === 'st-succeeded';"
        ),
        PATIENCE,
        &format!("run #{id}'s row saying succeeded"),
    );
    assert_eq!(
        browser.eval(
            "return [window.jarvisMarker, \
                     window.jarvisRow === document.getElementById('run-3'), \
                     document.activeElement === document.querySelector('#run-3 a'), \
                     document.querySelectorAll('#live tbody tr').length, \
                     document.getElementById('announce').textContent.length > 0];"
        ),
        json!([43, true, true, 4, true]),
        "the page was reloaded, the row replaced, focus lost, or nothing announced"
    );
    browser.screenshot(&artifacts.join("runs-live.png"));

    // The session ends under the open page: the next refresh says so in one line instead of
    // pasting the login page (and its header) into the runs.
    browser.delete_cookies();
    deploy("broken");
    browser.wait_until(
        "return document.getElementById('signed-out') !== null;",
        PATIENCE,
        "the signed-out line",
    );
    assert_eq!(
        browser.eval(
            "return [document.getElementById('signed-out').innerText, \
                     document.querySelectorAll('header').length, \
                     document.querySelector('#live #token') === null];"
        ),
        json!(["Signed out — sign in again", 1, true]),
    );
    drop(daemon);
}

#[test]
fn jarvis_shell_with_no_configuration_serves_the_page_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // The data folder itself: jarvis refuses one that others may enter (tempfile's is 0755).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut child = Command::new(JARVIS)
        .arg("shell")
        .env_remove("JARVIS_CONFIG")
        .env("JARVIS_DATA_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jarvis shell starts");
    let errout = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(errout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(PATIENCE)
            .expect("jarvis shell says where its page is");
        if line.contains("web page at") {
            break line;
        }
    };
    // jarvis: web page at http://127.0.0.1:PORT/ (log in as yourself, once: http://…/login/console?key=…)
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap()
        .to_string();
    let link = line
        .split_whitespace()
        .find(|w| w.contains("/login/console?key="))
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    let http = client();
    assert_eq!(
        http.get(&url).send().unwrap().status(),
        StatusCode::SEE_OTHER
    );
    let resp = http.get(&link).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("jarvis_session=")))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // Once only.
    assert_eq!(
        http.get(&link).send().unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let page = http.get(&url).header("cookie", &cookie).send().unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().unwrap();
    assert!(html.contains("logged in as <strong>"), "{html}");
    assert!(html.contains("id=\"deploy-button\""), "{html}");
    // The console user's roles (admin, in the demonstration setup) hold on the web too.
    let me: Value = http
        .get(format!("{url}api/v1/whoami"))
        .header("cookie", &cookie)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["roles"], json!(["admin"]), "{me}");
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn https_from_certificate_files() {
    let home = home();
    // A CA, and a certificate for 127.0.0.1 that it signed.
    let p = |name: &str| home.path(name).display().to_string();
    std::fs::write(
        home.path("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    for args in [
        format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=test-ca -keyout {} -out {}",
            p("ca-key.pem"),
            p("ca.pem")
        ),
        format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -keyout {} -out {}",
            p("key.pem"),
            p("leaf.csr")
        ),
        format!(
            "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -days 1 -extfile {} -out {}",
            p("leaf.csr"),
            p("ca.pem"),
            p("ca-key.pem"),
            p("leaf.ext"),
            p("cert.pem")
        ),
    ] {
        let out = Command::new("openssl")
            .args(args.split(' '))
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let config = std::fs::read_to_string(home.config()).unwrap().replace(
        "http:\n  listen: 127.0.0.1:0\n",
        &format!(
            "http:\n  listen: 127.0.0.1:0\n  tls: {{ certificate: {}, key: {} }}\n",
            home.path("cert.pem").display(),
            home.path("key.pem").display()
        ),
    );
    std::fs::write(home.config(), config).unwrap();
    let alice = make_token(&home, "alice");
    let daemon = Daemon::start(&home);
    let base = daemon.base.replace("http://", "https://");
    install_tls_provider();
    let cert =
        reqwest::Certificate::from_pem(&std::fs::read(home.path("ca.pem")).unwrap()).unwrap();
    let https = Client::builder()
        .add_root_certificate(cert)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let me: Value = https
        .get(format!("{base}/api/v1/whoami"))
        .bearer_auth(&alice)
        .send()
        .expect("an HTTPS answer")
        .json()
        .unwrap();
    assert_eq!(me["person"], "alice");
    // The session cookie is Secure under TLS.
    let form = https.get(format!("{base}/login")).send().unwrap();
    let cookie = form
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    // Plain HTTP to it gets no answer.
    assert!(client().get(daemon.url("/healthz")).send().is_err());
}

/// The rollouts API's operations, exercised by api_rolls_over_a_group_and_promotes_a_host.
fn rollouts_api(template: &str) -> bool {
    template.starts_with("/rollouts") || template == "/promote"
}

/// The schedules and named actions, checked in api_lists_schedules_and_runs_named_actions.
fn triggers_api(template: &str) -> bool {
    template == "/schedules" || template.starts_with("/actions/")
}

#[test]
fn api_rolls_over_a_group_and_promotes_a_host() {
    let home = Home::new(
        "pipelines:
  local:
    providers: [local]
    promote_within: 1h
    stages:
      - { task: \"local:step\", idempotent: true }
environments:
  order: [{ name: staging }, { name: production }]
groups:
  pair: { hosts: [a1, a2], max_parallel: 1 }
  slow: { hosts: [b1] }
roles:
  people:
    alice: [ { xmpp_jid: alice@example.com } ]
    carol: [ { xmpp_jid: carol@example.com } ]
  grants:
    - { person: alice, roles: [deployer] }
    - { person: carol, roles: [viewer] }
http:
  listen: 127.0.0.1:0
",
    );
    for host in ["a1", "a2"] {
        home.design(
            host,
            &format!(
                "instance:\n  hostname: {host}\n  provider: local\n  environment: staging\ndemo:\n  step_ms: 50\n"
            ),
        );
    }
    home.design(
        "b1",
        "instance:\n  hostname: b1\n  provider: local\n  environment: staging\ndemo:\n  step_ms: 60000\n",
    );
    let alice = make_token(&home, "alice");
    let mut api = Api::start(&home);
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({ "design": "group:pair" }));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("rollout #1 of group pair started"),
        "{body}"
    );
    let deadline = Instant::now() + PATIENCE;
    let rollout = loop {
        let (code, r) = api.get("/api/v1/rollouts/1", Some(&alice));
        assert_eq!(code, StatusCode::OK, "{r}");
        if r["state"] == "succeeded" {
            break r;
        }
        assert!(Instant::now() < deadline, "the rollout never ended: {r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rollout["hosts"][0]["host"], "a1");
    assert_eq!(rollout["hosts"][1]["state"], "done");
    assert!(
        rollout["status"]
            .as_str()
            .unwrap_or_default()
            .contains("2/2 done, 0 running, 0 failed"),
        "{rollout}"
    );
    let (_, list) = api.get("/api/v1/rollouts", Some(&alice));
    assert_eq!(list["rollouts"][0]["id"], 1, "{list}");
    // The page shows it, and a staging run's page offers the promotion.
    let page = |path: &str| {
        api.http
            .get(api.daemon.url(path))
            .bearer_auth(&alice)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let rollouts = page("/rollouts");
    assert!(
        rollouts.contains("Rollout #1 of pair") && rollouts.contains("2/2 done"),
        "{rollouts}"
    );
    let first = rollout["hosts"][0]["run"].as_i64().expect("a1's run");
    let run_page = page(&format!("/runs/{first}"));
    assert!(run_page.contains("Promote a1 to production"), "{run_page}");
    let (code, body) = api.post("/api/v1/rollouts/1/resume", &alice, json!({}));
    assert_eq!(code, StatusCode::CONFLICT, "{body}");

    // The refusals, each documented: a viewer may read but not cancel, an unknown rollout
    // or action is not found, and a change needs a login.
    let carol = make_token(&home, "carol");
    let (code, body) = api.get("/api/v1/rollouts/1", Some(&carol));
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api.post("/api/v1/rollouts/1/cancel", &carol, json!({}));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, body) = api.get("/api/v1/rollouts/99", Some(&alice));
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(error_of(&body).contains("no rollout #99"), "{body}");
    let (code, body) = api.post("/api/v1/rollouts/99/cancel", &alice, json!({}));
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = api.post("/api/v1/rollouts/1/frobnicate", &alice, json!({}));
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = api.call("POST", "/api/v1/rollouts/1/cancel", None, Some(json!({})));
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");

    // Both succeeded on staging: a1 may go to production; an unknown environment is refused.
    let (code, body) = api.post(
        "/api/v1/promote",
        &alice,
        json!({ "host": "a1", "environment": "production" }),
    );
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let run = body["run"].as_i64().expect("a run id");
    api.wait_state(run, &alice, "succeeded");
    let (code, body) = api.post(
        "/api/v1/promote",
        &alice,
        json!({ "host": "a2", "environment": "qa" }),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        error_of(&body).contains("not a configured environment"),
        "{body}"
    );

    // A running rollout (its one host's run takes a minute) is cancelled, with its run.
    let (code, body) = api.post("/api/v1/deploy", &alice, json!({ "design": "group:slow" }));
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api.post("/api/v1/rollouts/2/cancel", &alice, json!({}));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cancelling rollout #2 of slow"),
        "{body}"
    );
    let (code, body) = api.get("/api/v1/rollouts", Some("jv_not_a_token"));
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");

    // Every operation of the rollouts API answered well at least once and refused here.
    for (template, method) in api.spec.operations() {
        if !rollouts_api(&template) {
            continue;
        }
        let seen = api
            .spec
            .seen()
            .get(&(template.clone(), method.clone()))
            .cloned()
            .unwrap_or_default();
        assert!(
            seen.iter().any(|s| *s < 300),
            "{method} {template} never answered well: {seen:?}"
        );
        assert!(
            seen.iter().any(|s| *s >= 400),
            "{method} {template} never refused: {seen:?}"
        );
    }
}

#[test]
fn api_lists_schedules_and_runs_named_actions() {
    let home = Home::new(&format!(
        "pipelines:
  local:
    providers: [local]
    stages:
      - {{ task: \"local:step\", idempotent: true }}
workers:
  folders: [{workers}]
actions:
  reload:
    description: reload the web server gracefully
    role: admin
    stages:
      - task: reloader:reload
        with: {{ script: \"systemctl reload nginx\" }}
    lines: 2
schedules:
  nightly:
    cron: \"0 3 * * *\"
    timezone: Europe/Berlin
    run: redeploy web1
    person: ci
roles:
  people:
    ci: []
    dev: [ {{ xmpp_jid: dev@example.com }} ]
    carol: [ {{ xmpp_jid: carol@example.com }} ]
  grants:
    - {{ person: ci, roles: [deployer] }}
    - {{ person: dev, actions: [reload] }}
    - {{ person: carol, roles: [viewer] }}
http:
  listen: 127.0.0.1:0
",
        workers = support::test_workers().display()
    ));
    home.design(
        "web1",
        "instance:\n  hostname: web1\n  provider: local\ndemo:\n  step_ms: 50\n",
    );
    let dev = make_token(&home, "dev");
    let carol = make_token(&home, "carol");
    let mut api = Api::start(&home);

    // The schedules, for anyone who may view; not for a stranger.
    let deadline = Instant::now() + PATIENCE;
    let schedules = loop {
        let (code, body) = api.get("/api/v1/schedules", Some(&carol));
        assert_eq!(code, StatusCode::OK, "{body}");
        if body["schedules"][0]["next_at"].is_i64() {
            break body;
        }
        assert!(Instant::now() < deadline, "never planned: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(schedules["schedules"][0]["name"], "nightly");
    assert_eq!(schedules["schedules"][0]["catch_up"], "once");
    assert_eq!(schedules["schedules"][0]["last_at"], Value::Null);
    let (code, body) = api.get("/api/v1/schedules", Some("jv_not_a_token"));
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");

    // dev may run `reload` and gets its last lines; carol may not, and is told the role.
    let (code, body) = api.post("/api/v1/actions/reload", &dev, json!({ "host": "web1" }));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("on web1 succeeded"),
        "{body}"
    );
    assert_eq!(
        body["lines"],
        json!([
            "running: systemctl reload nginx",
            "reload done, 4 workers replaced"
        ])
    );
    let (code, body) = api.post("/api/v1/actions/reload", &carol, json!({ "host": "web1" }));
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        error_of(&body).contains("needs the admin role or a grant of action reload"),
        "{body}"
    );
    let (code, body) = api.post(
        "/api/v1/actions/frobnicate",
        &dev,
        json!({ "host": "web1" }),
    );
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = api.post("/api/v1/actions/reload", &dev, json!({ "hots": "web1" }));
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (code, body) = api.call(
        "POST",
        "/api/v1/actions/reload",
        None,
        Some(json!({ "host": "web1" })),
    );
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");

    for (template, method) in api.spec.operations() {
        if !triggers_api(&template) {
            continue;
        }
        let seen = api
            .spec
            .seen()
            .get(&(template.clone(), method.clone()))
            .cloned()
            .unwrap_or_default();
        assert!(
            seen.iter().any(|s| *s < 300),
            "{method} {template} never answered well: {seen:?}"
        );
        assert!(
            seen.iter().any(|s| *s >= 400),
            "{method} {template} never refused: {seen:?}"
        );
    }
}

/// Logs in on the web page with `token`; the session cookie (`jarvis_session=…`).
fn log_in(http: &Client, daemon: &Daemon, token: &str) -> String {
    let form = http.get(daemon.url("/login")).send().unwrap();
    let nonce = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok()?.strip_prefix("jarvis_login="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let resp = http
        .post(daemon.url("/login"))
        .header("cookie", format!("jarvis_login={nonce}"))
        .form(&[("token", token), ("csrf", nonce.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("jarvis_session=")))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string()
}

#[test]
fn one_token_keeps_ten_sessions_and_pushes_out_only_its_own_oldest() {
    let home = home();
    let alice = make_token(&home, "alice");
    let bob = make_token(&home, "bob");
    let daemon = Daemon::start(&home);
    let http = client();
    let status_of = |cookie: &str| {
        http.get(daemon.url("/"))
            .header("cookie", cookie)
            .send()
            .unwrap()
            .status()
    };
    let bobs = log_in(&http, &daemon, &bob);
    let alices: Vec<String> = (0..13).map(|_| log_in(&http, &daemon, &alice)).collect();
    // alice's three oldest sessions were ended: back to the login; her last ten work.
    for (i, cookie) in alices.iter().enumerate() {
        let want = if i < 3 {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::OK
        };
        assert_eq!(status_of(cookie), want, "alice's session {i}");
    }
    // bob, logged in before all of them, is still in.
    assert_eq!(status_of(&bobs), StatusCode::OK);
}
