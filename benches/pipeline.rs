//! `cargo bench --bench pipeline`: the engine's own cost, with durable commits on
//! (SQLite WAL, synchronous=FULL) and a no-op worker (/bin/true), so what is measured is
//! jarvis, not the work.
//!
//! - stage overhead: one run of 300 stages with a 4 KiB clipboard; the interval between
//!   consecutive stage starts as the store recorded them (millisecond resolution).
//! - 1,000 concurrent 10-stage runs with 64 workers at once: wall time and the peak RSS of
//!   this process (engine and store in-process, as in the daemon).
//! - an idle daemon: the RSS of `jarvis run` with no runs, once it has settled.
//! - the machine's floor beside them, measured the same minute: a spawn and wait of
//!   `/bin/true` as the engine spawns a worker, one durable SQLite commit through the same
//!   driver, and 10,000 such spawns 64 at a time. A stage cannot cost less than a spawn and a
//!   commit, nor 1,000 × 10 stages take less than the 10,000 spawns; on a shared or virtual
//!   machine these move by half from one hour to the next, so read the figures beside them.

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
            stage_caps: Default::default(),
            secrets_from: Default::default(),
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
    let cpu = cpu_seconds();
    let started = Instant::now();
    engine
        .submit(new_run(&settings, "h", clipboard_of(4096)))
        .await
        .expect("submit");
    engine.wait_idle().await;
    let total = started.elapsed();
    cpu_figures("stages_300", cpu);
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
    let cpu = cpu_seconds();
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
    cpu_figures("runs_1000x10", cpu);
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

/// One spawn and wait of `/bin/true`, set up as `engine::worker` sets up a worker.
async fn spawn_and_wait() -> Duration {
    use std::process::Stdio;
    let started = Instant::now();
    // With the task as its argument, as a worker gets it (SPEC 5): coreutils' `true` then
    // loads the locale that `LANG=C.UTF-8` names, about 0.4 ms of its own here.
    let mut child = tokio::process::Command::new("/bin/true")
        .arg("x")
        .env_clear()
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn /bin/true");
    let _ = child.wait().await;
    started.elapsed()
}

async fn floor() {
    let mut spawns = Vec::with_capacity(300);
    for _ in 0..300 {
        spawns.push(spawn_and_wait().await);
    }
    spawns.sort();
    figure("floor_spawn_wait_median", percentile(&spawns, 0.5), "ms");

    let bench = Bench::new();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(bench.path("floor.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .expect("floor database");
    sqlx::query("CREATE TABLE t (n INTEGER)")
        .execute(&mut conn)
        .await
        .expect("table");
    sqlx::query("INSERT INTO t VALUES (0)")
        .execute(&mut conn)
        .await
        .expect("row");
    let mut commits = Vec::with_capacity(300);
    for _ in 0..300 {
        let started = Instant::now();
        let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
        sqlx::query("UPDATE t SET n = n + 1")
            .execute(&mut *tx)
            .await
            .expect("update");
        tx.commit().await.expect("commit");
        commits.push(started.elapsed());
    }
    commits.sort();
    figure("floor_commit_median", percentile(&commits, 0.5), "ms");

    let cpu = cpu_seconds();
    let started = Instant::now();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        all.spawn(async move {
            spawn_and_wait().await;
            drop(permit);
        });
    }
    while all.join_next().await.is_some() {}
    figure(
        "floor_10000_spawns_64_at_once_wall",
        started.elapsed().as_secs_f64(),
        "s",
    );
    cpu_figures("floor_10000_spawns", cpu);
}

/// CPU seconds used so far by this process's threads, and by the children it has waited
/// for (the workers), from /proc (clock ticks of 10 ms).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let field = |n: usize| -> f64 {
        rest.split_whitespace()
            .nth(n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    // utime, stime, cutime, cstime are fields 14 to 17 of the line, 11 to 14 after it.
    (field(11) + field(12), field(13) + field(14))
}

/// The CPU time spent since `before`, split between jarvis's own threads and the workers.
fn cpu_figures(name: &str, before: (f64, f64)) {
    let (own, children) = cpu_seconds();
    figure(&format!("{name}_cpu_own"), own - before.0, "s");
    figure(&format!("{name}_cpu_workers"), children - before.1, "s");
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
    runtime.block_on(floor());
    runtime.block_on(stage_overhead());
    runtime.block_on(thousand_runs());
    idle_daemon();
}
