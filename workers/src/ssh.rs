//! `ssh`: steps no API can do, done on the host over SSH (russh).
//!
//! A design is data from people who may not be trusted: nothing this module runs, nor where,
//! as whom or under sudo, comes from the design. It all comes from the stage's parameters,
//! `jarvis.with` (the stage's `with:` in the operator's configuration, which the engine puts
//! on the clipboard), and from the environment the configuration grants the module.
//!
//! Environment: `SSH_KEY_FILE` (the private key jarvis signs in with; needed by `run`,
//! `keygen`, and by any task that goes through jump hosts), `SSH_KEY_PASSPHRASE` (when the key
//! has one), `SSH_USER` (default user), `SSH_SCRIPTS` (a folder of scripts `run` may name),
//! and from the engine `JARVIS_HOST` (the run's host name).
//!
//! The target is `with.host`, else `jarvis.target.host` (where a provider stage of this run
//! said the new host answers), else `$JARVIS_HOST.` + `with.domain` (`with: {domain:
//! example.com}` reaches loki.example.com for host loki). Its port is `with.port`, else
//! `jarvis.target.port` (with that target), else 22. The user is `with.user`, else
//! `$SSH_USER`, else root. Jump hosts: `with.jump: [{host, port, user, host_key}]`, reached by
//! direct-tcpip channels and each signed in to with the same key; `host_key` (required) pins
//! the jump host's key: `"SHA256:…"` as `ssh-keygen -lf` prints it, or `"ssh-ed25519
//! SHA256:…"` to also name its algorithm. Nothing else on the clipboard (not `instance.ip`,
//! `instance.fqdn` or anything under `ssh`) chooses the target.
//!
//! Host keys. The engine keeps the pinned host keys of each host and gives the run host's
//! pins as `jarvis.host_keys: [{algorithm: ssh-ed25519, fingerprint: "SHA256:…"}]`.
//! - By default every connection to the target requires a pin: only the pinned algorithms are
//!   negotiated, and the key offered must have the pinned fingerprint. With no pins the task
//!   fails ("jarvis has no pinned host key for HOST; …"); with another key it fails naming
//!   both fingerprints and the `trust HOST ALGORITHM FINGERPRINT` an admin says if the change
//!   is expected. A pin is never replaced here.
//! - `with.host_key: learn`, set by the operator on the `wait` and `fingerprints` stages of
//!   pipelines that create the host, takes whatever key the target offers and reports it as
//!   `jarvis.learned_host_keys: [{algorithm, fingerprint}]` (with a `notice:`), for the engine
//!   to pin. Other tasks do not learn.
//!
//! Tasks:
//! - `wait`: tries until the target's sshd answers and finishes a key exchange, for
//!   `with.wait_seconds` (600), every `with.poll_ms` (2000), with progress lines. Learning, it
//!   reports the key it saw; otherwise that key must be pinned.
//! - `fingerprints`: learning, asks for each host key type (ed25519, ecdsa, rsa) in turn and
//!   reports every key it saw; otherwise checks each pinned algorithm's key. Writes
//!   `ssh.fingerprints` (`{ssh-ed25519: "SHA256:…"}`) and `ssh.sshfp` (`[{algorithm, fptype:
//!   2, fingerprint: HEX}]`) of those keys, for people to read (the dns worker takes its SSHFP
//!   records from the pins themselves).
//! - `run`: runs `with.commands` (a list; an item is a shell line written by the operator,
//!   run as it is, or a list `[program, arg…]` whose arguments may hold `{clipboard.path}`,
//!   filled with the design's values and each shell-quoted), else the script named by
//!   `with.script` (a file in `$SSH_SCRIPTS`, fed to `sh -s` on its stdin with the arguments
//!   `with.script_args`, each filled and quoted like a command's), on the target, through
//!   `sudo -n` when `with.sudo` is true. Output goes to the log as `HOST| line`; a command that
//!   exits non-zero fails the task with its last line. `run.NAME` runs `with.scripts.NAME` (a
//!   list like `with.commands`) if the stage has it, else the file NAME (or NAME.sh) in
//!   `$SSH_SCRIPTS` like `with.script`. With no commands or script in `with:` it runs nothing
//!   and fails.
//! - `keygen`: makes an ed25519 keypair at `with.root_identity` (default
//!   `/root/.ssh/id_ed25519`) on the host with ssh-keygen there (through sudo when
//!   `with.sudo`), unless it exists, and writes its public key to `ssh.root_pubkey`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, EcdsaCurve, PublicKey};
use serde_json::{Map, Value, json};

