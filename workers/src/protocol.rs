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

/// The stage's parameter `name`: the value at `jarvis.with.name`, which the engine fills from
/// the stage's `with:` in the operator's configuration (trusted, unlike the design). Commands,
/// targets, users, sudo and timings come from here and never from any other clipboard key.
pub fn param<'a>(clipboard: &'a Mapping, name: &str) -> Option<&'a Value> {
    clipboard
        .get("jarvis")?
        .as_object()?
        .get("with")?
        .as_object()?
        .get(name)
        .filter(|v| !v.is_null())
}

/// The stage parameter `name` as a text, if it is one.
pub fn param_str<'a>(clipboard: &'a Mapping, name: &str) -> Option<&'a str> {
    param(clipboard, name).and_then(Value::as_str)
}

/// The stage parameter `name` as a whole number (a number, or a text holding one).
pub fn param_u64(clipboard: &Mapping, name: &str) -> Result<Option<u64>, Failure> {
    match param(clipboard, name) {
        None => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
        Some(_) => Err(Failure::fatal(format!(
            "the stage's with.{name} must be a whole number"
        ))),
    }
}

/// The stage parameter `name` as a yes/no (absent is no).
pub fn param_bool(clipboard: &Mapping, name: &str) -> Result<bool, Failure> {
    match param(clipboard, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Failure::fatal(format!(
            "the stage's with.{name} must be true or false"
        ))),
    }
}

/// The environment variable naming the channel secrets go back on.
pub const SECRETS_VAR: &str = "JARVIS_SECRETS";

/// True for a secret's name: lowercase letters, digits and `_`, starting with a letter, at
/// most 64.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Hands a secret this worker made to jarvis, which keeps it sealed and gives it to the later
/// stages of the run as `JARVIS_SECRET_<NAME>`: appends one line `NAME=VALUE` to the FIFO named
/// by `$JARVIS_SECRETS`. Call it BEFORE the value is used anywhere, so that a crash right after
/// the use does not lose it. The value must be one line.
pub fn put_secret(name: &str, value: &str) -> Result<(), Failure> {
    if !is_secret_name(name) {
        return Err(Failure::fatal(format!(
            "'{name}' is no secret name (lowercase letters, digits and '_', starting with a \
             letter, at most 64)"
        )));
    }
    if value.is_empty() || value.contains(['\n', '\r', '\0']) {
        return Err(Failure::fatal(format!(
            "secret {name} must be one non-empty line"
        )));
    }
    let path = std::env::var_os(SECRETS_VAR)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Failure::fatal(
                "no secret channel: JARVIS_SECRETS is not set (run by hand? set \
                 JARVIS_SECRETS=/dev/stderr)",
            )
        })?;
    // No `create`: the channel is jarvis's FIFO (or a file someone made for it), never a new
    // file this worker would leave the secret in. One write keeps the line whole on a pipe.
    let line = format!("{name}={value}\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut channel| {
            channel.write_all(line.as_bytes())?;
            channel.flush()
        })
        .map_err(|e| {
            Failure::fatal(format!(
                "cannot hand secret {name} to jarvis through JARVIS_SECRETS ({}): {e}",
                std::path::Path::new(&path).display()
            ))
        })
}

/// A secret an earlier stage of the run handed to jarvis: `$JARVIS_SECRET_<NAME>`.
pub fn secret(name: &str) -> Option<String> {
    if !is_secret_name(name) {
        return None;
    }
    std::env::var(format!("JARVIS_SECRET_{}", name.to_ascii_uppercase()))
        .ok()
        .filter(|v| !v.is_empty())
}

/// Whether this worker runs as an `on_failure` stage, undoing a failed run
/// (`JARVIS_PHASE=on_failure`). An undo acts only on what the run recorded as made.
pub fn undoing() -> bool {
    std::env::var("JARVIS_PHASE").is_ok_and(|p| p == "on_failure")
}

/// Records on the clipboard (`jarvis.made`) that this run made something outside: `what` (a
/// kind: `linode`, `dns`, `ldap`) and its `id`, with the stage that made it. The record is
/// stored with the stage's result; undo stages and `cancel` act on these records only.
pub fn record_made(clipboard: &mut Mapping, what: &str, id: &str) {
    let jarvis = section(clipboard, "jarvis");
    let list = jarvis
        .entry("made".to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Value::Array(items) = list {
        let same = |v: &Value| {
            v.get("what").and_then(Value::as_str) == Some(what)
                && v.get("id").and_then(Value::as_str) == Some(id)
        };
        if !items.iter().any(same) {
            let task = std::env::var("JARVIS_TASK").unwrap_or_default();
            let stage = std::env::var("JARVIS_STAGE").unwrap_or_default();
            items.push(serde_json::json!({ "what": what, "id": id, "task": task, "stage": stage }));
        }
    }
}

/// The ids of the things of kind `what` this run recorded as made.
pub fn made_ids(clipboard: &Mapping, what: &str) -> Vec<String> {
    get_path(clipboard, "jarvis.made")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|v| v.get("what").and_then(Value::as_str) == Some(what))
                .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops the record of something this run made and has now removed.
pub fn forget_made(clipboard: &mut Mapping, what: &str, id: &str) {
    if let Some(Value::Array(items)) = clipboard
        .get_mut("jarvis")
        .and_then(Value::as_object_mut)
        .and_then(|j| j.get_mut("made"))
    {
        items.retain(|v| {
            !(v.get("what").and_then(Value::as_str) == Some(what)
                && v.get("id").and_then(Value::as_str) == Some(id))
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_live_under_jarvis_with() {
        let c = json!({
            "ssh": {"commands": ["rm -rf /"]},
            "jarvis": {"with": {"commands": ["uptime"], "sudo": true, "poll_ms": "50", "gone": null}}
        });
        let c = c.as_object().unwrap();
        assert_eq!(param(c, "commands"), Some(&json!(["uptime"])));
        assert_eq!(param(c, "gone"), None);
        assert_eq!(param(c, "host"), None);
        assert!(param_bool(c, "sudo").unwrap());
        assert!(!param_bool(c, "nothing").unwrap());
        assert_eq!(param_u64(c, "poll_ms").unwrap(), Some(50));
        assert!(param_u64(c, "commands").is_err());
        let none = json!({"ssh": {"commands": ["x"]}});
        assert_eq!(param(none.as_object().unwrap(), "commands"), None);
    }

    #[test]
    fn secret_names() {
        assert!(is_secret_name("root_password"));
        assert!(is_secret_name("k2"));
        assert!(!is_secret_name("Root"));
        assert!(!is_secret_name("2k"));
        assert!(!is_secret_name("_k"));
        assert!(!is_secret_name("a-b"));
        assert!(!is_secret_name(&"a".repeat(65)));
        assert!(is_secret_name(&"a".repeat(64)));
    }
}
