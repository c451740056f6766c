//! `jarvis run` for the XMPP tests and benchmark: a configuration for the testbed's Prosody
//! (STARTTLS with the testbed's CA, the demonstration pipeline), and the process, killed
//! when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use jarvis_testbed::Server;

pub const JARVIS: &str = "jarvis@localhost";

/// `jarvis run` with a config for the testbed's Prosody, killed when dropped.
pub struct Jarvis {
    child: Child,
    log: PathBuf,
}

impl Jarvis {
    pub fn start(
        dir: &Path,
        server: &Server,
        password: &str,
        rooms: &[&str],
        step_ms: u64,
        account_extra: &str,
    ) -> Result<Jarvis> {
        let designs = dir.join("designs");
        std::fs::create_dir_all(&designs)?;
        std::fs::write(
            designs.join("demo.yaml"),
            format!(
                "instance:\n  hostname: demo\n  fqdn: demo.localdomain\n  provider: local\ndemo:\n  step_ms: {step_ms}\n"
            ),
        )?;
        let rooms = rooms
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            r#"name: jarvis
data_dir: {data}
designs:
  folder: {designs}
workers:
  modules:
    local:
      env:
        LOCAL_TRACE: {trace}
pipelines:
  demo:
    command: deploy
    providers: [local]
    stages:
      - {{ task: "local:check", idempotent: true }}
      - {{ task: "local:step", idempotent: true, notify: true }}
      - {{ task: "local:step", idempotent: true }}
      - {{ task: "local:step", idempotent: true }}
chat:
  xmpp:
    - name: jabber
      jid: {JARVIS}
      password: ${{JARVIS_TEST_XMPP_PASSWORD}}
      server: 127.0.0.1
      port: {port}
      tls: starttls
      ca_file: {ca}
      rooms: [{rooms}]
{account_extra}
roles:
  grants:
    - {{ xmpp_jid: alice@localhost, roles: [deployer] }}
"#,
            data = dir.join("data").display(),
            designs = designs.display(),
            trace = dir.join("trace").display(),
            port = server.get("XMPP_PORT"),
            ca = server.get("XMPP_CA_FILE"),
        );
        let path = dir.join("jarvis.yaml");
        std::fs::write(&path, config)?;
        let log = dir.join("jarvis.log");
        let child = Command::new(env!("CARGO_BIN_EXE_jarvis"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("JARVIS_TEST_XMPP_PASSWORD", password)
            .env("JARVIS_LOG", "info,jarvis=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start jarvis")?;
        Ok(Jarvis { child, log })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Jarvis {
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for Jarvis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