use crate::protocol::{self, Failure, Mapping, TaskResult};

mod connect;
mod exec;

use connect::{Connection, HopFailure, Pin, Route, Trust};
use exec::Template;

const TASKS: &[&str] = &["wait", "fingerprints", "run", "run.NAME", "keygen"];

pub fn run(task: &str) -> ExitCode {
    let task = task.to_string();
    match task.as_str() {
        "wait" => protocol::run_task(|c| protocol::block_on(wait(c))?),
        "fingerprints" => protocol::run_task(|c| protocol::block_on(fingerprints(c))?),
        "run" => protocol::run_task(|c| protocol::block_on(run_commands(c, None))?),
        "keygen" => protocol::run_task(|c| protocol::block_on(keygen(c))?),
        other => match other.strip_prefix("run.") {
            Some(name) => protocol::run_task(|c| protocol::block_on(run_commands(c, Some(name)))?),
            None => crate::unknown_task("ssh", other, TASKS),
        },
    }
}

/// Where the worker reports the keys it learned, for the engine to pin.
const LEARNED: &str = "learned_host_keys";

/// How this stage judges the target's host key.
enum Mode {
    /// `with.host_key: learn`: take what the target offers and report it.
    Learn,
    /// The target must show one of these pins (never empty).
    Pinned(Vec<Pin>),
}

/// The stage's trust mode. `learning_allowed` is false for tasks that never learn.
fn mode(clipboard: &Mapping, route: &Route, learning_allowed: bool) -> Result<Mode, Failure> {
    match protocol::param(clipboard, "host_key") {
        None => {}
        Some(Value::String(word)) if word == "learn" => {
            if learning_allowed {
                return Ok(Mode::Learn);
            }
            return Err(Failure::fatal(
                "with.host_key: learn is for the ssh:wait and ssh:fingerprints stages of a \
                 pipeline that creates the host; this task only talks to a host whose key is \
                 pinned",
            ));
        }
        Some(_) => {
            return Err(Failure::fatal(
                "the stage's with.host_key must be 'learn' or left out",
            ));
        }
    }
    let pins = connect::host_pins(clipboard)?;
    if pins.is_empty() {
        let host = &route.host;
        return Err(Failure::fatal(format!(
            "jarvis has no pinned host key for {host}; a pipeline that creates the host learns it \
             (with: {{host_key: learn}}), or an admin says 'trust {host} ALGORITHM FINGERPRINT'"
        )));
    }
    Ok(Mode::Pinned(pins))
}

/// The key jump hosts need (none when there are none).
fn jump_key(route: &Route) -> Result<Option<std::sync::Arc<russh::keys::PrivateKey>>, Failure> {
    if route.jumps.is_empty() {
        Ok(None)
    } else {
        connect::private_key().map(Some)
    }
}

/// Puts the keys a learning stage saw on the clipboard as `jarvis.learned_host_keys`, or,
/// when it learned nothing, makes sure no older report travels on.
fn report_learned(clipboard: &mut Mapping, learned: Option<&[PublicKey]>) {
    let jarvis = protocol::section(clipboard, "jarvis");
    match learned {
        Some(keys) => {
            let list: Vec<Value> = keys
                .iter()
                .map(|key| {
                    json!({
                        "algorithm": connect::plain(key.algorithm()).to_string(),
                        "fingerprint": connect::fingerprint(key),
                    })
                })
                .collect();
            jarvis.insert(LEARNED.into(), Value::Array(list));
        }
        None => {
            jarvis.remove(LEARNED);
        }
    }
}

fn learned_notice(route: &Route, key: &PublicKey, pins: &[Pin]) {
    let pin = Pin::of(key);
    let host = &route.host;
    let algorithm = connect::plain(key.algorithm());
    let same_kind: Vec<&Pin> = pins
        .iter()
        .filter(|p| p.algorithm.as_ref() == Some(&algorithm))
        .collect();
    if !same_kind.is_empty() && !same_kind.iter().any(|p| p.matches(key)) {
        let before: Vec<String> = same_kind.iter().map(|p| p.shown()).collect();
        protocol::notice(&format!(
            "{host} offers a host key other than the one pinned before ({}): learning the new one",
            before.join(", ")
        ));
    }
    protocol::notice(&format!("learned {host}'s host key {}", pin.shown()));
}

