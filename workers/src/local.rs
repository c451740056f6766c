//! `local`: the demonstration provider. Its tasks run on this machine and need no
//! credentials, so `jarvis shell` can show a whole pipeline out of the box.
//!
//! `local:step` sleeps for `demo.step_ms` (default 700) while reporting progress, records its
//! stage number under `local.done`, and fails when `demo.fail_stage` names its stage. When the
//! module is granted `LOCAL_TRACE`, it appends `RUN STAGE ATTEMPT` to that file, which lets
//! tests count how often each stage really ran.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::protocol::{self, Failure, Mapping, TaskResult};

const TASKS: &[&str] = &["step", "check", "undo", "create_host", "destroy_host"];

pub fn run(task: &str) -> ExitCode {
    match task {
        "step" => protocol::run_task(step),
        "check" => protocol::run_task(check),
        "undo" => protocol::run_task(undo),
        "create_host" => protocol::run_task(crate::local_host::create_host),
        "destroy_host" => protocol::run_task(crate::local_host::destroy_host),
        other => crate::unknown_task("local", other, TASKS),
    }
}

fn env_number(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn demo_number(clipboard: &Mapping, key: &str) -> Option<u64> {
    protocol::get_path(clipboard, &format!("demo.{key}")).and_then(Value::as_u64)
}

/// Checks that the design names a host, as a real provider's first stage would.
fn check(clipboard: Mapping) -> TaskResult {
    let host = protocol::require_str(&clipboard, "instance.hostname")?;
    protocol::progress(&format!("design for {host} looks complete"));
    Ok(None)
}

/// Undoes what the steps did: forgets `local.done`.
fn undo(mut clipboard: Mapping) -> TaskResult {
    let done = protocol::get_path(&clipboard, "local.done")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    protocol::progress(&format!("undoing {done} demonstration steps"));
    protocol::section(&mut clipboard, "local").remove("done");
    Ok(Some(clipboard))
}

fn step(mut clipboard: Mapping) -> TaskResult {
    let stage = env_number("JARVIS_STAGE");
    let attempt = env_number("JARVIS_ATTEMPT");
    let run_id = std::env::var("JARVIS_RUN_ID").unwrap_or_default();
    let task = std::env::var("JARVIS_TASK").unwrap_or_else(|_| "local:step".into());

    if let Ok(path) = std::env::var("LOCAL_TRACE") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Failure::fatal(format!("cannot open the trace file: {e}")))?;
        // One write per line: several workers (of several processes) append at once, and
        // `writeln!` may write a line in pieces that would interleave.
        file.write_all(format!("{run_id} {stage} {attempt}\n").as_bytes())
            .map_err(|e| Failure::fatal(format!("cannot write the trace file: {e}")))?;
    }

    let step_ms = demo_number(&clipboard, "step_ms").unwrap_or(700);
    let ticks = 4u64;
    for tick in 1..=ticks {
        protocol::progress(&format!("{task}: working ({tick}/{ticks})"));
        std::thread::sleep(Duration::from_millis(step_ms / ticks));
    }

    if demo_number(&clipboard, "fail_stage") == Some(stage) {
        return Err(Failure::fatal(format!(
            "demo failure at stage {stage}, as demo.fail_stage asked"
        )));
    }

    let local = protocol::section(&mut clipboard, "local");
    let done = local
        .entry("done".to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !done.is_array() {
        *done = Value::Array(Vec::new());
    }
    if let Value::Array(list) = done {
        list.push(Value::from(stage));
    }
    Ok(Some(clipboard))
}
