//! `cargo bench --bench http`: the HTTP adapter with 10,000 runs in history — `GET
//! /api/v1/runs?limit=50`, one run's JSON and one run's page (median and p99, ms), the weight
//! of the runs page with its assets (KB), and an event's fan-out to 200 SSE clients (from
//! the event's commit to the last client, ms).

mod common;

use std::time::{Duration, Instant};

use common::{Bench, figure, percentile};
use futures_util::StreamExt;
use jarvis::app::Application;

const RUNS: usize = 10_000;
const CLIENTS: usize = 200;

fn history_sql() -> String {
    let stages = r#"[{"task":"noop:x","timeout_ms":60000,"retries":0,"backoff_ms":2000,"idempotent":true,"approval":false,"notify":false}]"#;
    let mut sql = String::from("BEGIN;\n");
    for i in 1..=RUNS {
        sql.push_str(&format!(
            "INSERT INTO runs (host, kind, pipeline, stages, on_failure, design_ref, requester, origin, state, \
             next_stage, initial_clipboard, clipboard, created_at, started_at, finished_at) VALUES \
             ('h{}', 'deploy', 'p', '{stages}', '[]', 'h', 'web:bench', '', 'succeeded', 1, '{{}}', '{{}}', \
             1700000000000, 1700000000000, 1700000100000);\n\
             INSERT INTO stage_runs (run_id, phase, stage, attempt, task, state, started_at, finished_at, exit_code) \
             VALUES ({i}, 'main', 0, 1, 'noop:x', 'succeeded', 1700000000000, 1700000001000, 0);\n",
            i % 2000
        ));
    }
    sql.push_str("COMMIT;\n");
    sql
}

async fn measure(client: &reqwest::Client, url: &str, token: &str, rounds: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let resp = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("an answer");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let body = resp.bytes().await.expect("a body");
        times.push(t.elapsed());
        assert!(!body.is_empty());
    }
    times.sort();
    times
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let bench = Bench::new();
    let mut settings = bench.settings(
        "  p:\n    providers: [bench]\n    stages:\n      - { task: \"noop:x\" }\n",
        8,
    );
    settings.roles = serde_saphyr::from_str(
        "people:\n  bench: [ { xmpp_jid: bench@example.com } ]\ngrants:\n  - { person: bench, roles: [admin] }\n",
    )
    .expect("roles");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = jarvis::store::Store::open(settings.database_url().expose())
            .await
            .expect("store");
        store.close().await;
    });
    let mut child = std::process::Command::new("sqlite3")
        .arg(settings.data_dir().join("jarvis.db"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 (tests/testbed/install installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(history_sql().as_bytes())
            .expect("history written");
    }
    assert!(child.wait().expect("sqlite3 ends").success());
    runtime.block_on(async {
        let app = Application::start(settings, None, false)
            .await
            .expect("jarvis starts");
        let (token, hash) = jarvis::chat::tokens::make().expect("a token");
        app.engine()
            .store()
            .add_api_token("bench", &hash, "bench")
            .await
            .expect("token stored");
        let server = jarvis::http::start(&app, jarvis::http::HttpConfig::local(), None)
            .await
            .expect("HTTP starts");
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS + 10)
            .build()
            .expect("client");
        for (name, path) in [
            ("api_runs_limit50", "/api/v1/runs?limit=50"),
            ("api_run", "/api/v1/runs/4321"),
            ("page_runs", "/"),
            ("page_run", "/runs/4321"),
        ] {
            let url = format!("{base}{path}");
            measure(&client, &url, &token, 50).await;
            let times = measure(&client, &url, &token, 1000).await;
            figure(&format!("{name}_median"), percentile(&times, 0.5), "ms");
            figure(&format!("{name}_p99"), percentile(&times, 0.99), "ms");
        }
        let mut weight = 0;
        for path in ["/", "/assets/app.js", "/assets/app.css"] {
            let body = client
                .get(format!("{base}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("an answer")
                .bytes()
                .await
                .expect("a body");
            weight += body.len();
        }
        figure("page_runs_weight", weight as f64 / 1024.0, "KB");

        // 200 clients on the event stream; one event; until the last one has it.
        let mut streams = Vec::new();
        for _ in 0..CLIENTS {
            let resp = client
                .get(format!("{base}/api/v1/events"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("a stream");
            assert!(resp.status().is_success());
            streams.push(resp.bytes_stream());
        }
        let start = Instant::now();
        app.engine()
            .store()
            .add_events(&[jarvis::store::NewEvent {
                run_id: 1,
                kind: "notice",
                body: serde_json::json!({"run": 1, "host": "h1", "kind": "deploy", "pipeline": "p",
                    "requester": "web:bench", "origin": "", "stages": 1, "text": "bench"}),
            }])
            .await
            .expect("event stored");
        let waits = streams.into_iter().map(|mut s| async move {
            while let Some(chunk) = s.next().await {
                let chunk = chunk.expect("stream data");
                if chunk.windows(3).any(|w| w == b"id:") {
                    return Instant::now();
                }
            }
            panic!("a stream ended")
        });
        let arrivals = tokio::time::timeout(
            Duration::from_secs(60),
            futures_util::future::join_all(waits),
        )
        .await
        .expect("every client got the event");
        let last = arrivals.iter().max().expect("arrivals");
        figure(
            "sse_fanout_200_last_ms",
            last.duration_since(start).as_secs_f64() * 1000.0,
            "ms",
        );
    });
}
