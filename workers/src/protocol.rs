//! The worker side of the worker protocol (SPEC 5): read the clipboard from stdin, hand the
//! new clipboard back on stdout, talk to the run through stderr lines, and exit with a status
//! the engine understands.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{Map, Value};

/// The clipboard: a YAML mapping with string keys, in the order it was written.
pub type Mapping = Map<String, Value>;

/// Exit status for a failure worth retrying (EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: u8 = 75;

/// The largest clipboard a worker reads from stdin.
const MAX_CLIPBOARD_BYTES: u64 = 16 * 1024 * 1024;

/// Why a task failed, as the worker reports it: `Retry` exits 75, `Fatal` exits 1. The text
/// is the one line the operator sees, so it must never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Retry(String),
    #[error("{0}")]
    Fatal(String),
}

impl Failure {
    pub fn fatal(text: impl Into<String>) -> Self {
        Failure::Fatal(text.into())
    }
    pub fn retry(text: impl Into<String>) -> Self {
        Failure::Retry(text.into())
    }
}

pub type TaskResult = Result<Option<Mapping>, Failure>;

/// Reads the whole clipboard (a YAML mapping) from stdin.
pub fn read_clipboard() -> Result<Mapping, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_CLIPBOARD_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| Failure::fatal(format!("cannot read the clipboard from stdin: {e}")))?;
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    serde_saphyr::from_str::<Mapping>(&text)
        .map_err(|e| Failure::fatal(format!("the clipboard is not a YAML mapping: {e}")))
}

/// Writes the new clipboard to stdout.
pub fn write_clipboard(clipboard: &Mapping) -> Result<(), Failure> {
    let text = serde_saphyr::to_string(clipboard)
        .map_err(|e| Failure::fatal(format!("cannot serialise the clipboard: {e}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::fatal(format!("cannot write the clipboard: {e}")))
}

/// One line on stderr, with CR/LF folded so a line is always one line.
fn say(kind: &str, text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    eprintln!("{kind}: {clean}");
}

/// The run's progress text, shown by `status`.
pub fn progress(text: &str) {
    say("progress", text);
}

/// A line also posted to the run's channel.
pub fn notice(text: &str) {
    say("notice", text);
}

/// A plain log line.
pub fn log(text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    eprintln!("{clean}");
}

/// Runs a task body: reads the clipboard, calls `body`, writes what it returns (nothing when
/// it returns `None`, which leaves the clipboard as it was) and maps failures to exit codes.
pub fn run_task(body: impl FnOnce(Mapping) -> TaskResult) -> ExitCode {
    let outcome = read_clipboard().and_then(body).and_then(|new| match new {
        Some(map) => write_clipboard(&map),
        None => Ok(()),
    });
    finish(outcome)
}

/// Maps a task's outcome to the exit status of SPEC 5, printing `error:` on failure.
pub fn finish(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Retry(text)) => {
            say("error", &text);
            ExitCode::from(EXIT_TEMPFAIL)
        }
        Err(Failure::Fatal(text)) => {
            say("error", &text);
            ExitCode::from(1)
        }
    }
}

/// Looks up `a.b.c` in a mapping.
pub fn get_path<'a>(map: &'a Mapping, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = map.get(first)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// A string at `path`, or a fatal failure naming the missing field.
pub fn require_str<'a>(map: &'a Mapping, path: &str) -> Result<&'a str, Failure> {
    get_path(map, path)
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::fatal(format!("the clipboard has no text at '{path}'")))
}

/// The mapping under `key`, created when absent (or replaced when it is not a mapping).
pub fn section<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Mapping::new()));
    if !slot.is_object() {
        *slot = Value::Object(Mapping::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made a mapping just above"),
    }
}

/// Runs an async task body on a current-thread runtime: a worker is one short-lived process,
/// so it needs no thread pool.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| runtime.block_on(future))
        .map_err(|e| Failure::retry(format!("cannot start the async runtime: {e}")))
}
