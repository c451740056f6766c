//! `cargo bench --bench pipeline`: the engine's own cost, with durable commits on
//! (SQLite WAL, synchronous=FULL) and a no-op worker (/bin/true), so what is measured is
//! jarvis, not the work.
//!
//! - stage overhead: one run of 300 stages with a 4 KiB clipboard; the interval between
//!   consecutive stage starts as the store recorded them (millisecond resolution).
//! - 1,000 concurrent 10-stage runs with 64 workers at once: wall time and the peak RSS of
//!   this process (engine and store in-process, as in the daemon).
//! - an idle daemon: the RSS of `jarvis run` with no runs, once it has settled.

mod common;

use std::time::{Duration, Instant};

use common::{Bench, figure, memory_mb, percentile, pipeline_of};
use jarvis::clipboard::Clipboard;
use jarvis::engine::pipeline::RunKind;
use jarvis::engine::{Engine, EngineConfig};
use jarvis::secrets::Masker;
use jarvis::store::{NewRun, Store};

fn engine(settings: &jarvis::config::Settings, store: Store) -> Engine {
    Engine::new(
        store,
        EngineConfig {
            scratch_dir: jarvis::engine::scratch::choose(&settings.data_dir(), None),
            data_dir: settings.data_dir(),
            worker_folders: settings.workers.folders.clone(),
            builtin: None,
            grants: Default::default(),
            max_workers: settings.limits.workers,
            stdout_cap: 1 << 20,
            stderr_keep: 1000,
            kill_grace: Duration::from_secs(5),
            masker: Masker::new(vec![], vec![]),
            sealer: None,
            lease: settings.cluster.lease,
            sole: true,
        },
    )
}

fn new_run(settings: &jarvis::config::Settings, host: &str, clipboard: Clipboard) -> NewRun {
    let p = &settings.pipelines["p"];
    let (stages, on_failure) = p.frozen_stages(Duration::from_secs(60));
    NewRun {
        host: host.into(),
        kind: RunKind::Deploy,
        pipeline: "p".into(),
        stages,
        on_failure,
        design_ref: host.into(),
        requester: "console:bench".into(),
        origin: String::new(),
        clipboard,
        retry_of: None,
        placement: Default::default(),
    }
}

fn clipboard_of(bytes: usize) -> Clipboard {
    let mut c = Clipboard::new();
    c.insert(
        "instance".into(),
        serde_json::json!({"hostname": "h", "provider": "bench"}),
    );
    c.insert(
        "padding".into(),
        serde_json::Value::String("x".repeat(bytes)),
    );
    c
}

async fn stage_overhead() {
    let bench = Bench::new();
    let settings = bench.settings(&pipeline_of(300), 8);
    let store = Store::open(settings.database_url().expose())
        .await
        .expect("store");
    let engine = engine(&settings, store.clone());
    engine.start().await.expect("start");
    let started = Instant::now();
    engine
        .submit(new_run(&settings, "h", clipboard_of(4096)))
        .await
        .expect("submit");
    engine.wait_idle().await;
    let total = started.elapsed();
    let rows = bench_sql(
        &settings,
        "SELECT started_us FROM stage_runs WHERE run_id = 1 ORDER BY stage",
    );
    let starts: Vec<i64> = rows.iter().filter_map(|l| l.parse().ok()).collect();
    let mut gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| Duration::from_micros((w[1] - w[0]).max(0) as u64))
        .collect();
    gaps.sort();
    figure(
        "stage_overhead_mean",
        total.as_secs_f64() * 1000.0 / 300.0,
        "ms",
    );
    figure("stage_overhead_median", percentile(&gaps, 0.5), "ms");
    figure("stage_overhead_p99", percentile(&gaps, 0.99), "ms");
    engine.shutdown();
    store.close().await;
}

async fn thousand_runs() {
    let bench = Bench::new();
    let settings = bench.settings(&pipeline_of(10), 64);
    let store = Store::open(settings.database_url().expose())
        .await
        .expect("store");
    let engine = engine(&settings, store.clone());
    engine.start().await.expect("start");
    let started = Instant::now();
    for i in 0..1000 {
        engine
            .submit(new_run(&settings, &format!("h{i}"), clipboard_of(512)))
            .await
            .expect("submit");
    }
    engine.wait_idle().await;
    let wall = started.elapsed();
    let done = bench_sql(
        &settings,
        "SELECT COUNT(*) FROM runs WHERE state = 'succeeded'",
    );
    assert_eq!(done, vec!["1000"], "every run succeeded");
    figure("runs_1000x10_wall", wall.as_secs_f64(), "s");
    figure(
        "runs_1000x10_peak_rss",
        memory_mb(std::process::id(), "VmHWM:"),
        "MB",
    );
    engine.shutdown();
    store.close().await;
}

fn idle_daemon() {
    let bench = Bench::new();
    let _ = bench.settings(&pipeline_of(1), 8);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .arg("run")
        .arg("--config")
        .arg(bench.path("jarvis.yaml"))
        .env("JARVIS_LOG", "error")
        .spawn()
        .expect("jarvis run starts");
    // Settled: the database exists and the process has been quiet for a second.
    let db = bench.path("data/jarvis.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !common::exists(&db) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    figure("idle_daemon_rss", memory_mb(child.id(), "VmRSS:"), "MB");
    let _ = child.kill();
    let _ = child.wait();
}

fn bench_sql(settings: &jarvis::config::Settings, query: &str) -> Vec<String> {
    let out = std::process::Command::new("sqlite3")
        .arg(settings.data_dir().join("jarvis.db"))
        .arg(query)
        .output()
        .expect("sqlite3 (tests/testbed/install installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(stage_overhead());
    runtime.block_on(thousand_runs());
    idle_daemon();
}
