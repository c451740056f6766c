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
    // The run's host, as the engine names it.
    let host = get(clipboard, "jarvis.host")
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jarvis-worker"))
        .args([module, task])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JARVIS_TASK", format!("{module}:{task}"))
        .env("JARVIS_HOST", host)
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
         jarvis:\n  run_id: '{run_id}'\n  host: {hostname}\n  pipeline: linode\n  requester: alice\n"
    ))
}

/// Runs one stage as the engine does: the stage's parameters `with` go on the input as
/// `jarvis.with` (none when `with` is null); on success the keys the stage learned
/// (`jarvis.learned_host_keys`) become the host's pins (`jarvis.host_keys`, one per algorithm)
/// and neither the parameters nor the report stay on the clipboard.
pub fn stage(task: &str, with: Value, clipboard: &Mapping, env: &[(&str, String)]) -> Outcome {
    let mut input = clipboard.clone();
    with_params(&mut input, with);
    let mut outcome = worker(task, &input, env);
    if outcome.code == 0 {
        let learned = get(&outcome.clipboard, "jarvis.learned_host_keys").clone();
        let jarvis = outcome
            .clipboard
            .entry("jarvis".to_string())
            .or_insert_with(|| Value::Object(Mapping::new()))
            .as_object_mut()
            .unwrap();
        jarvis.remove("with");
        jarvis.remove("learned_host_keys");
        if let Value::Array(learned) = learned {
            let mut pins: Vec<Value> = jarvis
                .get("host_keys")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for key in learned {
                pins.retain(|p| p["algorithm"] != key["algorithm"]);
                pins.push(key);
            }
            jarvis.insert("host_keys".into(), Value::Array(pins));
        }
    } else {
        outcome.clipboard = clipboard.clone();
    }
    outcome
}

/// Sets (or, for null, removes) the stage parameters `jarvis.with`.
pub fn with_params(clipboard: &mut Mapping, with: Value) {
    if with.is_null() {
        if let Some(jarvis) = clipboard.get_mut("jarvis").and_then(Value::as_object_mut) {
            jarvis.remove("with");
        }
    } else {
        set(clipboard, "jarvis.with", with);
    }
}

/// A file standing in for the engine's secret channel (`JARVIS_SECRETS`).
pub struct Secrets {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Secrets {
    pub fn new() -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, "").unwrap();
        Secrets { _dir: dir, path }
    }

    /// `("JARVIS_SECRETS", path)`, for a worker's environment.
    pub fn grant(&self) -> (&'static str, String) {
        ("JARVIS_SECRETS", self.path.display().to_string())
    }

    /// The `NAME=VALUE` lines written so far.
    pub fn lines(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.path)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }
}

/// True when `text` (a YAML rendering of a clipboard, say) holds `secret` anywhere.
pub fn holds(clipboard: &Mapping, secret: &str) -> bool {
    serde_saphyr::to_string(clipboard).unwrap().contains(secret)
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
