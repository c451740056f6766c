//! People, not identities (SPEC 7), across two real networks: alice deploys from XMPP
//! (Prosody) and tries to approve from her IRC account (InspIRCd + Anope); jarvis refuses,
//! saying why, and bob, another person, approves. The real `jarvis run` binary with both
//! networks configured.

#[path = "xmpp/client.rs"]
mod client;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use client::Chatter;
use jarvis_testbed::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

const ROOM: &str = "ops@conference.localhost";
const WAIT: Duration = Duration::from_secs(60);

/// A raw IRC client logged in to its services account with SASL PLAIN.
struct Irc {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Irc {
    async fn connect(port: u16, account: &str, password: &str) -> Result<Irc> {
        let (r, w) = TcpStream::connect(("127.0.0.1", port)).await?.into_split();
        let mut c = Irc {
            reader: BufReader::new(r),
            writer: w,
        };
        c.send("CAP LS 302").await?;
        c.send(&format!("NICK {account}")).await?;
        c.send(&format!("USER {account} 0 * :{account}")).await?;
        c.wait(|l| l.contains(" CAP * LS ")).await?;
        c.send("CAP REQ :sasl").await?;
        c.wait(|l| l.contains(" ACK ")).await?;
        c.send("AUTHENTICATE PLAIN").await?;
        c.wait(|l| l.starts_with("AUTHENTICATE")).await?;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{account}\0{account}\0{password}"));
        c.send(&format!("AUTHENTICATE {token}")).await?;
        c.wait(|l| l.contains(" 903 ")).await?;
        c.send("CAP END").await?;
        c.wait(|l| l.contains(" 001 ")).await?;
        Ok(c)
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        Ok(())
    }

    /// Reads lines (answering PINGs) until one matches.
    async fn wait(&mut self, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            match tokio::time::timeout_at(deadline, self.reader.read_line(&mut line)).await {
                Ok(Ok(0)) => bail!("the IRC server closed the connection; seen: {seen:#?}"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => bail!("nothing matched within {WAIT:?}; seen: {seen:#?}"),
            }
            let line = line.trim_end().to_string();
            if let Some(token) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {token}")).await?;
                continue;
            }
            if pred(&line) {
                return Ok(line);
            }
            seen.push(line);
        }
    }

    /// The next line jarvis says in #ops that contains `needle`.
    async fn jarvis_says(&mut self, needle: &str) -> Result<String> {
        self.wait(|l| {
            l.starts_with(":jarvis!") && l.contains(" PRIVMSG #ops :") && l.contains(needle)
        })
        .await
        .with_context(|| format!("waiting for jarvis to say '{needle}'"))
    }
}

struct Jarvis {
    child: Child,
    log: std::path::PathBuf,
}

