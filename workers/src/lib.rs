//! The built-in workers of jarvis. Each module is a program that speaks the worker protocol of
//! SPEC 5: the engine runs it as a separate process (`jarvis worker MODULE TASK`) and never
//! calls into this crate. Nothing here knows about chat, the store or the engine.

use std::process::ExitCode;

pub mod alertmanager;
pub mod clock;
pub mod dns;
pub mod ec2;
pub mod host_facts;
pub mod ldap;
pub mod linode;
pub mod local;
mod local_host;
pub mod protocol;
pub mod ssh;

/// The modules this crate answers, as the engine looks them up by name.
pub const MODULES: &[&str] = &[
    "alertmanager",
    "dns",
    "ec2",
    "ldap",
    "linode",
    "local",
    "ssh",
];

/// Runs `TASK` of built-in module `MODULE` in this process, as the engine asked for it.
pub fn run(module: &str, task: &str) -> ExitCode {
    match module {
        "alertmanager" => alertmanager::run(task),
        "dns" => dns::run(task),
        "ec2" => ec2::run(task),
        "ldap" => ldap::run(task),
        "linode" => linode::run(task),
        "local" => local::run(task),
        "ssh" => ssh::run(task),
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
