//! `cargo bench --bench cluster`: jarvis on PostgreSQL (the testbed's server, started here),
//! beside SQLite, with durable commits on both and a no-op worker (/bin/true).
//!
//! - stage overhead: one run of 300 stages, the interval between consecutive stage starts
//!   (microseconds as stored), on SQLite and on PostgreSQL.
//! - 1,000 concurrent 10-stage runs (`JARVIS_BENCH_RUNS`) on one PostgreSQL database driven
//!   by 1, 2 and 3 nodes (`JARVIS_BENCH_NODES=1,3`)
//!   (each an engine with a store of its own, as a `jarvis run` process has, in this one
//!   process: on this 2-core machine the nodes share the cores either way).
//! - takeover: 500 runs left running under the lease of a node that is gone; how many a
//!   living node takes over per second once the lease has run out.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Bench, figure, percentile, pipeline_of};
use jarvis::clipboard::Clipboard;
use jarvis::engine::pipeline::RunKind;
use jarvis::engine::{Engine, EngineConfig};
use jarvis::secrets::Masker;
use jarvis::store::{NewRun, Store};

struct Database {
    url: String,
    psql: PathBuf,
}

impl Database {
    fn fresh(server: &jarvis_testbed::Server, name: &str) -> Database {
        let psql = PathBuf::from(server.get("POSTGRES_BIN")).join("psql");
        let port = server.get("POSTGRES_PORT");
        let out = Command::new(&psql)
            .args(["-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {name} OWNER jarvis"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Database {
            url: format!("postgres://jarvis@127.0.0.1:{port}/{name}"),
            psql,
        }
    }

    fn sql(&self, query: &str) -> Vec<String> {
        let out = Command::new(&self.psql)
            .args(["-tA", "-F|", "-d", &self.url, "-c", query])
            .output()
            .expect("psql runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn engine(settings: &jarvis::config::Settings, store: Store, data: PathBuf, sole: bool) -> Engine {
    Engine::new(
        store,
        EngineConfig {
            scratch_dir: jarvis::engine::scratch::choose(&data, None),
            data_dir: data,
            worker_folders: settings.workers.folders.clone(),
            builtin: None,
            grants: Default::default(),
            max_workers: settings.limits.workers,
            stdout_cap: 1 << 20,
            stderr_keep: 1000,
            stage_caps: Default::default(),
            secrets_from: Default::default(),
            kill_grace: Duration::from_secs(5),
            masker: Masker::new(vec![], vec![]),
            sealer: None,
            lease: Duration::from_secs(3),
            sole,
        },
    )
}

fn new_run(settings: &jarvis::config::Settings, host: &str) -> NewRun {
    let p = &settings.pipelines["p"];
    let (stages, on_failure) = p.frozen_stages(Duration::from_secs(60));
    let mut clipboard = Clipboard::new();
    clipboard.insert(
        "instance".into(),
        serde_json::json!({"hostname": host, "provider": "bench"}),
    );
    clipboard.insert("padding".into(), serde_json::Value::String("x".repeat(512)));
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

/// The median and p99 interval between consecutive stage starts of run 1.
async fn stage_overhead(name: &str, url: &str, bench: &Bench, sole: bool) {
    let settings = bench.settings(&pipeline_of(300), 8);
    let store = Store::open(url).await.expect("store").for_node("b1");
    let engine = engine(&settings, store.clone(), bench.path(name), sole);
    engine.start().await.expect("start");
    engine
        .submit(new_run(&settings, "h"))
        .await
        .expect("submit");
    engine.wait_idle().await;
    let starts: Vec<i64> = store
        .stage_timings(1)
        .await
        .expect("timings")
        .iter()
        .filter_map(|t| t.started_us)
        .collect();
    let mut gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| Duration::from_micros((w[1] - w[0]).max(0) as u64))
        .collect();
    gaps.sort();
    figure(
        &format!("{name}_stage_overhead_median"),
        percentile(&gaps, 0.5),
        "ms",
    );
    figure(
        &format!("{name}_stage_overhead_p99"),
        percentile(&gaps, 0.99),
        "ms",
    );
    engine.shutdown();
    store.close().await;
}

/// How many runs the throughput figures push through: 1,000, or `JARVIS_BENCH_RUNS`.
fn bench_runs() -> usize {
    std::env::var("JARVIS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Which node counts the throughput figures are taken for: 1 to 3, or `JARVIS_BENCH_NODES`
/// (`1,3`).
fn bench_nodes() -> Vec<usize> {
    std::env::var("JARVIS_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3])
}

/// 1,000 runs of 10 stages on one database, driven by `nodes` engines.
async fn thousand_runs(db: &Database, nodes: usize) {
    let bench = Bench::new();
    let settings = bench.settings(&pipeline_of(10), 64);
    let mut engines = Vec::new();
    for n in 0..nodes {
        let store = Store::open(&db.url)
            .await
            .expect("store")
            .for_node(&format!("b{n}"));
        let e = engine(&settings, store, bench.path(&format!("n{n}")), false);
        e.start().await.expect("start");
        engines.push(e);
    }
    let started = Instant::now();
    let runs = bench_runs();
    for i in 0..runs {
        engines[i % nodes]
            .submit(new_run(&settings, &format!("h{i}")))
            .await
            .expect("submit");
    }
    for e in &engines {
        e.wait_idle().await;
    }
    let wall = started.elapsed();
    let done = db.sql("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'");
    assert_eq!(done, vec![runs.to_string()], "every run succeeded");
    figure(
        &format!("postgres_runs_{runs}x10_nodes_{nodes}_wall"),
        wall.as_secs_f64(),
        "s",
    );
    for e in engines {
        e.shutdown();
        e.store().close().await;
    }
}

/// 500 runs running under a dead node's expired lease: how fast a living node takes them
/// over.
async fn takeover(db: &Database) {
    let bench = Bench::new();
    let settings = bench.settings(&pipeline_of(2), 64);
    let store = Store::open(&db.url).await.expect("store").for_node("alive");
    for i in 0..500 {
        store
            .insert_run(&new_run(&settings, &format!("t{i}")))
            .await
            .expect("queue");
    }
    let e = engine(&settings, store.clone(), bench.path("alive"), false);
    // The dead node had started stage 1 of each and then stopped renewing.
    db.sql(
        "INSERT INTO stage_runs (run_id, phase, stage, attempt, task, state, started_at, started_us) \
         SELECT id, 'main', 0, 1, 'noop:x', 'running', 1, 1000 FROM runs; \
         UPDATE runs SET state = 'running', attempt = 1, started_at = 1, stage_started_at = 1, \
         lease_owner = 'dead', lease_until = 1",
    );
    let started = Instant::now();
    e.start().await.expect("start");
    while db.sql("SELECT COUNT(*) FROM runs WHERE lease_owner = 'dead'") != vec!["0"] {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    figure(
        "postgres_takeover_rate",
        500.0 / took.as_secs_f64(),
        "runs/s",
    );
    e.wait_idle().await;
    e.shutdown();
    store.close().await;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(server) = jarvis_testbed::Server::start("postgres").expect("postgres starts") else {
        eprintln!("PostgreSQL is not installed (tests/testbed/install installs it)");
        std::process::exit(1);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sqlite = Bench::new();
    let url = format!("sqlite://{}", sqlite.path("data/jarvis.db").display());
    runtime.block_on(stage_overhead("sqlite", &url, &sqlite, true));
    let pg = Bench::new();
    let db = Database::fresh(&server, &format!("bench_overhead_{}", std::process::id()));
    runtime.block_on(stage_overhead("postgres", &db.url, &pg, false));
    for nodes in bench_nodes() {
        let db = Database::fresh(
            &server,
            &format!("bench_nodes{nodes}_{}", std::process::id()),
        );
        runtime.block_on(thousand_runs(&db, nodes));
    }
    let db = Database::fresh(&server, &format!("bench_takeover_{}", std::process::id()));
    runtime.block_on(takeover(&db));
}