impl Jarvis {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Jarvis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_jarvis(dir: &Path, prosody: &Server, ircd: &Server) -> Result<Jarvis> {
    let designs = dir.join("designs");
    std::fs::create_dir_all(&designs)?;
    std::fs::write(
        designs.join("demo.yaml"),
        "instance:\n  hostname: demo\n  provider: local\ndemo:\n  step_ms: 10\n",
    )?;
    let config = format!(
        r##"name: jarvis
data_dir: {data}
designs:
  folder: {designs}
pipelines:
  gated:
    providers: [local]
    stages:
      - {{ task: "local:check" }}
      - {{ task: "local:step", approval: true }}
chat:
  irc:
    - name: testnet
      server: 127.0.0.1
      port: {irc_port}
      channels: ["#ops"]
      sasl:
        account: jarvis
        password: ${{JARVIS_IRC_PASSWORD}}
  xmpp:
    - name: jabber
      jid: jarvis@localhost
      password: ${{JARVIS_XMPP_PASSWORD}}
      server: 127.0.0.1
      port: {xmpp_port}
      tls: starttls
      ca_file: {ca}
      rooms: ["{ROOM}"]
roles:
  people:
    alice:
      - {{ xmpp_jid: alice@localhost }}
      - {{ irc_account: alice, network: testnet }}
    bob:
      - {{ irc_account: bob, network: testnet }}
  grants:
    - {{ person: alice, roles: [deployer, approver] }}
    - {{ person: bob, roles: [approver] }}
"##,
        data = dir.join("data").display(),
        designs = designs.display(),
        irc_port = ircd.get("IRC_PORT"),
        xmpp_port = prosody.get("XMPP_PORT"),
        ca = prosody.get("XMPP_CA_FILE"),
    );
    let path = dir.join("jarvis.yaml");
    std::fs::write(&path, config)?;
    let log = dir.join("jarvis.log");
    let child = Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("JARVIS_IRC_PASSWORD", ircd.get("IRC_JARVIS_PASSWORD"))
        .env("JARVIS_XMPP_PASSWORD", prosody.get("XMPP_PASSWORD_JARVIS"))
        .env("JARVIS_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start jarvis")?;
    Ok(Jarvis { child, log })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_cannot_approve_from_irc_what_she_asked_for_over_xmpp() -> Result<()> {
    let Some(prosody) = Server::start("prosody")? else {
        return Ok(());
    };
    let Some(ircd) = Server::start("ircd")? else {
        return Ok(());
    };
    let irc_port: u16 = ircd.get("IRC_PORT").parse()?;
    let xmpp_port: u16 = prosody.get("XMPP_PORT").parse()?;
    let dir = tempfile::tempdir()?;

    let mut alice_xmpp =
        Chatter::connect(xmpp_port, "alice", prosody.get("XMPP_PASSWORD_ALICE")).await?;
    alice_xmpp.join(ROOM, "alice").await?;
    let mut alice_irc = Irc::connect(irc_port, "alice", ircd.get("IRC_ALICE_PASSWORD")).await?;
    alice_irc.send("JOIN #ops").await?;
    alice_irc.wait(|l| l.contains(" 366 ")).await?;

    let jarvis = start_jarvis(dir.path(), &prosody, &ircd)?;
    alice_xmpp
        .expect_occupant(WAIT, ROOM, "jarvis")
        .await
        .with_context(|| jarvis.log())?;
    alice_irc
        .wait(|l| l.starts_with(":jarvis!") && l.contains(" JOIN "))
        .await
        .with_context(|| jarvis.log())?;

    alice_xmpp.say(ROOM, "jarvis: whoami")?;
    let who = alice_xmpp.expect(WAIT, ROOM, "alice: you are").await?;
    assert!(who.contains("(person alice)"), "{who}");

    alice_xmpp.say(ROOM, "jarvis: deploy demo")?;
    alice_xmpp
        .expect(WAIT, ROOM, "alice: deploy #1 of demo queued")
        .await?;
    alice_xmpp
        .expect(WAIT, ROOM, "waits for approval")
        .await
        .with_context(|| jarvis.log())?;

    // The same person, from her IRC account: refused, saying why.
    alice_irc.send("PRIVMSG #ops :jarvis: approve #1").await?;
    let refused = alice_irc.jarvis_says("alice: ").await?;
    assert!(
        refused.ends_with(
            ":alice: you (alice) asked for run #1 from xmpp:jabber:alice@localhost; another person must approve it"
        ),
        "{refused}"
    );

    // Another person may.
    let mut bob = Irc::connect(irc_port, "bob", ircd.get("IRC_BOB_PASSWORD")).await?;
    bob.send("JOIN #ops").await?;
    bob.wait(|l| l.contains(" 366 ")).await?;
    bob.send("PRIVMSG #ops :jarvis: approve #1").await?;
    let approved = bob.jarvis_says("bob: ").await?;
    assert!(
        approved.contains(":bob: approved demo deploy #1"),
        "{approved}"
    );
    alice_xmpp
        .expect(WAIT, ROOM, "demo deploy #1 succeeded in")
        .await
        .with_context(|| jarvis.log())?;

    let db = dir.path().join("data/jarvis.db");
    let sql = |q: &str| -> Result<String> {
        let out = Command::new("sqlite3")
            .arg("-readonly")
            .arg(&db)
            .arg(q)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(
        sql("SELECT approved_by FROM runs WHERE id = 1")?,
        "bob (irc:testnet:bob)"
    );
    assert_eq!(
        sql("SELECT identity || ' ' || person || ' ' || command FROM audit ORDER BY id")?,
        "xmpp:jabber:alice@localhost alice deploy demo\n\
         irc:testnet:alice alice approve #1\n\
         irc:testnet:bob bob approve #1"
    );
    Ok(())
}