async fn wait(mut clipboard: Mapping) -> TaskResult {
    let route = Route::from_params(&clipboard, connect::run_host())?;
    let mode = mode(&clipboard, &route, true)?;
    let key = jump_key(&route)?;
    let deadline =
        Duration::from_secs(protocol::param_u64(&clipboard, "wait_seconds")?.unwrap_or(600));
    let poll = Duration::from_millis(
        protocol::param_u64(&clipboard, "poll_ms")?
            .unwrap_or(2000)
            .max(50),
    );
    let name = route.target.name();
    let (trust, wanted) = match &mode {
        Mode::Learn => (Trust::Learn, connect::algorithms(None)),
        Mode::Pinned(pins) => (
            Trust::Pinned(pins.clone()),
            connect::pinned_algorithms(pins),
        ),
    };
    let started = Instant::now();
    loop {
        let attempt =
            connect::open(&route, key.as_ref(), trust.clone(), wanted.clone(), false).await;
        match attempt {
            Ok(connection) => {
                let offered = connection.target_key.clone();
                close(connection).await;
                protocol::notice(&format!(
                    "sshd on {name} answers after {}s",
                    started.elapsed().as_secs()
                ));
                match mode {
                    Mode::Learn => {
                        learned_notice(
                            &route,
                            &offered,
                            &connect::host_pins(&clipboard).unwrap_or_default(),
                        );
                        report_learned(&mut clipboard, Some(std::slice::from_ref(&offered)));
                    }
                    Mode::Pinned(_) => {
                        protocol::log(&format!(
                            "{} showed its pinned host key {}",
                            route.host,
                            Pin::of(&offered).shown()
                        ));
                        report_learned(&mut clipboard, None);
                    }
                }
                return Ok(Some(clipboard));
            }
            Err(HopFailure::Unreachable(why)) => {
                if started.elapsed() >= deadline {
                    return Err(Failure::retry(format!(
                        "no SSH on {name} after {}s: {why}",
                        deadline.as_secs()
                    )));
                }
                protocol::progress(&format!(
                    "waiting for sshd on {name} ({}s): {why}",
                    started.elapsed().as_secs()
                ));
                tokio::time::sleep(poll).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
}

/// The host key algorithms `fingerprints` asks for when it learns.
fn scanned_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa { hash: None },
    ]
}

async fn fingerprints(mut clipboard: Mapping) -> TaskResult {
    let route = Route::from_params(&clipboard, connect::run_host())?;
    let mode = mode(&clipboard, &route, true)?;
    let key = jump_key(&route)?;
    let name = route.target.name();
    let host = route.host.clone();
    let kinds: Vec<Algorithm> = match &mode {
        Mode::Learn => scanned_algorithms(),
        Mode::Pinned(pins) => {
            let mut kinds: Vec<Algorithm> = Vec::new();
            for algorithm in pins.iter().filter_map(|p| p.algorithm.clone()) {
                if !kinds.contains(&algorithm) {
                    kinds.push(algorithm);
                }
            }
            kinds
        }
    };
    let mut offered: Vec<PublicKey> = Vec::new();
    for kind in kinds {
        let trust = match &mode {
            Mode::Learn => Trust::Learn,
            Mode::Pinned(pins) => Trust::Pinned(pins.clone()),
        };
        let attempt = connect::open(
            &route,
            key.as_ref(),
            trust,
            connect::algorithms(Some(std::slice::from_ref(&kind))),
            false,
        )
        .await;
        match attempt {
            Ok(connection) => {
                offered.push(connection.target_key.clone());
                close(connection).await;
            }
            Err(HopFailure::NoCommonAlgorithm) => match &mode {
                Mode::Learn => protocol::log(&format!("{name} has no {kind} host key")),
                Mode::Pinned(_) => protocol::notice(&format!(
                    "{host} no longer offers its pinned {kind} host key"
                )),
            },
            Err(other) => return Err(other.into()),
        }
    }
    if offered.is_empty() {
        return Err(Failure::fatal(match mode {
            Mode::Learn => format!("{name} offered no host key jarvis knows"),
            Mode::Pinned(_) => format!("{host} offered none of its pinned host keys"),
        }));
    }
    let mut prints = Map::new();
    let mut sshfp = Vec::new();
    for key in &offered {
        let pin = Pin::of(key);
        protocol::log(&format!("{name}: {}", pin.shown()));
        let algorithm = connect::plain(key.algorithm()).to_string();
        if let Some(number) = crate::host_facts::sshfp_algorithm(&algorithm) {
            sshfp.push(json!({
                "algorithm": number,
                "fptype": 2,
                "fingerprint": crate::host_facts::to_hex(key.fingerprint(russh::keys::HashAlg::Sha256).as_bytes()),
            }));
        }
        prints.insert(algorithm, pin.fingerprint.into());
    }
    match mode {
        Mode::Learn => {
            let before = connect::host_pins(&clipboard).unwrap_or_default();
            for key in &offered {
                learned_notice(&route, key, &before);
            }
            report_learned(&mut clipboard, Some(&offered));
        }
        Mode::Pinned(_) => {
            protocol::notice(&format!(
                "{host}: {} host key(s) match their pins",
                offered.len()
            ));
            report_learned(&mut clipboard, None);
        }
    }
    let ssh = protocol::section(&mut clipboard, "ssh");
    ssh.insert("fingerprints".into(), Value::Object(prints));
    ssh.insert("sshfp".into(), Value::Array(sshfp));
    Ok(Some(clipboard))
}

/// One thing to run: a command line, and what to feed it.
struct Step {
    shown: String,
    command: String,
    stdin: Option<Vec<u8>>,
}

async fn run_commands(clipboard: Mapping, script: Option<&str>) -> TaskResult {
    let sudo = protocol::param_bool(&clipboard, "sudo")?;
    let steps = plan(&clipboard, script, sudo)?;
    let route = Route::from_params(&clipboard, connect::run_host())?;
    let pins = pinned(&clipboard, &route)?;
    let key = connect::private_key()?;
    let connection = signed_in(&route, pins, &key).await?;
    let host = route.target.host.clone();
    let total = steps.len();
    for (i, step) in steps.iter().enumerate() {
        protocol::progress(&format!("{host}: {} ({}/{total})", step.shown, i + 1));
        exec::run(
            &connection.target,
            &host,
            &step.shown,
            &step.command,
            step.stdin.as_deref(),
        )
        .await?;
    }
    close(connection).await;
    protocol::notice(&format!("{host}: {total} command(s) done"));
    let mut clipboard = clipboard;
    report_learned(&mut clipboard, None);
    Ok(Some(clipboard))
}

/// The pins of a task that never learns.
fn pinned(clipboard: &Mapping, route: &Route) -> Result<Vec<Pin>, Failure> {
    match mode(clipboard, route, false)? {
        Mode::Pinned(pins) => Ok(pins),
        Mode::Learn => Err(Failure::fatal("this task does not learn host keys")),
    }
}

/// Connects and signs in to the target, which must show a pinned key.
async fn signed_in(
    route: &Route,
    pins: Vec<Pin>,
    key: &std::sync::Arc<russh::keys::PrivateKey>,
) -> Result<Connection, Failure> {
    let wanted = connect::pinned_algorithms(&pins);
    Ok(connect::open(route, Some(key), Trust::Pinned(pins), wanted, true).await?)
}

/// The steps of `run` (no script name) or `run.NAME`, from the stage's parameters only.
fn plan(clipboard: &Mapping, script: Option<&str>, sudo: bool) -> Result<Vec<Step>, Failure> {
    let named = match script {
        Some(name) => Some(name.to_string()),
        None => match protocol::param(clipboard, "commands") {
            Some(commands) => return command_steps(clipboard, commands, "with.commands", sudo),
            None => match protocol::param(clipboard, "script") {
                None => None,
                Some(Value::String(name)) => Some(name.clone()),
                Some(_) => return Err(Failure::fatal("the stage's with.script must be a text")),
            },
        },
    };
    let Some(name) = named else {
        return Err(Failure::fatal(
            "nothing to run: the stage's with: has no commands or script",
        ));
    };
    let name_ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(Failure::fatal(format!(
            "'{}' is no script name",
            crate::host_facts::printable(&name)
        )));
    }
    if script.is_some()
        && let Some(commands) = protocol::param(clipboard, "scripts")
            .and_then(Value::as_object)
            .and_then(|scripts| scripts.get(&name))
    {
        return command_steps(clipboard, commands, &format!("with.scripts.{name}"), sudo);
    }
    let text = read_script(&name)?;
    let mut command = if sudo { "sudo -n sh -s --" } else { "sh -s --" }.to_string();
    match protocol::param(clipboard, "script_args") {
        None => {}
        Some(Value::Array(args)) => {
            for arg in args {
                let word = match arg {
                    Value::String(s) => exec::fill(s, clipboard)?,
                    Value::Number(n) => n.to_string(),
                    _ => return Err(Failure::fatal("with.script_args must hold texts")),
                };
                command.push(' ');
                command.push_str(&exec::quote(&word)?);
            }
        }
        Some(_) => return Err(Failure::fatal("with.script_args must be a list")),
    }
    Ok(vec![Step {
        shown: format!("script {name}"),
        command,
        stdin: Some(text),
    }])
}

