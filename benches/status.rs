//! `cargo bench --bench status`: `status` answered in-process by the bot, with 10,000 runs in
//! history (and a few active), as a console user would ask it.

mod common;

use std::time::{Duration, Instant};

use common::{Bench, figure, percentile};
use jarvis::app::Application;
use jarvis::chat::roles::Identity;
use jarvis::chat::{Incoming, Target};

const RUNS: usize = 10_000;

fn history_sql() -> String {
    let stages = r#"[{"task":"noop:x","timeout_ms":60000,"retries":0,"backoff_ms":2000,"idempotent":true,"approval":false,"notify":false}]"#;
    let mut sql = String::from("BEGIN;\n");
    for i in 1..=RUNS {
        let (state, finished) = if i > RUNS - 5 {
            ("waiting_approval", "NULL")
        } else {
            ("succeeded", "1700000100000")
        };
        sql.push_str(&format!(
            "INSERT INTO runs (host, kind, pipeline, stages, on_failure, design_ref, requester, origin, state, \
             next_stage, initial_clipboard, clipboard, created_at, started_at, finished_at) VALUES \
             ('h{}', 'deploy', 'p', '{stages}', '[]', 'h', 'console:bench', '', '{state}', 0, '{{}}', '{{}}', \
             1700000000000, 1700000000000, {finished});\n",
            i % 2000
        ));
    }
    sql.push_str("COMMIT;\n");
    sql
}

async fn measure(app: &Application, text: &str, rounds: usize) -> Vec<Duration> {
    let msg = Incoming {
        reply_to: Target::direct("console", "console"),
        nick: "console".into(),
        identities: vec![Identity::Console("console".into())],
        identity_note: None,
        text: text.into(),
    };
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let reply = app.bot().handle(&msg).await;
        times.push(t.elapsed());
        assert!(reply.is_some_and(|r| !r.public.is_empty()));
    }
    times.sort();
    times
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bench = Bench::new();
    let settings = bench.settings(
        "  p:\n    providers: [bench]\n    stages:\n      - { task: \"noop:x\" }\n",
        8,
    );
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
        for (name, text) in [
            ("status_all", "status"),
            ("status_host", "status h7"),
            ("status_id", "status #4321"),
        ] {
            measure(&app, text, 50).await;
            let times = measure(&app, text, 1000).await;
            figure(&format!("{name}_median"), percentile(&times, 0.5), "ms");
            figure(&format!("{name}_p99"), percentile(&times, 0.99), "ms");
        }
    });
}
