//! Running one worker process (SPEC 5): its own process group, a fresh working folder, the
//! clipboard on stdin, stdout and stderr read at the same time and capped, a timeout that
//! sends SIGTERM to the whole group and SIGKILL after a grace. Nothing here parses the
//! clipboard or knows about runs; it reports how the process ended and what it said.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// The longest stderr line kept; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 4096;

/// How long to wait for the pipes to close after the process group is gone.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// What to run and with which limits.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub grace: Duration,
    pub stdout_cap: usize,
    pub stderr_keep: usize,
    /// At most this many stderr lines, and bytes, go on to be stored; past either the
    /// worker is stopped (a runaway log would otherwise fill the database).
    pub stderr_lines_cap: usize,
    pub stderr_bytes_cap: usize,
}

/// Which stderr cap a worker passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StderrCap {
    Lines(usize),
    Bytes(usize),
}

/// One stderr line, classified by its prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum StderrLine {
    Progress(String),
    Notice(String),
    Error(String),
    Log(String),
}

impl StderrLine {
    /// Classifies a line. Pure.
    pub fn parse(line: &str) -> StderrLine {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("progress:") {
            StderrLine::Progress(rest.trim().to_string())
        } else if let Some(rest) = line.strip_prefix("notice:") {
            StderrLine::Notice(rest.trim().to_string())
        } else if let Some(rest) = line.strip_prefix("error:") {
            StderrLine::Error(rest.trim().to_string())
        } else {
            StderrLine::Log(line.to_string())
        }
    }
}

/// How the worker process ended, as the operating system (or our own limits) saw it; what
/// that means for the run is `stage::StageVerdict`'s business, not this one's.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessExit {
    Exited(i32),
    Signalled(i32),
    TimedOut(Duration),
    StdoutOverflow(usize),
    StderrOverflow(StderrCap),
    Cancelled,
    /// jarvis is stopping and the grace is over.
    Halted,
    SpawnFailed(String),
}

/// Everything a worker left behind once its process ended: the raw material a verdict is
/// judged from, kept apart so that judging stays a pure function.
#[derive(Debug)]
pub struct WorkerReport {
    pub ending: ProcessExit,
    pub stdout: Vec<u8>,
    /// The last `error:` line.
    pub error_line: Option<String>,
    /// The last stderr lines, newest last.
    pub stderr_tail: VecDeque<String>,
}

impl WorkerReport {
    /// The last non-empty stderr line that is not progress chatter.
    pub fn last_stderr(&self) -> Option<&str> {
        self.stderr_tail
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !l.starts_with("progress:"))
    }
}

