//! `ssh`: steps no API can do, done on the host over SSH (russh).
//!
//! Environment (granted by the configuration): `SSH_KEY_FILE` (the private key jarvis signs
//! in with; needed by `run`, `keygen`, and by any task that goes through jump hosts),
//! `SSH_KEY_PASSPHRASE` (when the key has one), `SSH_USER` (default user), `SSH_SCRIPTS` (a
//! folder of scripts `run` may name).
//!
//! The target is `ssh.host`, else `instance.ip`, else `instance.fqdn`, on `ssh.port` (22), as
//! `ssh.user` (else `$SSH_USER`, else root), reached through the jump hosts in
//! `ssh.jump: [{host, port, user}]` (direct-tcpip channels, each signed in to with the same
//! key). Host keys are pinned on the clipboard as `ssh.known_hosts` (OpenSSH `known_hosts`
//! lines): the target's at `wait` (first contact) and `fingerprints`, a jump host's at its
//! first contact. A host whose key differs from its pin fails the task.
//!
//! Tasks:
//! - `wait`: tries until the target's sshd answers and finishes a key exchange, for
//!   `ssh.wait_seconds` (600), every `ssh.poll_ms` (2000), with progress lines; pins the key
//!   it offered (replacing older pins of that host).
//! - `fingerprints`: asks for each host key type (ed25519, ecdsa, rsa) in turn; writes
//!   `ssh.fingerprints` (`{ssh-ed25519: "SHA256:…"}`, as `ssh-keygen -lf` prints them),
//!   `ssh.sshfp` (`[{algorithm, fptype: 2, fingerprint: HEX}]`, the SSHFP record data for the
//!   dns worker) and pins every key.
//! - `run`: runs `ssh.commands` (a list; an item is a shell line written by the pipeline, run
//!   as it is, or a list `[program, arg…]` whose arguments may hold `{clipboard.path}`, each
//!   shell-quoted), else the script named by `ssh.script`, on the target, through `sudo -n`
//!   when `ssh.sudo` is true. Output goes to the log as `HOST| line`; a command that exits
//!   non-zero fails the task with its last line. `run.NAME` runs the script NAME:
//!   `ssh.scripts.NAME` (a list like `ssh.commands`) if the clipboard has it, else the file
//!   NAME (or NAME.sh) in `$SSH_SCRIPTS`, fed to `sh -s` on its stdin with the arguments
//!   `ssh.script_args` (each filled and quoted like a command's).
//! - `keygen`: makes an ed25519 keypair at `ssh.root_identity` (default
//!   `/root/.ssh/id_ed25519`) on the host with ssh-keygen there, unless it exists, and writes
//!   its public key to `ssh.root_pubkey`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PublicKey};
use serde_json::{Map, Value, json};

use crate::protocol::{self, Failure, Mapping, TaskResult};

mod connect;
mod exec;

use connect::{Connection, KnownHosts, Route, Trouble, Trust};
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

fn number(clipboard: &Mapping, path: &str) -> Option<u64> {
    protocol::get_path(clipboard, path).and_then(Value::as_u64)
}

