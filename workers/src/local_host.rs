//! `local:create_host` and `local:destroy_host`: a real host on this machine, for the
//! demonstration and for tests — an OpenSSH sshd on a free loopback port with its own fresh
//! host keys, so that `ssh:wait`, `ssh:fingerprints` and `ssh:run` have something real to
//! talk to without any provider or credentials.
//!
//! Environment: `JARVIS_LOCAL_HOSTS` (required): the folder that holds one folder per host
//! (`NAME/`: sshd_config, host keys, authorized_keys, sshd.pid, sshd.log) and the operator key
//! pair `client_key`/`client_key.pub` (made once), which every local host lets in. Grant the
//! ssh module `SSH_KEY_FILE=<that folder>/client_key` and the pipeline needs nothing else.
//!
//! `create_host` reads `instance.hostname` and the keys in `instance.sshpubkey`; it writes
//! where the host answers, `jarvis.target: {host: 127.0.0.1, port: PORT}` (what `ssh` reaches),
//! and, for the other workers and people, `instance.ip: 127.0.0.1`, `ssh.port`, `ssh.user` (the
//! user sshd lets in: the one jarvis runs as; `ssh` itself signs in as `with.user`, else
//! `$SSH_USER`, so grant ssh `SSH_USER` as that user) and `local.host_dir`. Run again while its
//! sshd lives, it hands back the same host. `destroy_host` stops that sshd and removes the
//! host's folder.
//!
//! Whoever holds a key in `instance.sshpubkey` can then log in to this machine as the user
//! jarvis runs as: this provider is for demonstrations and tests with designs you trust.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{self, Failure, Mapping, TaskResult};

const START_LIMIT: Duration = Duration::from_secs(15);
const STOP_LIMIT: Duration = Duration::from_secs(5);

pub fn create_host(mut clipboard: Mapping) -> TaskResult {
    let base = hosts_folder()?;
    let name = host_name(&clipboard)?;
    let dir = base.join(&name);
    let user = current_user()?;

    if let Some(port) = running_port(&dir) {
        protocol::notice(&format!(
            "local host {name} already runs on 127.0.0.1:{port}"
        ));
        record(&mut clipboard, &dir, port, &user);
        return Ok(Some(clipboard));
    }
    let sshd = find_program("sshd").ok_or_else(|| {
        Failure::fatal("OpenSSH's sshd is not installed here (apt-get install openssh-server)")
    })?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::fatal(format!("cannot make {}: {e}", dir.display())))?;
    restrict(&dir)?;

    let operator_key = base.join("client_key");
    if !operator_key.exists() {
        keygen(&operator_key, "ed25519", "jarvis-local-operator")?;
    }
    for kind in ["ed25519", "ecdsa"] {
        let file = dir.join(format!("ssh_host_{kind}_key"));
        if !file.exists() {
            keygen(&file, kind, &format!("root@{name}"))?;
        }
    }
    write_authorized_keys(&clipboard, &dir, &operator_key)?;
    if user == "root" {
        // sshd's privilege separation needs this folder when it starts as root.
        std::fs::create_dir_all("/run/sshd")
            .map_err(|e| Failure::fatal(format!("cannot make /run/sshd: {e}")))?;
    }

    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        write_config(&dir, port, &user)?;
        match start(&sshd, &dir, port) {
            Ok(()) => {
                protocol::notice(&format!("local host {name} runs sshd on 127.0.0.1:{port}"));
                record(&mut clipboard, &dir, port, &user);
                return Ok(Some(clipboard));
            }
            // Another process may take the port between our probe and sshd's bind.
            Err(why) => last_error = why,
        }
    }
    Err(Failure::retry(format!(
        "sshd for local host {name} did not start: {last_error}"
    )))
}

pub fn destroy_host(mut clipboard: Mapping) -> TaskResult {
    let base = hosts_folder()?;
    let name = host_name(&clipboard)?;
    let dir = base.join(&name);
    if let Some(pid) = our_sshd(&dir) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while our_sshd(&dir).is_some() {
            if started.elapsed() > STOP_LIMIT {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Failure::fatal(format!("cannot remove {}: {e}", dir.display())))?;
        protocol::notice(&format!("local host {name} is gone"));
    } else {
        protocol::notice(&format!("no local host {name}: nothing to destroy"));
    }
    if let Some(ssh) = clipboard.get_mut("ssh").and_then(Value::as_object_mut) {
        ssh.remove("port");
    }
    if let Some(local) = clipboard.get_mut("local").and_then(Value::as_object_mut) {
        local.remove("host_dir");
    }
    if let Some(jarvis) = clipboard.get_mut("jarvis").and_then(Value::as_object_mut) {
        jarvis.remove("target");
    }
    Ok(Some(clipboard))
}

fn record(clipboard: &mut Mapping, dir: &Path, port: u16, user: &str) {
    protocol::section(clipboard, "jarvis").insert(
        "target".into(),
        serde_json::json!({"host": "127.0.0.1", "port": port}),
    );
    protocol::section(clipboard, "instance").insert("ip".into(), "127.0.0.1".into());
    let ssh = protocol::section(clipboard, "ssh");
    ssh.insert("port".into(), port.into());
    ssh.insert("user".into(), user.into());
    protocol::section(clipboard, "local")
        .insert("host_dir".into(), dir.display().to_string().into());
}