/// Runs the worker to its end. `on_spawn` gets the process group id as soon as there is one
/// (for the crash-recovery record); every stderr line goes to `lines` as it arrives.
pub async fn run(
    spec: WorkerSpec,
    lines: mpsc::Sender<StderrLine>,
    cancel: CancellationToken,
    halt: CancellationToken,
    on_spawn: impl FnOnce(i32),
) -> WorkerReport {
    // The whole clipboard is in a file before the worker exists, and that file is its
    // stdin: were jarvis to die an instant after the spawn, the worker still reads all of
    // its input, never a truncated one (a pipe written after the spawn would end early).
    let input = match input_file(&spec.workdir, &spec.stdin) {
        Ok(file) => file,
        Err(e) => {
            return WorkerReport {
                ending: ProcessExit::SpawnFailed(format!(
                    "cannot write the worker's input in {}: {e}",
                    spec.workdir.display()
                )),
                stdout: Vec::new(),
                error_line: None,
                stderr_tail: VecDeque::new(),
            };
        }
    };
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.workdir)
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return WorkerReport {
                ending: ProcessExit::SpawnFailed(spawn_reason(&spec.program, &e)),
                stdout: Vec::new(),
                error_line: None,
                stderr_tail: VecDeque::new(),
            };
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    on_spawn(pgid);
    crash_hook_after_spawn(&spec.env);

    let overflow = Arc::new(AtomicBool::new(false));
    let overflow_seen = Arc::new(Notify::new());
    let stdout_task = child.stdout.take().map(|out| {
        let overflow = overflow.clone();
        let seen = overflow_seen.clone();
        let cap = spec.stdout_cap;
        tokio::spawn(async move { read_capped(out, cap, &overflow, &seen).await })
    });
    let stderr_passed: Arc<std::sync::OnceLock<StderrCap>> = Arc::default();
    let stderr_seen = Arc::new(Notify::new());
    let stderr_task = child.stderr.take().map(|err| {
        let keep = spec.stderr_keep.max(1);
        let caps = StderrCaps {
            lines: spec.stderr_lines_cap,
            bytes: spec.stderr_bytes_cap,
            passed: stderr_passed.clone(),
            seen: stderr_seen.clone(),
        };
        tokio::spawn(async move { read_lines(err, keep, caps, lines).await })
    });

    let ending = tokio::select! {
        status = child.wait() => status_ending(status),
        _ = tokio::time::sleep(spec.timeout) => ProcessExit::TimedOut(spec.timeout),
        _ = cancel.cancelled() => ProcessExit::Cancelled,
        _ = halt.cancelled() => ProcessExit::Halted,
        _ = overflow_seen.notified() => ProcessExit::StdoutOverflow(spec.stdout_cap),
        _ = stderr_seen.notified() => match stderr_passed.get() {
            Some(&cap) => ProcessExit::StderrOverflow(cap),
            None => ProcessExit::StderrOverflow(StderrCap::Lines(spec.stderr_lines_cap)),
        },
    };
    match &ending {
        ProcessExit::TimedOut(_) | ProcessExit::Cancelled | ProcessExit::Halted => {
            signal_group(pgid, Signal::SIGTERM);
            if tokio::time::timeout(spec.grace, child.wait())
                .await
                .is_err()
            {
                signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
        }
        ProcessExit::StdoutOverflow(_) | ProcessExit::StderrOverflow(_) => {
            signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        _ => {}
    }
    // Whatever the worker left behind in its group goes with it.
    signal_group(pgid, Signal::SIGKILL);

    let stdout = match stdout_task {
        Some(task) => join_within(task, PIPE_DRAIN).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let (stderr_tail, error_line) = match stderr_task {
        Some(task) => join_within(task, PIPE_DRAIN).await.unwrap_or_default(),
        None => (VecDeque::new(), None),
    };
    // A worker that printed past a cap and exited before it was stopped still failed.
    let ending = if overflow.load(Ordering::SeqCst) {
        ProcessExit::StdoutOverflow(spec.stdout_cap)
    } else if let Some(&cap) = stderr_passed.get() {
        ProcessExit::StderrOverflow(cap)
    } else {
        ending
    };
    WorkerReport {
        ending,
        stdout,
        error_line,
        stderr_tail,
    }
}

async fn join_within<T: Default>(task: tokio::task::JoinHandle<T>, limit: Duration) -> Option<T> {
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(value)) => Some(value),
        _ => {
            abort.abort();
            None
        }
    }
}

fn status_ending(status: std::io::Result<std::process::ExitStatus>) -> ProcessExit {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => ProcessExit::Exited(code),
            (None, Some(sig)) => ProcessExit::Signalled(sig),
            _ => ProcessExit::Exited(-1),
        },
        Err(e) => ProcessExit::SpawnFailed(format!("lost the worker process: {e}")),
    }
}

/// Sends `signal` to a process group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// The worker's input as a file read from its start: written whole, its name removed (the
/// open file stays), rewound.
fn input_file(workdir: &std::path::Path, input: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    let path = workdir.join(".jarvis-input");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    file.write_all(input)?;
    file.rewind()?;
    Ok(file)
}

/// Tests of a crash at the spawn instant: a debug build dies right after spawning the task
/// named by `JARVIS_TEST_DIE_AFTER_SPAWN` in jarvis's own environment. Release builds have
/// no such hook.
fn crash_hook_after_spawn(env: &[(String, String)]) {
    #[cfg(debug_assertions)]
    if let Ok(task) = std::env::var("JARVIS_TEST_DIE_AFTER_SPAWN")
        && env.iter().any(|(k, v)| k == "JARVIS_TASK" && *v == task)
    {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = env;
}

fn spawn_reason(program: &std::path::Path, e: &std::io::Error) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("worker {name} was not found"),
        std::io::ErrorKind::PermissionDenied => format!("worker {name} is not executable"),
        _ => format!("worker {name} could not start: {e}"),
    }
}