fn command_steps(
    clipboard: &Mapping,
    commands: &Value,
    field: &str,
    sudo: bool,
) -> Result<Vec<Step>, Failure> {
    let items = match commands {
        Value::Array(items) if !items.is_empty() => items.clone(),
        Value::String(_) => vec![commands.clone()],
        _ => return Err(Failure::fatal(format!("{field} must be a non-empty list"))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let template = Template::from_value(item, &format!("{field}[{i}]"))?;
            Ok(Step {
                shown: template.shown(),
                command: template.render(clipboard, sudo)?,
                stdin: None,
            })
        })
        .collect()
}

/// A script from the folder granted as `SSH_SCRIPTS`.
fn read_script(name: &str) -> Result<Vec<u8>, Failure> {
    const LIMIT: u64 = 1024 * 1024;
    let folder = std::env::var("SSH_SCRIPTS").ok().filter(|f| !f.is_empty()).ok_or_else(|| {
        Failure::fatal(format!(
            "script '{name}' is not in the stage's with.scripts and no SSH_SCRIPTS folder is granted"
        ))
    })?;
    let folder = std::path::Path::new(&folder);
    for candidate in [folder.join(name), folder.join(format!("{name}.sh"))] {
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
        {
            if meta.len() > LIMIT {
                return Err(Failure::fatal(format!(
                    "script '{name}' is larger than 1 MiB"
                )));
            }
            return std::fs::read(&candidate)
                .map_err(|e| Failure::fatal(format!("cannot read script '{name}': {e}")));
        }
    }
    Err(Failure::fatal(format!(
        "no script '{name}' in the SSH_SCRIPTS folder"
    )))
}