fn hosts_folder() -> Result<PathBuf, Failure> {
    let folder = std::env::var("JARVIS_LOCAL_HOSTS")
        .ok()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            Failure::fatal(
                "no JARVIS_LOCAL_HOSTS: the configuration must grant local a folder for its hosts",
            )
        })?;
    let folder = PathBuf::from(folder);
    if !folder.is_absolute() {
        return Err(Failure::fatal(
            "JARVIS_LOCAL_HOSTS must be an absolute path",
        ));
    }
    std::fs::create_dir_all(&folder)
        .map_err(|e| Failure::fatal(format!("cannot make {}: {e}", folder.display())))?;
    Ok(folder)
}

/// `instance.hostname`, which names the host's folder, so it must be a plain label.
fn host_name(clipboard: &Mapping) -> Result<String, Failure> {
    let name = protocol::require_str(clipboard, "instance.hostname")?;
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(Failure::fatal(format!(
            "instance.hostname '{name}' is not an RFC 1123 label"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

fn current_user() -> Result<String, Failure> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| Failure::fatal(format!("cannot run id: {e}")))?;
    let user = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || user.is_empty() {
        return Err(Failure::fatal("cannot tell which user jarvis runs as"));
    }
    Ok(user)
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

fn restrict(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Failure::fatal(format!("cannot restrict {}: {e}", dir.display())))
}

fn keygen(file: &Path, kind: &str, comment: &str) -> Result<(), Failure> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Failure::fatal(format!("cannot run ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(Failure::fatal(format!(
            "ssh-keygen failed for {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The design's keys (`instance.sshpubkey`) and the operator key, one a line.
fn write_authorized_keys(clipboard: &Mapping, dir: &Path, operator: &Path) -> Result<(), Failure> {
    let mut lines = Vec::new();
    let pub_file = operator.with_file_name("client_key.pub");
    let operator_pub = std::fs::read_to_string(&pub_file)
        .map_err(|e| Failure::fatal(format!("cannot read {}: {e}", pub_file.display())))?;
    lines.push(operator_pub.trim().to_string());
    let design: Vec<String> = match protocol::get_path(clipboard, "instance.sshpubkey") {
        Some(Value::String(text)) => text.lines().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    for key in design.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
        // One key per line, nothing before its type: an options prefix could run a command.
        let kind = key.split_whitespace().next().unwrap_or("");
        if !["ssh-", "ecdsa-", "sk-"]
            .iter()
            .any(|p| kind.starts_with(p))
        {
            return Err(Failure::fatal(
                "instance.sshpubkey holds something that is no SSH public key",
            ));
        }
        lines.push(key.to_string());
    }
    let text = lines.join("\n") + "\n";
    std::fs::write(dir.join("authorized_keys"), text)
        .map_err(|e| Failure::fatal(format!("cannot write authorized_keys: {e}")))
}

fn free_port() -> Result<u16, Failure> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::retry(format!("cannot find a free loopback port: {e}")))
}

fn write_config(dir: &Path, port: u16, user: &str) -> Result<(), Failure> {
    let d = dir.display();
    let config = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {d}/ssh_host_ed25519_key\n\
         HostKey {d}/ssh_host_ecdsa_key\n\
         PidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         StrictModes no\n\
         UsePAM no\n\
         AllowUsers {user}\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n"
    );
    std::fs::write(dir.join("sshd_config"), config)
        .map_err(|e| Failure::fatal(format!("cannot write sshd_config: {e}")))?;
    std::fs::write(dir.join("port"), port.to_string())
        .map_err(|e| Failure::fatal(format!("cannot write the port file: {e}")))
}

/// Starts sshd, which detaches itself (its own session, outside the worker's process group,
/// so it outlives the task), and waits until it accepts connections.
fn start(sshd: &Path, dir: &Path, port: u16) -> Result<(), String> {
    let log = dir.join("sshd.log");
    let out = Command::new(sshd)
        .arg("-f")
        .arg(dir.join("sshd_config"))
        .arg("-E")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", sshd.display()))?;
    let last_log_line = || {
        std::fs::read_to_string(&log)
            .ok()
            .and_then(|t| t.lines().last().map(str::to_string))
            .unwrap_or_default()
    };
    if !out.status.success() {
        return Err(format!(
            "{} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            last_log_line()
        ));
    }
    let started = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if started.elapsed() > START_LIMIT
            || (started.elapsed() > Duration::from_secs(1) && our_sshd(dir).is_none())
        {
            return Err(format!(
                "nothing listens on port {port}: {}",
                last_log_line()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The pid of this host's sshd, if it runs: the pid file's process, and its command line
/// names this host's config (a recycled pid belongs to someone else).
fn our_sshd(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("sshd.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = dir.join("sshd_config");
    let needle = config.as_os_str().as_encoded_bytes();
    cmdline
        .windows(needle.len())
        .any(|w| w == needle)
        .then_some(pid)
}

fn running_port(dir: &Path) -> Option<u16> {
    our_sshd(dir)?;
    let port: u16 = std::fs::read_to_string(dir.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    Some(port)
}