async fn read_capped(
    mut out: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
    overflow: &AtomicBool,
    seen: &Notify,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match out.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => {
                if buf.len() + n > cap {
                    overflow.store(true, Ordering::SeqCst);
                    seen.notify_one();
                    // Stop reading: the worker blocks on a full pipe until it is killed, and
                    // memory stays at the cap.
                    return Vec::new();
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The caps on what a worker's stderr may leave in the store, and how passing one is told.
struct StderrCaps {
    lines: usize,
    bytes: usize,
    passed: Arc<std::sync::OnceLock<StderrCap>>,
    seen: Arc<Notify>,
}

async fn read_lines(
    err: impl tokio::io::AsyncRead + Unpin,
    keep: usize,
    caps: StderrCaps,
    lines: mpsc::Sender<StderrLine>,
) -> (VecDeque<String>, Option<String>) {
    let mut reader = BufReader::new(err);
    let mut tail = VecDeque::with_capacity(keep.min(1024));
    let mut error_line = None;
    let mut raw = Vec::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    loop {
        raw.clear();
        match read_line_capped(&mut reader, &mut raw).await {
            Ok(false) | Err(_) => break,
            Ok(true) => {}
        }
        count += 1;
        bytes += raw.len() + 1;
        let passed = if count > caps.lines {
            Some(StderrCap::Lines(caps.lines))
        } else if bytes > caps.bytes {
            Some(StderrCap::Bytes(caps.bytes))
        } else {
            None
        };
        if let Some(cap) = passed {
            // Reading stops here: the worker blocks on a full pipe until it is stopped, and
            // neither memory nor the stored log grows past the cap.
            let _ = caps.passed.set(cap);
            caps.seen.notify_one();
            let _ = lines
                .send(StderrLine::Log(format!(
                    "{}; the rest was not kept",
                    stderr_cap_reason(cap)
                )))
                .await;
            break;
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let parsed = StderrLine::parse(&text);
        if let StderrLine::Error(e) = &parsed {
            error_line = Some(e.clone());
        }
        if tail.len() == keep {
            tail.pop_front();
        }
        tail.push_back(text.trim_end_matches('\r').to_string());
        // Backpressure: while the log is being stored, reading waits, the pipe fills and
        // a chatty worker waits on its own writes; memory stays bounded.
        let _ = lines.send(parsed).await;
    }
    (tail, error_line)
}

/// One line on a passed stderr cap, for the log and the stage's failure.
pub fn stderr_cap_reason(cap: StderrCap) -> String {
    match cap {
        StderrCap::Lines(n) => {
            format!("the worker's stderr passed {n} lines, the limit for a stage")
        }
        StderrCap::Bytes(n) => format!(
            "the worker's stderr passed {}, the limit for a stage",
            crate::text::bytes(n as u64)
        ),
    }
}

/// Reads one line into `raw` (without the newline), keeping at most MAX_LINE_BYTES of it.
/// Returns false at end of input with nothing read.
async fn read_line_capped(
    reader: &mut BufReader<impl tokio::io::AsyncRead + Unpin>,
    raw: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any);
        }
        any = true;
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let content = if done {
            &available[..used - 1]
        } else {
            available
        };
        let room = MAX_LINE_BYTES.saturating_sub(raw.len());
        raw.extend_from_slice(&content[..content.len().min(room)]);
        reader.consume(used);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_classified_by_prefix() {
        assert_eq!(
            StderrLine::parse("progress: waiting for sshd\r"),
            StderrLine::Progress("waiting for sshd".into())
        );
        assert_eq!(
            StderrLine::parse("notice: hi"),
            StderrLine::Notice("hi".into())
        );
        assert_eq!(
            StderrLine::parse("error: boom"),
            StderrLine::Error("boom".into())
        );
        assert_eq!(StderrLine::parse("plain"), StderrLine::Log("plain".into()));
    }
}
