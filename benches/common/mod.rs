//! Shared by the benchmarks: a throwaway jarvis home and figures printed as `name value unit`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Bench {
    pub dir: tempfile::TempDir,
}

impl Default for Bench {
    fn default() -> Self {
        Bench::new()
    }
}

impl Bench {
    /// A home with a designs folder and a worker folder holding `noop` (/bin/true).
    pub fn new() -> Bench {
        let dir = tempfile::Builder::new()
            .prefix("jarvis-bench-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("designs")).expect("designs");
        std::fs::create_dir_all(dir.path().join("workers")).expect("workers");
        std::os::unix::fs::symlink("/bin/true", dir.path().join("workers/noop")).expect("noop");
        Bench { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A configuration with `pipeline` as its pipelines section.
    pub fn settings(&self, pipelines: &str, workers: usize) -> jarvis::config::Settings {
        let text = format!(
            "data_dir: {}\ndesigns:\n  folder: {}\nworkers:\n  folders: [{}]\nlimits:\n  workers: {workers}\n\
             pipelines:\n{pipelines}\nroles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n",
            self.path("data").display(),
            self.path("designs").display(),
            self.path("workers").display(),
        );
        std::fs::write(self.path("jarvis.yaml"), &text).expect("config");
        jarvis::config::Settings::parse("bench.yaml", &text, &Default::default()).expect("valid")
    }
}

pub fn figure(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.3} {unit}");
}

/// Prints a series of round trips (sorted here): median, p99 and max in ms, how many there
/// were, and how many took longer than 20 ms — a delayed-ACK stall costs 40 ms, so a
/// `_stalls` above 0 points at Nagle's algorithm and delayed ACKs meeting somewhere.
pub fn latencies(name: &str, times: &mut [Duration]) {
    times.sort();
    figure(&format!("{name}_median"), percentile(times, 0.5), "ms");
    figure(&format!("{name}_p99"), percentile(times, 0.99), "ms");
    figure(&format!("{name}_max"), percentile(times, 1.0), "ms");
    println!("{name}_requests {} count", times.len());
    let stalls = times
        .iter()
        .filter(|t| **t > Duration::from_millis(20))
        .count();
    println!("{name}_stalls {stalls} count");
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A process's memory figure from /proc (VmRSS, VmHWM) in MB.
pub fn memory_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A pipeline `p` of `stages` idempotent no-op stages, as the pipelines section.
pub fn pipeline_of(stages: usize) -> String {
    let mut text = "  p:\n    providers: [bench]\n    stages:\n".to_string();
    for _ in 0..stages {
        text.push_str("      - { task: \"noop:x\", idempotent: true }\n");
    }
    text
}
