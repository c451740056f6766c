//! Test support: starts the real servers of `tests/testbed` in throwaway folders and hands
//! their ports and credentials to the tests, and stops them when dropped. A server is a
//! script `tests/testbed/servers/NAME.sh`: `alertmanager`, `bind`, `ircd`, `moto` (the AWS
//! emulator, with an IAM key it checks signatures against), `prosody`, `slapd`, `sshd`.
//!
//! A server that is not installed makes [`Server::start`] return `Ok(None)` on a developer's
//! machine, with a loud line on stderr, and fail under `CI=true`: CI never skips silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// True when running under CI, where a missing server is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A running test server and what it told us about itself.
pub struct Server {
    name: String,
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Server {
    /// Starts server `name` (`tests/testbed/servers/NAME.sh`) in a fresh folder and waits
    /// until it is ready. `Ok(None)` when it is not installed and this is not CI.
    pub fn start(name: &str) -> Result<Option<Server>> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("jarvis-{name}-"))
            .tempdir()
            .context("cannot make a folder for the server")?;
        let mut server = Server {
            name: name.to_string(),
            dir,
            env: HashMap::new(),
        };
        match server.run_start()? {
            Started::Yes => Ok(Some(server)),
            Started::NotInstalled(why) => {
                if in_ci() {
                    bail!("test server {name} is not installed, and CI must not skip: {why}");
                }
                eprintln!("SKIPPING: test server {name} is not installed: {why}");
                Ok(None)
            }
        }
    }

    fn run_start(&mut self) -> Result<Started> {
        let script = repo_root().join("tests/testbed/start");
        let out = Command::new(&script)
            .arg(&self.name)
            .arg(self.dir.path())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(0) => {}
            Some(3) => return Ok(Started::NotInstalled(stderr.trim().to_string())),
            _ => bail!(
                "test server {} did not start ({}): {}\n{}",
                self.name,
                out.status,
                stderr.trim(),
                self.logs()
            ),
        }
        self.env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Started::Yes)
    }

    /// A value the start script emitted (a port, a user, a key file).
    pub fn get(&self, key: &str) -> &str {
        match self.env.get(key) {
            Some(v) => v,
            None => panic!("test server {} emitted no {key}", self.name),
        }
    }

    /// Everything the start script emitted.
    pub fn env(&self) -> &HashMap<String, String> {
        &self.env
    }

    /// The server's folder (configuration, logs, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server's processes (all, or those whose pid file is `NAME.pid`).
    pub fn stop(&self, only: Option<&str>) -> Result<()> {
        let mut cmd = Command::new(repo_root().join("tests/testbed/stop"));
        cmd.arg(self.dir.path());
        if let Some(only) = only {
            cmd.arg(only);
        }
        let status = cmd.status().context("cannot run tests/testbed/stop")?;
        if !status.success() {
            bail!("stopping {} failed: {status}", self.name);
        }
        Ok(())
    }

    /// Starts the server again in the same folder, on the same ports.
    pub fn restart(&mut self) -> Result<()> {
        match self.run_start()? {
            Started::Yes => Ok(()),
            Started::NotInstalled(why) => bail!("{} vanished: {why}", self.name),
        }
    }

    /// The tail of every log in the server's folder, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let body = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = body.lines().rev().take(20).collect();
                    text.push_str(&format!("--- {}\n", path.display()));
                    for line in tail.into_iter().rev() {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
        }
        text
    }
}

enum Started {
    Yes,
    NotInstalled(String),
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop(None);
    }
}