async fn wait(mut clipboard: Mapping) -> TaskResult {
    let route = Route::from_clipboard(&clipboard)?;
    let mut known = KnownHosts::from_clipboard(&clipboard)?;
    let key = if route.jumps.is_empty() {
        None
    } else {
        Some(connect::private_key()?)
    };
    let deadline = Duration::from_secs(number(&clipboard, "ssh.wait_seconds").unwrap_or(600));
    let poll = Duration::from_millis(number(&clipboard, "ssh.poll_ms").unwrap_or(2000).max(50));
    let name = route.target.name();
    let started = Instant::now();
    loop {
        let attempt = connect::open(
            &route,
            &mut known,
            key.as_ref(),
            Trust::Any,
            connect::algorithms(None),
            false,
        )
        .await;
        match attempt {
            Ok(connection) => {
                let offered = connection.target_key.clone();
                close(connection).await;
                let before = known.keys_for(&route.target);
                if !before.is_empty() && !before.iter().any(|k| k.key_data() == offered.key_data())
                {
                    protocol::notice(&format!(
                        "{name} offers a host key other than the one pinned before; pinning the new one"
                    ));
                }
                known.forget(&route.target);
                known.pin(&route.target, &offered);
                known.store(&mut clipboard);
                protocol::notice(&format!(
                    "sshd on {name} answers after {}s; pinned host key {} {}",
                    started.elapsed().as_secs(),
                    offered.algorithm(),
                    offered.fingerprint(HashAlg::Sha256)
                ));
                return Ok(Some(clipboard));
            }
            Err(Trouble::Unreachable(why)) => {
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

async fn fingerprints(mut clipboard: Mapping) -> TaskResult {
    let route = Route::from_clipboard(&clipboard)?;
    let mut known = KnownHosts::from_clipboard(&clipboard)?;
    let key = if route.jumps.is_empty() {
        None
    } else {
        Some(connect::private_key()?)
    };
    let name = route.target.name();
    let kinds = [
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
    ];
    let mut offered: Vec<PublicKey> = Vec::new();
    for kind in kinds {
        let pins = known.keys_for(&route.target);
        let attempt = connect::open(
            &route,
            &mut known,
            key.as_ref(),
            Trust::PerAlgorithm(pins),
            connect::algorithms(Some(std::slice::from_ref(&kind))),
            false,
        )
        .await;
        match attempt {
            Ok(connection) => {
                offered.push(connection.target_key.clone());
                close(connection).await;
            }
            Err(Trouble::NoCommonAlgorithm) => {
                protocol::log(&format!("{name} has no {kind} host key"));
            }
            Err(other) => return Err(other.into()),
        }
    }
    if offered.is_empty() {
        return Err(Failure::fatal(format!(
            "{name} offered no host key jarvis knows"
        )));
    }
    let mut prints = Map::new();
    let mut sshfp = Vec::new();
    for key in &offered {
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        protocol::log(&format!("{name}: {} {fingerprint}", key.algorithm()));
        prints.insert(key.algorithm().to_string(), fingerprint.to_string().into());
        if let Some(algorithm) = sshfp_algorithm(&key.algorithm()) {
            sshfp.push(json!({
                "algorithm": algorithm,
                "fptype": 2,
                "fingerprint": hex(fingerprint.as_bytes()),
            }));
        }
        known.pin(&route.target, key);
    }
    known.store(&mut clipboard);
    let ssh = protocol::section(&mut clipboard, "ssh");
    ssh.insert("fingerprints".into(), Value::Object(prints));
    ssh.insert("sshfp".into(), Value::Array(sshfp));
    protocol::notice(&format!(
        "{name}: {} host key(s) read and pinned",
        offered.len()
    ));
    Ok(Some(clipboard))
}

/// The SSHFP algorithm number of a host key (RFC 4255, 6594, 7479).
fn sshfp_algorithm(algorithm: &Algorithm) -> Option<u8> {
    match algorithm {
        Algorithm::Rsa { .. } => Some(1),
        Algorithm::Dsa => Some(2),
        Algorithm::Ecdsa { .. } => Some(3),
        Algorithm::Ed25519 => Some(4),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One thing to run: a command line, and what to feed it.
struct Step {
    shown: String,
    command: String,
    stdin: Option<Vec<u8>>,
}

async fn run_commands(mut clipboard: Mapping, script: Option<&str>) -> TaskResult {
    let sudo = protocol::get_path(&clipboard, "ssh.sudo")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let steps = plan(&clipboard, script, sudo)?;
    let key = connect::private_key()?;
    let route = Route::from_clipboard(&clipboard)?;
    let mut known = KnownHosts::from_clipboard(&clipboard)?;
    let connection = signed_in(&route, &mut known, &key).await?;
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
    known.store(&mut clipboard);
    Ok(Some(clipboard))
}

/// Connects and signs in to the target, which must show its pinned key (or, never seen
/// before, gets pinned now).
async fn signed_in(
    route: &Route,
    known: &mut KnownHosts,
    key: &std::sync::Arc<russh::keys::PrivateKey>,
) -> Result<Connection, Failure> {
    let pins = known.keys_for(&route.target);
    let connection = connect::open(
        route,
        known,
        Some(key),
        Trust::Pinned(pins.clone()),
        connect::pinned_algorithms(&pins),
        true,
    )
    .await?;
    if pins.is_empty() {
        known.pin(&route.target, &connection.target_key);
        protocol::notice(&format!(
            "pinned the host key of {} at first contact (no ssh:wait before): {}",
            route.target.name(),
            connection.target_key.fingerprint(HashAlg::Sha256)
        ));
    }
    Ok(connection)
}

/// The steps of `run` (no script name) or `run.NAME`.
fn plan(clipboard: &Mapping, script: Option<&str>, sudo: bool) -> Result<Vec<Step>, Failure> {
    let named = match script {
        Some(name) => Some(name.to_string()),
        None => match protocol::get_path(clipboard, "ssh.commands") {
            Some(commands) => return command_steps(clipboard, commands, "ssh.commands", sudo),
            None => protocol::get_path(clipboard, "ssh.script")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
    };
    let Some(name) = named else {
        return Err(Failure::fatal(
            "nothing to run: the clipboard has no ssh.commands or ssh.script",
        ));
    };
    let name_ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(Failure::fatal(format!("'{name}' is no script name")));
    }
    let field = format!("ssh.scripts.{name}");
    if let Some(commands) = protocol::get_path(clipboard, &field) {
        return command_steps(clipboard, commands, &field, sudo);
    }
    let text = read_script(&name)?;
    let mut command = if sudo { "sudo -n sh -s --" } else { "sh -s --" }.to_string();
    match protocol::get_path(clipboard, "ssh.script_args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(args)) => {
            for arg in args {
                let word = match arg {
                    Value::String(s) => exec::fill(s, clipboard)?,
                    Value::Number(n) => n.to_string(),
                    _ => return Err(Failure::fatal("ssh.script_args must hold texts")),
                };
                command.push(' ');
                command.push_str(&exec::quote(&word)?);
            }
        }
        Some(_) => return Err(Failure::fatal("ssh.script_args must be a list")),
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
            "script '{name}' is not on the clipboard (ssh.scripts.{name}) and no SSH_SCRIPTS folder is granted"
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
    let sudo = protocol::get_path(&clipboard, "ssh.sudo")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let file = protocol::get_path(&clipboard, "ssh.root_identity")
        .and_then(Value::as_str)
        .unwrap_or("/root/.ssh/id_ed25519")
        .to_string();
    let key = connect::private_key()?;
    let route = Route::from_clipboard(&clipboard)?;
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
    let mut known = KnownHosts::from_clipboard(&clipboard)?;
    let connection = signed_in(&route, &mut known, &key).await?;
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
        public.fingerprint(HashAlg::Sha256)
    ));
    known.store(&mut clipboard);
    protocol::section(&mut clipboard, "ssh").insert("root_pubkey".into(), line.into());
    Ok(Some(clipboard))
}

async fn close(connection: Connection) {
    let _ = connection
        .target
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}
