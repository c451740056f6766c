//! Shared by the tests of the host-making workers (linode, ssh, local): run the worker binary
//! stage by stage as the engine would, and reach the Linode stand-in.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use jarvis_standins::process::Standin;
use serde_json::{Map, Value};

pub type Mapping = Map<String, Value>;

/// The environment the configuration grants a module.
pub type Env = Vec<(&'static str, String)>;

/// What one worker run gave back.
pub struct Outcome {
    pub code: i32,
    /// The new clipboard, or the old one when the worker printed nothing.
    pub clipboard: Mapping,
    pub stderr: String,
}

impl Outcome {
    /// The worker's `error:` line, if it printed one.
    pub fn error(&self) -> Option<&str> {
        self.stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
    }

    #[track_caller]
    pub fn ok(self, what: &str) -> Mapping {
        assert_eq!(self.code, 0, "{what} failed:\n{}", self.stderr);
        self.clipboard
    }
}

/// Runs `jarvis-worker MODULE TASK` with `clipboard` on stdin and only `env` (plus PATH) in its
/// environment, as the engine grants it.
pub fn worker(task: &str, clipboard: &Mapping, env: &[(&str, String)]) -> Outcome {
    let (module, task) = task.split_once(':').expect("MODULE:TASK");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jarvis-worker"))
        .args([module, task])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JARVIS_TASK", format!("{module}:{task}"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jarvis-worker");
    let input = serde_saphyr::to_string(clipboard).expect("clipboard as YAML");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let clipboard = if stdout.trim().is_empty() {
        clipboard.clone()
    } else {
        serde_saphyr::from_str(&stdout).expect("the worker printed a YAML mapping")
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "--- {module}:{task} (exit {:?})\n{stderr}",
        out.status.code()
    );
    Outcome {
        code: out.status.code().unwrap_or(-1),
        clipboard,
        stderr,
    }
}

pub fn yaml(text: &str) -> Mapping {
    serde_saphyr::from_str(text).unwrap()
}

pub fn get<'a>(map: &'a Mapping, path: &str) -> &'a Value {
    let mut parts = path.split('.');
    let mut cur = map.get(parts.next().unwrap()).unwrap_or(&Value::Null);
    for part in parts {
        cur = cur.get(part).unwrap_or(&Value::Null);
    }
    cur
}

pub fn set(map: &mut Mapping, path: &str, value: Value) {
    let (head, last) = match path.rsplit_once('.') {
        Some((head, last)) => (Some(head), last),
        None => (None, path),
    };
    let mut cur = map;
    if let Some(head) = head {
        for part in head.split('.') {
            cur = cur
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Mapping::new()))
                .as_object_mut()
                .unwrap();
        }
    }
    cur.insert(last.to_string(), value);
}

/// The reference design of SPEC 3, with a label the test chooses.
pub fn design(hostname: &str, run_id: &str) -> Mapping {
    yaml(&format!(
        "instance:\n  hostname: {hostname}\n  fqdn: {hostname}.example.com\n  provider: Linode\n  \
         guestid: Debian 12\n  datacenter: Atlanta\n  size: 512\n  \
         sshpubkey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm9kIPLxbBzbChzl2iYsnf4LfYPhk7aeWbeKYw6rf+k admin@example.com\n\
         linode:\n  poll_ms: 50\n  wait_seconds: 30\n\
         jarvis:\n  run_id: '{run_id}'\n  host: {hostname}\n  pipeline: linode\n  requester: alice\n"
    ))
}

pub const TOKEN: &str = "standin-token";

/// The Linode stand-in whose instances answer on 127.0.0.1 (where the test's sshd listens).
pub fn linode_standin(extra: &[&str]) -> Standin {
    let mut args = vec![
        "--token",
        TOKEN,
        "--ipv4",
        "127.0.0.1",
        "--provision-ms",
        "150",
        "--boot-ms",
        "150",
        "--shutdown-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    Standin::spawn_named("linode-standin", &args).expect("start linode-standin")
}

pub fn linode_env(standin: &Standin, run_id: &str) -> Env {
    vec![
        ("LINODE_TOKEN", TOKEN.to_string()),
        ("LINODE_API", format!("{}/v4", standin.url())),
        ("JARVIS_RUN_ID", run_id.to_string()),
    ]
}

/// The published Linode API document beside the repository (`../shared/`), which the tests
/// read and never copy. `None` (with a loud line) on a developer machine without it; under CI
/// its absence fails the test.
pub fn linode_openapi() -> Option<PathBuf> {
    let path = jarvis_testbed::repo_root().join("../shared/linode-openapi.yaml");
    if path.is_file() {
        return Some(path);
    }
    if jarvis_testbed::in_ci() {
        panic!("{} is missing, and CI must not skip", path.display());
    }
    eprintln!("SKIPPING the OpenAPI check: {} is missing", path.display());
    None
}

/// `ssh-keygen -lf FILE`: `(bits, "SHA256:…", type)`.
pub fn keygen_fingerprint(file: &str) -> (String, String) {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f", file])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let kind = words.last().unwrap().trim_matches(|c| c == '(' || c == ')');
    (words[1].to_string(), kind.to_string())
}
