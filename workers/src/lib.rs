//! The built-in workers of jarvis. Each module is a program that speaks the worker protocol of
//! SPEC 5: the engine runs it as a separate process (`jarvis worker MODULE TASK`) and never
//! calls into this crate. Nothing here knows about chat, the store or the engine.

use std::process::ExitCode;

pub mod local;
pub mod protocol;

/// The modules this crate answers, as the engine looks them up by name.
pub const MODULES: &[&str] = &["local"];

/// Runs `TASK` of built-in module `MODULE` in this process, as the engine asked for it.
pub fn run(module: &str, task: &str) -> ExitCode {
    match module {
        "local" => local::run(task),
        other => protocol::finish(Err(protocol::Failure::fatal(format!(
            "no built-in worker module '{other}'"
        )))),
    }
}

/// The `error:` line and exit status for a task a module does not have.
pub(crate) fn unknown_task(module: &str, task: &str, known: &[&str]) -> ExitCode {
    protocol::finish(Err(protocol::Failure::fatal(format!(
        "{module} has no task '{task}' (it has: {})",
        known.join(", ")
    ))))
}