/// Makes the root keypair on the host itself, so the private key never travels.
const KEYGEN_SCRIPT: &str = r#"set -eu
file=$1
comment=$2
if [ ! -f "$file" ]; then
  dir=$(dirname "$file")
  [ -d "$dir" ] || { mkdir -p "$dir"; chmod 700 "$dir"; }
  ssh-keygen -q -t ed25519 -N '' -C "$comment" -f "$file" </dev/null
fi
cat "$file.pub"
"#;

async fn keygen(mut clipboard: Mapping) -> TaskResult {
    let sudo = protocol::param_bool(&clipboard, "sudo")?;
    let file = match protocol::param(&clipboard, "root_identity") {
        None => "/root/.ssh/id_ed25519".to_string(),
        Some(Value::String(file)) if file.starts_with('/') => file.clone(),
        Some(_) => {
            return Err(Failure::fatal(
                "the stage's with.root_identity must be an absolute path",
            ));
        }
    };
    let route = Route::from_params(&clipboard, connect::run_host())?;
    let pins = pinned(&clipboard, &route)?;
    let key = connect::private_key()?;
    let host_name = ["instance.fqdn", "instance.hostname"]
        .iter()
        .find_map(|p| protocol::get_path(&clipboard, p).and_then(Value::as_str))
        .unwrap_or(&route.target.host);
    let comment = format!("root@{host_name}");
    let command = format!(
        "{} {} {}",
        if sudo { "sudo -n sh -s --" } else { "sh -s --" },
        exec::quote(&file)?,
        exec::quote(&comment)?
    );
    let connection = signed_in(&route, pins, &key).await?;
    let host = route.target.host.clone();
    protocol::progress(&format!("{host}: making a root keypair at {file}"));
    let output = exec::run(
        &connection.target,
        &host,
        "ssh-keygen",
        &command,
        Some(KEYGEN_SCRIPT.as_bytes()),
    )
    .await?;
    close(connection).await;
    let line = output
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    let public = PublicKey::from_openssh(&line).map_err(|_| {
        Failure::fatal(format!(
            "{host}: ssh-keygen gave no public key at {file}.pub"
        ))
    })?;
    protocol::notice(&format!(
        "{host}: root key {}",
        connect::fingerprint(&public)
    ));
    report_learned(&mut clipboard, None);
    protocol::section(&mut clipboard, "ssh").insert("root_pubkey".into(), line.into());
    Ok(Some(clipboard))
}

async fn close(connection: Connection) {
    let _ = connection
        .target
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}
