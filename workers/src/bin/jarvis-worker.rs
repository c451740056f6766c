//! The built-in workers as a stand-alone program, for testing them without the daemon:
//! `jarvis-worker MODULE TASK` behaves exactly like `jarvis worker MODULE TASK`.
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [module, task] => jarvis_workers::run(module, task),
        _ => {
            eprintln!("error: usage: jarvis-worker MODULE TASK");
            ExitCode::from(64)
        }
    }
}
