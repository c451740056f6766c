//! Soak: many runs of a chatty worker through `jarvis shell` fed by a pipe, with retention
//! pruning and forgetting as it goes. Prints the daemon's peak memory and the database's size along the
//! way, as `name value unit` lines. `JARVIS_SOAK_RUNS` sets the number of runs (20,000);
//! `JARVIS_SOAK_RETENTION=off` runs it without pruning, for comparison.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bench, figure};

const CHATTY: &str = "#!/bin/sh
i=0
while [ $i -lt 20 ]; do echo \"working on line $i of the host's setup\" >&2; i=$((i+1)); done
echo 'notice: halfway there' >&2
echo 'progress: almost done' >&2
";

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn db_mb(bench: &Bench) -> f64 {
    ["jarvis.db", "jarvis.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(bench.path("data").join(f)).ok())
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .sum()
}

/// Runs asked for and not yet finished, at most.
const IN_FLIGHT: usize = 64;

fn main() {
    let runs: usize = std::env::var("JARVIS_SOAK_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let bench = Bench::new();
    let worker = bench.path("workers/chatty");
    std::fs::write(&worker, CHATTY).expect("worker");
    let mut perms = std::fs::metadata(&worker).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&worker, perms).expect("chmod");
    bench.settings(
        "  p:\n    providers: [soak]\n    stages:\n      - { task: \"chatty:x\", idempotent: true }\n      - { task: \"noop:x\", idempotent: true }\n",
        8,
    );
    // `JARVIS_SOAK_RETENTION=off` keeps everything, for the comparison.
    let retention = std::env::var("JARVIS_SOAK_RETENTION").map_or(true, |v| v != "off");
    let ages = if retention {
        "keep: 1ms\n  forget: 1ms\n  audit: 1ms"
    } else {
        "keep: 3650d"
    };
    let config = std::fs::read_to_string(bench.path("jarvis.yaml")).expect("config")
        + &format!("retention:\n  {ages}\n  every: 1s\n");
    std::fs::write(bench.path("jarvis.yaml"), config).expect("config");
    for i in 0..runs {
        std::fs::write(
            bench.path("designs").join(format!("h{i}.yaml")),
            format!("instance:\n  hostname: h{i}\n  fqdn: h{i}.example.com\n  provider: soak\n"),
        )
        .expect("design");
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .args(["shell", "--config"])
        .arg(bench.path("jarvis.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("jarvis shell");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = finished.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(" succeeded in ") || line.contains(" FAILED ") {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let started = Instant::now();
    let mut stdin = child.stdin.take().expect("stdin");
    // A steady load, as a fleet makes it: at most `IN_FLIGHT` runs asked for and not yet
    // finished, so the database's size shows what retention keeps, not a queue of thousands.
    let done = finished.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..runs {
            while i >= done.load(std::sync::atomic::Ordering::Relaxed) + IN_FLIGHT {
                std::thread::sleep(Duration::from_millis(2));
            }
            if writeln!(stdin, "deploy h{i}").is_err() {
                break;
            }
        }
    });
    let mut peak = 0.0f64;
    let mut sizes = Vec::new();
    let quarter = (runs / 4).max(1);
    while child.try_wait().ok().flatten().is_none() {
        peak = peak.max(rss_mb(pid));
        let done = finished.load(std::sync::atomic::Ordering::Relaxed);
        if done >= quarter * (sizes.len() + 1) && sizes.len() < 4 {
            sizes.push(db_mb(&bench));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = writer.join();
    let _ = reader.join();
    let finished = finished.load(std::sync::atomic::Ordering::Relaxed);
    let elapsed = started.elapsed();
    figure("soak_runs_finished", finished as f64, "runs");
    figure("soak_wall", elapsed.as_secs_f64(), "s");
    figure("soak_peak_rss", peak, "MB");
    for (i, size) in sizes.iter().enumerate() {
        figure(
            &format!("soak_db_size_after_{}pct_finished", (i + 1) * 25),
            *size,
            "MB",
        );
    }
    let end = db_mb(&bench);
    figure("soak_db_size_end", end, "MB");
    figure(
        "soak_db_bytes_per_run",
        end * 1024.0 * 1024.0 / finished.max(1) as f64,
        "bytes",
    );
}
