//! Shared by the tests of the workers that tell the world (dns, ldap, alertmanager): runs the
//! worker binary the way the engine does — clipboard on stdin, a clean environment holding
//! only the JARVIS_* variables and the module's grants — and reads what it hands back.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::Value;

/// What one worker process did.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The new clipboard (panics when the worker printed none).
    pub fn clipboard(&self) -> Value {
        serde_saphyr::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not a YAML mapping ({e}):\n{}", self.stdout))
    }

    /// The text of the worker's `error:` lines.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .collect()
    }

    /// The one `error:` line a failing worker must print.
    pub fn error(&self) -> &str {
        let errors = self.errors();
        assert_eq!(
            errors.len(),
            1,
            "want one error line, got:\n{}",
            self.stderr
        );
        errors[0]
    }

    pub fn assert_success(&self) {
        assert_eq!(self.code, 0, "worker failed:\n{}", self.stderr);
    }

    /// Everything the worker wrote, for checking that a secret never appears.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `jarvis-worker MODULE TASK` with `clipboard` (YAML) on stdin and only `grants` (plus
/// the JARVIS_* variables the engine sets) in its environment.
pub fn run_worker(module: &str, task: &str, clipboard: &str, grants: &[(&str, &str)]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jarvis-worker"))
        .args([module, task])
        .env_clear()
        .env("JARVIS_RUN_ID", "42")
        .env("JARVIS_STAGE", "1")
        .env("JARVIS_STAGES", "1")
        .env("JARVIS_TASK", format!("{module}:{task}"))
        .env("JARVIS_HOST", "loki")
        .env("JARVIS_ATTEMPT", "1")
        .envs(grants.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start jarvis-worker");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(clipboard.as_bytes())
        .expect("cannot write the clipboard");
    let out = child
        .wait_with_output()
        .expect("jarvis-worker did not finish");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command-line tool (dig, ldapsearch) and returns its stdout; panics when it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain HTTP/1.0 request to a loopback server: (status, body).
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut stream = TcpStream::connect(host).expect("cannot connect");
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("cannot send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("cannot read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    (status, body.to_string())
}
