//! jarvis on a real IRC network: InspIRCd 3 + Anope 2 (tests/testbed/servers/ircd.sh),
//! with the real `jarvis run` binary and test clients speaking raw IRC over TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use jarvis_testbed::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

mod support;

const DEADLINE: Duration = Duration::from_secs(60);

/// A chat client on the test server, logged in to an account or not.
struct Client {
    nick: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Every line received, in order.
    seen: Vec<String>,
}

impl Client {
    /// Connects and registers; with `account`, logs in with SASL PLAIN first.
    async fn connect(port: &str, nick: &str, account: Option<(&str, &str)>) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
            .await
            .expect("connect to the IRC server");
        let (r, w) = stream.into_split();
        let mut c = Client {
            nick: nick.into(),
            reader: BufReader::new(r),
            writer: w,
            seen: Vec::new(),
        };
        c.send("CAP LS 302").await;
        c.send(&format!("NICK {nick}")).await;
        c.send(&format!("USER {nick} 0 * :{nick}")).await;
        c.wait(|l| l.contains(" CAP * LS ")).await;
        match account {
            Some((user, pw)) => {
                c.send("CAP REQ :sasl account-tag").await;
                c.wait(|l| l.contains(" ACK ")).await;
                c.send("AUTHENTICATE PLAIN").await;
                c.wait(|l| l.starts_with("AUTHENTICATE")).await;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}\0{user}\0{pw}"));
                c.send(&format!("AUTHENTICATE {token}")).await;
                c.wait(|l| l.contains(" 903 ")).await;
            }
            None => {
                c.send("CAP REQ :account-tag").await;
                c.wait(|l| l.contains(" ACK ")).await;
            }
        }
        c.send("CAP END").await;
        c.wait(|l| l.contains(" 001 ")).await;
        c
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to the IRC server");
    }

    async fn say(&mut self, target: &str, text: &str) {
        self.send(&format!("PRIVMSG {target} :{text}")).await;
    }

    async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        self.wait(|l| l.contains(" 366 ")).await;
    }

    /// Reads lines (answering PINGs) until one satisfies `pred`; panics after the deadline.
    async fn wait(&mut self, mut pred: impl FnMut(&str) -> bool) -> String {
        self.wait_for(DEADLINE, &mut pred)
            .await
            .unwrap_or_else(|| panic!("{} waited in vain; saw:\n{}", self.nick, self.tail()))
    }

    async fn wait_for(
        &mut self,
        limit: Duration,
        pred: &mut impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout_at(deadline, self.reader.read_line(&mut line)).await;
            match read {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    panic!("{}: connection closed; saw:\n{}", self.nick, self.tail())
                }
                Ok(Ok(_)) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if let Some(rest) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {rest}")).await;
            }
            self.seen.push(line.clone());
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// The next PRIVMSG from jarvis whose text contains `needle`; returns its text.
    async fn reply_with(&mut self, needle: &str) -> String {
        let line = self
            .wait(|l| jarvis_text(l).is_some_and(|t| t.contains(needle)))
            .await;
        jarvis_text(&line).unwrap().to_string()
    }

    fn tail(&self) -> String {
        let start = self.seen.len().saturating_sub(30);
        self.seen[start..].join("\n")
    }
}

/// A line without its IRCv3 tags.
fn untagged(line: &str) -> &str {
    match line.strip_prefix('@') {
        Some(rest) => rest.split_once(' ').map(|(_, l)| l).unwrap_or(""),
        None => line,
    }
}

/// Whether `line` comes from `nick`.
fn from(line: &str, nick: &str) -> bool {
    untagged(line)
        .strip_prefix(':')
        .and_then(|l| l.strip_prefix(nick))
        .is_some_and(|l| l.starts_with('!'))
}

/// The text of a PRIVMSG sent by jarvis, tags and prefix stripped.
fn jarvis_text(line: &str) -> Option<&str> {
    let line = untagged(line);
    let rest = line.strip_prefix(":jarvis!")?;
    let (_, rest) = rest.split_once(" PRIVMSG ")?;
    let (_, text) = rest.split_once(" :")?;
    Some(text)
}

/// The real daemon, stopped when dropped.
struct Jarvis {
    child: Child,
    log: PathBuf,
}

impl Jarvis {
    fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Jarvis {
        let path = dir.join("jarvis.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("jarvis.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .env("JARVIS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Jarvis {
            child: cmd.spawn().expect("start jarvis"),
            log,
        }
    }

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

/// A folder with the demonstration design (fast steps) and a worker whose output carries
/// CR and IRC control codes and many log lines.
fn workspace(step_ms: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let designs = dir.path().join("designs");
    std::fs::create_dir_all(&designs).unwrap();
    std::fs::write(
        designs.join("demo.yaml"),
        format!(
            "instance:\n  hostname: demo\n  fqdn: demo.localdomain\n  provider: local\ndemo:\n  step_ms: {step_ms}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        designs.join("evil.yaml"),
        "instance:\n  hostname: evil\n  provider: chatty\n",
    )
    .unwrap();
    let workers = dir.path().join("workers");
    std::fs::create_dir_all(&workers).unwrap();
    let script = workers.join("chatty");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\n\
         printf 'notice: all fine\\rPRIVMSG #ops :pwned \\001ACTION dances\\001 \\002bold\\003 4red\\n' >&2\n\
         printf 'notice: %s END\\n' \"$(seq -s ' ' 1 400)\" >&2\n\
         i=1; while [ $i -le 45 ]; do echo \"chatter line $i\" >&2; i=$((i+1)); done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// jarvis's configuration: one IRC network `testnet` on `port` (plus `extra` networks).
fn config(dir: &Path, port: &str, extra: &str, flood: &str) -> String {
    format!(
        r###"name: jarvis
data_dir: {data}
designs:
  folder: {designs}
workers:
  folders: [{workers}]
pipelines:
  demo:
    command: deploy
    providers: [local]
    stages:
      - {{ task: "local:check", idempotent: true }}
      - {{ task: "local:step", idempotent: true, notify: true }}
      - {{ task: "local:step", idempotent: true }}
      - {{ task: "local:step", idempotent: true }}
  chatty:
    command: deploy
    providers: [chatty]
    stages:
      - {{ task: "chatty:talk", idempotent: true }}
chat:
  irc:
    - name: testnet
      server: 127.0.0.1
      port: {port}
      channels: ["#ops"]
      reconnect_min: 300ms
      reconnect_max: 2s
{flood}      sasl:
        account: jarvis
        password: ${{JARVIS_IRC_PASSWORD}}
{extra}roles:
  grants:
    - {{ irc_account: alice, network: testnet, roles: [admin] }}
    - {{ irc_account: bob, network: other, roles: [deployer] }}
"###,
        data = dir.join("data").display(),
        designs = dir.join("designs").display(),
        workers = dir.join("workers").display(),
    )
}

fn start_server() -> Option<Server> {
    Server::start("ircd").expect("start InspIRCd + Anope")
}

/// Waits until jarvis has joined #ops, as seen by `client` (already in #ops).
async fn wait_jarvis_joined(client: &mut Client, jarvis: &Jarvis) {
    let nick = client.nick.clone();
    let found = client
        .wait_for(DEADLINE, &mut |l: &str| {
            from(l, "jarvis") && l.contains(" JOIN ")
        })
        .await;
    assert!(
        found.is_some(),
        "{nick} never saw jarvis join; jarvis log:\n{}",
        jarvis.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_decide_roles_and_notifications_reach_the_channel() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    let jarvis = Jarvis::start(
        ws.path(),
        &config(ws.path(), &port, "", ""),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;

    alice.say("#ops", "jarvis: deploy demo").await;
    let queued = alice.reply_with("deploy #").await;
    assert!(
        queued.starts_with("alice: deploy #1 of demo queued"),
        "{queued}"
    );
    alice.say("#ops", "jarvis: status").await;
    let status = alice.reply_with("alice: ").await;
    assert!(!status.contains("needs"), "{status}");
    alice.reply_with("started").await;
    let done = alice.reply_with("succeeded in").await;
    assert!(done.contains("demo"), "{done}");

    // Bob is logged in, but his grant is for another network.
    let mut bob =
        Client::connect(&port, "bob", Some(("bob", server.get("IRC_BOB_PASSWORD")))).await;
    bob.join("#ops").await;
    bob.say("#ops", "jarvis: deploy demo").await;
    let refused = bob.reply_with("bob: ").await;
    assert!(refused.contains("needs the deployer role"), "{refused}");
    assert!(refused.contains("IRC account bob on testnet"), "{refused}");

    // Someone using the nick alice without her account is nobody.
    alice.send("QUIT :bye").await;
    bob.wait(|l| from(l, "alice") && l.contains(" QUIT ")).await;
    let mut fake = Client::connect(&port, "alice", None).await;
    fake.join("#ops").await;
    fake.say("#ops", "jarvis: deploy demo").await;
    let refused = fake.reply_with("alice: ").await;
    assert!(refused.contains("needs the deployer role"), "{refused}");
    assert!(refused.contains("not logged in"), "{refused}");
    fake.say("jarvis", "cancel demo").await;
    let refused = fake.reply_with("needs").await;
    assert!(refused.contains("deployer role"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_codes_from_workers_never_become_protocol_lines() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    let mut bob = Client::connect(&port, "bob", None).await;
    bob.join("#ops").await;
    let jarvis = Jarvis::start(
        ws.path(),
        &config(
            ws.path(),
            &port,
            "",
            "      flood: {burst: 50, per_second: 50}\n",
        ),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;
    bob.wait(|l| from(l, "jarvis") && l.contains(" JOIN "))
        .await;

    alice.say("#ops", "jarvis: deploy evil").await;
    alice.reply_with("succeeded in").await;
    // Bob, watching the channel, sees the notice folded into one message and then the end.
    bob.wait(|l| jarvis_text(l).is_some_and(|t| t.contains("succeeded in")))
        .await;
    let heard_from_jarvis: Vec<&String> = bob.seen.iter().filter(|l| from(l, "jarvis")).collect();
    let notice: Vec<&&String> = heard_from_jarvis
        .iter()
        .filter(|l| l.contains("pwned"))
        .collect();
    assert_eq!(notice.len(), 1, "{heard_from_jarvis:#?}");
    let text = jarvis_text(notice[0]).unwrap();
    assert!(
        text.contains("all fine"),
        "the injection must stay inside the notice: {text}"
    );
    for line in &heard_from_jarvis {
        assert!(untagged(line).len() + 2 <= 512, "too long: {line}");
        let text = jarvis_text(line).unwrap_or("");
        assert!(!text.starts_with("pwned"), "injected line: {line}");
        assert!(
            !text.chars().any(|c| c.is_control()),
            "control code sent raw: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_line_answer_arrives_in_order_without_flooding_off() {
    let Some(server) = start_server() else { return };
    // This port keeps InspIRCd's stock flood limits, without fake lag: a client that
    // floods is thrown off at once.
    let strict = server.get("IRC_STRICT_PORT").to_string();
    let ws = workspace(200);

    // The limit is real: 30 lines at once get a client thrown off.
    let mut flooder = Client::connect(&strict, "flooder", None).await;
    let burst: String = (0..30)
        .map(|i| format!("PRIVMSG flooder :line {i}\r\n"))
        .collect();
    flooder.writer.write_all(burst.as_bytes()).await.unwrap();
    let thrown = flooder
        .wait_for(DEADLINE, &mut |l: &str| l.starts_with("ERROR"))
        .await
        .expect("a flooding client is thrown off");
    assert!(thrown.contains("Excess Flood"), "{thrown}");

    let mut alice = Client::connect(
        &strict,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    // jarvis with its default pacing (no `flood:` setting).
    let jarvis = Jarvis::start(
        ws.path(),
        &config(ws.path(), &strict, "  reply_lines: 45\n", ""),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;
    alice.say("#ops", "jarvis: deploy evil").await;
    alice.reply_with("succeeded in").await;

    alice.say("jarvis", "log evil 40").await;
    let mut numbers = Vec::new();
    while numbers.len() < 40 {
        let line = alice
            .wait(|l| from(l, "jarvis") && (l.contains(" PRIVMSG alice :") || l.contains(" QUIT ")))
            .await;
        assert!(!line.contains(" QUIT "), "jarvis was thrown off: {line}");
        numbers.push(jarvis_text(&line).unwrap().to_string());
    }
    // The log's last 40 lines: chatter 6..45, in order.
    let expected: Vec<String> = (6..=45).map(|i| format!("chatter line {i}")).collect();
    for (got, want) in numbers.iter().zip(&expected) {
        assert!(
            got.ends_with(want.as_str()),
            "{got} (wanted {want})\n{numbers:#?}"
        );
    }
    // Still there: it answers.
    alice.say("jarvis", "whoami").await;
    alice.reply_with("IRC account alice").await;
    assert!(!jarvis.log().contains("disconnected"), "{}", jarvis.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_and_repeats_nothing() {
    let Some(mut server) = start_server() else {
        return;
    };
    let port = server.get("IRC_PORT").to_string();
    let alice_pw = server.get("IRC_ALICE_PASSWORD").to_string();
    let ws = workspace(4000);
    let mut alice = Client::connect(&port, "alice", Some(("alice", &alice_pw))).await;
    alice.join("#ops").await;
    let jarvis = Jarvis::start(
        ws.path(),
        &config(ws.path(), &port, "", ""),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;
    alice.say("#ops", "jarvis: deploy demo").await;
    alice.reply_with("stage 2/4").await;

    server.stop(None).unwrap();
    server.restart().unwrap();
    // restart() returns once services answer SASL logins again.
    let mut alice = Client::connect(&port, "alice", Some(("alice", &alice_pw))).await;
    alice.join("#ops").await;
    let done = alice.reply_with("succeeded in").await;
    assert!(done.contains("demo deploy #1"), "{done}");
    // Anything repeated would come before the answer to a later question.
    alice.say("#ops", "jarvis: whoami").await;
    alice.reply_with("alice: you are").await;
    let successes = alice
        .seen
        .iter()
        .filter(|l| jarvis_text(l).is_some_and(|t| t.contains("succeeded in")))
        .count();
    assert_eq!(successes, 1, "{:#?}", alice.seen);
    let log = jarvis.log();
    assert!(log.contains("reconnecting"), "{log}");
}

/// The text of a PRIVMSG sent by `nick`.
fn text_from<'a>(line: &'a str, nick: &str) -> Option<&'a str> {
    if !from(line, nick) {
        return None;
    }
    let (_, rest) = untagged(line).split_once(" PRIVMSG ")?;
    Some(rest.split_once(" :")?.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_networks_with_tls_external_and_whois_fallback() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    // Three more connections of the same jarvis, each its own network in jarvis's eyes: one
    // as on an old server (no IRCv3: accounts by WHOIS), one over TLS with SASL PLAIN, one
    // over TLS logged in by its client certificate (SASL EXTERNAL). tlsnet keeps the older
    // key name `tls_ca`, so that existing configurations are seen to keep working.
    let extra = format!(
        r###"    - name: oldnet
      server: 127.0.0.1
      port: {port}
      nick: jarvis-old
      ircv3: false
      channels: ["#legacy"]
    - name: tlsnet
      server: 127.0.0.1
      port: {tls}
      tls: true
      tls_ca: {ca}
      nick: jarvis-tls
      sasl:
        account: jarvis
        password: ${{JARVIS_IRC_PASSWORD}}
    - name: extnet
      server: localhost
      port: {tls}
      tls: true
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
      nick: jarvis-ext
      sasl:
        mechanism: external
"###,
        tls = server.get("IRC_TLS_PORT"),
        ca = server.get("IRC_TLS_CERT"),
        cert = server.get("IRC_JARVIS_CERT"),
        key = server.get("IRC_JARVIS_KEY"),
    );
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#legacy").await;
    // Someone holds the nick: jarvis takes another, and reclaims its own once it is free.
    let mut holder = Client::connect(&port, "jarvis-old", None).await;
    holder.join("#legacy").await;
    let jarvis = Jarvis::start(
        ws.path(),
        &config(ws.path(), &port, &extra, ""),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    let joined = alice
        .wait_for(DEADLINE, &mut |l: &str| {
            from(l, "jarvis-old_") && l.contains(" JOIN ")
        })
        .await;
    assert!(
        joined.is_some(),
        "jarvis-old_ never joined:\n{}",
        jarvis.log()
    );
    holder.send("QUIT :bye").await;
    alice
        .wait(|l| from(l, "jarvis-old_") && l.contains(" NICK ") && l.ends_with("jarvis-old"))
        .await;

    // Old server: the account comes from WHOIS, in a channel and privately.
    alice.say("#legacy", "!whoami").await;
    let line = alice
        .wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("alice: ")))
        .await;
    assert!(line.contains("IRC account alice on oldnet"), "{line}");
    alice.say("jarvis-old", "whoami").await;
    let line = alice
        .wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("you are")))
        .await;
    assert!(line.contains("IRC account alice on oldnet"), "{line}");

    // TLS, with a password and with a certificate: both logged in, both answer.
    for (nick, account) in [("jarvis-tls", "jarvis"), ("jarvis-ext", "jarvis")] {
        alice.send(&format!("WHOIS {nick}")).await;
        let who = alice
            .wait(|l| l.contains(" 330 ") || l.contains(" 318 "))
            .await;
        assert!(
            who.contains(&format!(" 330 alice {nick} {account} ")),
            "{nick} is not logged in: {who}\n{}",
            jarvis.log()
        );
        alice.say(nick, "whoami").await;
        let line = alice
            .wait(|l| text_from(l, nick).is_some_and(|t| t.contains("you are")))
            .await;
        assert!(line.contains("IRC account alice on"), "{line}");
    }

    // The same nick without the account, privately to the old-style connection: the WHOIS
    // is asked again, and the account is gone.
    alice.send("QUIT :bye").await;
    let mut fake = Client::connect(&port, "alice", None).await;
    fake.say("jarvis-old", "whoami").await;
    let line = fake
        .wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("you are")))
        .await;
    assert!(!line.contains("IRC account"), "{line}");
    fake.say("jarvis-old", "deploy demo").await;
    let line = fake
        .wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("needs")))
        .await;
    assert!(line.contains("deployer role"), "{line}");
}

/// One SQL query's first column, from jarvis's database, via the sqlite3 tool.
fn sql(dir: &Path, query: &str) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(dir.join("data/jarvis.db"))
        .arg(query)
        .output()
        .expect("sqlite3 is installed (tests/testbed/install)");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `cond` (a database query, say) until it holds; panics after the deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_refuse_jarvis_are_set_aside_and_hold_up_nothing() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    // #locked exists (+nt by default) and jarvis is not in it: InspIRCd answers 404.
    let mut locker = Client::connect(&port, "locker", None).await;
    locker.join("#locked").await;
    // Two notify targets that will never take a line: that channel, and a name that is no
    // IRC target at all.
    let extra = "  notify: [\"testnet #locked\", \"testnet bad,target\"]\n";
    let jarvis = Jarvis::start(
        ws.path(),
        &config(ws.path(), &port, extra, ""),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;

    let t0 = std::time::Instant::now();
    alice.say("#ops", "jarvis: deploy demo").await;
    alice.reply_with("deploy #1 of demo queued").await;
    alice.reply_with("started").await;
    alice.reply_with("stage 2/4 local:step started").await;
    alice.reply_with("succeeded in").await;
    // Four stages of 200 ms and a few paced lines: generous, but far below "never".
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // Every notification for the refusing targets is set aside with its reason; the
    // channel's got through.
    let dir = ws.path().to_path_buf();
    eventually("the outbox has nothing pending", || {
        sql(
            &dir,
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND undeliverable_at IS NULL",
        ) == ["0"]
    })
    .await;
    let locked = sql(
        &dir,
        "SELECT attempts || ' ' || last_error FROM outbox WHERE target = 'room:#locked' \
         AND undeliverable_at IS NOT NULL",
    );
    assert_eq!(locked.len(), 3, "{locked:?}");
    for row in &locked {
        assert!(row.starts_with("1 refused: 404 #locked"), "{row}");
    }
    let bad = sql(
        &dir,
        "SELECT last_error FROM outbox WHERE target = 'direct:bad,target' \
         AND undeliverable_at IS NOT NULL",
    );
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].contains("is not an IRC target"), "{bad:?}");
    assert_eq!(
        sql(
            &dir,
            "SELECT COUNT(*) FROM outbox WHERE target = 'room:#ops' AND sent_at IS NOT NULL"
        ),
        ["3"]
    );
    assert!(
        jarvis
            .log()
            .contains("notification set aside as undeliverable"),
        "{}",
        jarvis.log()
    );
    // An admin sees it in `status`.
    alice.say("#ops", "jarvis: status").await;
    let line = alice.reply_with("undeliverable").await;
    assert!(
        line.contains("6 notifications undeliverable; the last, to "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_commands_beyond_the_limit_gets_busy_answers() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    // One command at a time, and answers paced so that one stays in flight a while.
    let jarvis = Jarvis::start(
        ws.path(),
        &config(
            ws.path(),
            &port,
            "  commands_in_flight: 1\n",
            "      flood: { burst: 1, per_second: 2 }\n",
        ),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;

    const SENT: usize = 12;
    const LIMIT: usize = 1;
    let flood: String = (0..SENT).map(|_| "PRIVMSG jarvis :whoami\r\n").collect();
    alice.writer.write_all(flood.as_bytes()).await.unwrap();
    let (mut busy, mut answered) = (0, 0);
    while busy + answered < SENT {
        let line = alice
            .wait(|l| from(l, "jarvis") && l.contains(" PRIVMSG alice :"))
            .await;
        let text = jarvis_text(&line).unwrap();
        // Turned away for the network's limit or for alice's own share of it.
        if text.starts_with("busy: 1 commands are being handled; try again in a moment")
            || text.starts_with("busy: you have ")
        {
            busy += 1;
        } else {
            assert!(text.contains("IRC account alice"), "{text}");
            answered += 1;
        }
    }
    // N + k commands: at most k busy answers, and every accepted one answered.
    let k = SENT - LIMIT;
    assert!(busy <= k, "busy {busy}, answered {answered}");
    assert!(busy >= 1, "busy {busy}, answered {answered}");
    // Nothing more comes: each command got one answer.
    alice.say("jarvis", "whoami").await;
    let next = alice
        .wait(|l| from(l, "jarvis") && l.contains(" PRIVMSG alice :"))
        .await;
    assert!(
        jarvis_text(&next).unwrap().contains("IRC account alice"),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_unknown_senders_gets_paced_whois_and_jarvis_stays() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    // InspIRCd's stock flood limits: a burst of WHOIS would get jarvis thrown off.
    let strict = server.get("IRC_STRICT_PORT").to_string();
    let ws = workspace(200);
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    // As on an old server: every private message's sender is looked up by WHOIS.
    let jarvis = Jarvis::start(
        ws.path(),
        &config(
            ws.path(),
            &strict,
            // The first clone's three commands share one lookup; none is turned away.
            "  commands_in_flight: 32\n  commands_per_sender: 3\n",
            "      ircv3: false\n",
        ),
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;

    const CLONES: usize = 6;
    let mut clones = Vec::new();
    for i in 0..CLONES {
        clones.push(Client::connect(&port, &format!("clone{i}"), None).await);
    }
    // All at once; the first clone says it thrice, and its later messages share the
    // first one's lookup.
    let said = |i: usize| if i == 0 { 3 } else { 1 };
    for (i, c) in clones.iter_mut().enumerate() {
        for _ in 0..said(i) {
            c.say("jarvis", "whoami").await;
        }
    }
    for (i, c) in clones.iter_mut().enumerate() {
        for _ in 0..said(i) {
            let line = c
                .wait_for(DEADLINE, &mut |l: &str| {
                    from(l, "jarvis") && (l.contains(" PRIVMSG ") || l.contains(" QUIT "))
                })
                .await
                .unwrap_or_else(|| panic!("{} got no answer:\n{}", c.nick, jarvis.log()));
            assert!(!line.contains(" QUIT "), "jarvis was thrown off: {line}");
            let text = jarvis_text(&line).unwrap();
            assert!(
                text.starts_with("you are ") && !text.contains("IRC account"),
                "{text}"
            );
        }
    }
    // Still there, never thrown off: it answers.
    alice.say("jarvis", "whoami").await;
    alice.reply_with("IRC account alice").await;
    let log = jarvis.log();
    assert!(!log.contains("disconnected"), "{log}");
    assert!(!log.contains("Excess Flood"), "{log}");
}

/// Three `jarvis run` processes on one PostgreSQL, one IRC network: one process speaks on
/// it, the others stand by. The speaker is killed (`kill -9`) during a run: another process
/// takes the network over, and every notification of the run reaches the channel exactly
/// once, as alice (a real client on the testbed InspIRCd) reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speaker_killed_mid_run_is_replaced_and_no_notification_is_lost_or_doubled() {
    let Some(server) = start_server() else { return };
    let Some(postgres) = Server::start("postgres").unwrap() else {
        return;
    };
    let pg = support::Postgres::fresh(&postgres);
    let port = server.get("IRC_PORT").to_string();
    let alice_pw = server.get("IRC_ALICE_PASSWORD").to_string();
    let ws = workspace(1500);
    let mut alice = Client::connect(&port, "alice", Some(("alice", &alice_pw))).await;
    alice.join("#ops").await;
    let base = config(ws.path(), &port, "", "");
    let env = [("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))];
    let node = |name: &str| {
        let dir = ws.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = base.replacen(
            &format!("data_dir: {}", ws.path().join("data").display()),
            &format!(
                "data_dir: {}\ndatabase_url: {}\ncluster:\n  node: {name}\n  lease: 2s",
                dir.join("data").display(),
                pg.url
            ),
            1,
        );
        Jarvis::start(&dir, &config, &env)
    };
    let first = node("n1");
    wait_jarvis_joined(&mut alice, &first).await;
    let second = node("n2");
    let third = node("n3");
    for standby in [&second, &third] {
        eventually("a stand-by process", || {
            standby.log().contains("standing by")
        })
        .await;
    }

    alice.say("#ops", "jarvis: deploy demo").await;
    alice.reply_with("deploy #1 of demo queued").await;
    alice.reply_with("stage 2/4").await;
    // `status` says which process runs it.
    alice.say("#ops", "jarvis: status demo").await;
    let status = alice.reply_with("alice: demo deploy #1").await;
    assert!(
        status.contains("running") && (status.contains(" on n")),
        "{status}"
    );
    // Mid-stage, with no notification on its way: a kill between a line's write and the
    // commit that marks it sent would send that one line again (never lose it) — the one
    // window at-least-once delivery keeps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = first;
    let _ = first.child.kill();
    let _ = first.child.wait();
    let killed = std::time::Instant::now();
    let back = alice
        .wait_for(DEADLINE, &mut |l: &str| {
            from(l, "jarvis") && l.contains(" JOIN ")
        })
        .await;
    assert!(
        back.is_some(),
        "no process took the network over; logs:\n{}\n{}",
        second.log(),
        third.log()
    );
    eprintln!(
        "the network was taken over {} ms after its speaker was killed",
        killed.elapsed().as_millis()
    );
    let done = alice.reply_with("succeeded in").await;
    assert!(done.contains("demo deploy #1"), "{done}");
    // Anything repeated would come before the answer to a later question.
    alice.say("#ops", "jarvis: whoami").await;
    alice.reply_with("alice: you are").await;

    // What alice read of the run is what the outbox holds for #ops, each line once.
    let mut read: Vec<String> = alice
        .seen
        .iter()
        .filter_map(|l| jarvis_text(l))
        // Answers to alice's commands are not notifications.
        .filter(|t| {
            t.contains("deploy #1")
                && !t.contains("of demo queued")
                && !t.starts_with("alice: demo deploy #1:")
        })
        .map(str::to_string)
        .collect();
    let mut sent: Vec<String> = pg
        .sql("SELECT text FROM outbox WHERE network = 'testnet' AND target = 'room:#ops' ORDER BY id")
        .into_iter()
        .filter(|t| t.contains("deploy #1"))
        .collect();
    read.sort();
    sent.sort();
    assert_eq!(read, sent, "alice read:\n{:#?}", alice.seen);
    assert!(sent.iter().any(|t| t.contains("succeeded in")), "{sent:#?}");
    let unsent =
        pg.sql("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND undeliverable_at IS NULL");
    assert_eq!(unsent, vec!["0".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_viewers_long_logs_do_not_hold_up_another_persons_answer() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    alice.join("#ops").await;
    let mut bob =
        Client::connect(&port, "bob", Some(("bob", server.get("IRC_BOB_PASSWORD")))).await;
    bob.join("#ops").await;
    // bob may read logs here; answers are paced so that his take a while to send.
    let cfg = config(
        ws.path(),
        &port,
        "",
        "      flood: { burst: 1, per_second: 2 }\n",
    )
    .replace(
        "roles:\n  grants:\n",
        "roles:\n  grants:\n    - { irc_account: bob, network: testnet, roles: [viewer] }\n",
    );
    let jarvis = Jarvis::start(
        ws.path(),
        &cfg,
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    wait_jarvis_joined(&mut alice, &jarvis).await;
    alice.say("#ops", "jarvis: deploy evil").await;
    alice.reply_with("succeeded in").await;

    // Eight long logs at once from bob.
    const SENT: usize = 8;
    let flood: String = (0..SENT)
        .map(|_| "PRIVMSG jarvis :log #1 200\r\n")
        .collect();
    bob.writer.write_all(flood.as_bytes()).await.unwrap();
    let private = |l: &str| from(l, "jarvis") && l.contains(" PRIVMSG bob :");
    let first = bob.wait(private).await;

    // Once bob's answers are on their way, alice asks in the channel.
    alice.say("#ops", "jarvis: status").await;
    let answer = alice
        .wait(|l| from(l, "jarvis") && l.contains(" PRIVMSG #ops :alice: "))
        .await;
    let answer = jarvis_text(&answer).unwrap().to_string();
    // An answer, not "busy": bob's eight commands did not take every place.
    assert!(!answer.contains("busy"), "{answer}");

    // bob sees everything jarvis sends in the order it was sent: alice's answer in the
    // channel, and his own lines before and after it.
    let (mut log_lines, mut cut, mut busy, mut after) = (0, 0, 0, None);
    let count = |text: &str, log_lines: &mut usize, cut: &mut usize, busy: &mut usize| {
        if text.starts_with("busy: you have ") {
            *busy += 1;
        } else if text.contains("more lines not sent: say 'log #1 N' with a smaller N") {
            *cut += 1;
        } else {
            assert!(
                text.contains("chatter line") || text.contains("notice"),
                "{text}"
            );
            *log_lines += 1;
        }
    };
    count(
        jarvis_text(&first).unwrap(),
        &mut log_lines,
        &mut cut,
        &mut busy,
    );
    while busy + cut < SENT {
        let line = bob
            .wait(|l| private(l) || (from(l, "jarvis") && l.contains(" PRIVMSG #ops :alice: ")))
            .await;
        let text = jarvis_text(&line).unwrap();
        if line.contains(" PRIVMSG #ops :") {
            if text == answer && after.is_none() {
                after = Some(log_lines);
            }
            continue;
        }
        count(text, &mut log_lines, &mut cut, &mut busy);
    }
    let seen_before = after.expect("bob saw alice's answer in the channel");
    // alice's answer went out while bob's lines were still being sent.
    assert!(
        seen_before < log_lines,
        "alice waited for all of bob's {log_lines} lines"
    );
    // Each of bob's answers was either cut to the limit with a pointer, or turned away
    // because he already had two being handled.
    assert!(cut >= 1 && busy >= 1, "cut {cut}, busy {busy}");
    // None carried the whole log: each stopped at the limit (20 lines with the pointer).
    assert!(
        log_lines <= cut * 19,
        "{log_lines} log lines in {cut} answers"
    );
}

/// As on a server without account-tag, where a WHOIS decides who sent a message: a nick that
/// passes to someone else before the answer does not make them the sender, and a message
/// held for a nick that then changes nick is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nick_that_changes_hands_before_the_whois_answer_is_credited_to_no_one() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(200);
    // A slow bucket: once it is spent, a WHOIS (two tokens) waits four seconds — time for a
    // nick to change hands first, which the test does in milliseconds.
    let extra = format!(
        "    - name: oldnet\n      server: 127.0.0.1\n      port: {port}\n      nick: jarvis-old\n      ircv3: false\n      channels: [\"#legacy\"]\n      flood: {{ burst: 2, per_second: 0.5 }}\n"
    );
    let config = config(ws.path(), &port, &extra, "").replace(
        "    - { irc_account: bob,",
        "    - { irc_account: alice, network: oldnet, roles: [admin] }\n    - { irc_account: bob,",
    );
    // watcher and carol share #legacy with jarvis; alice and mallory share no channel with
    // it, so it sees none of their NICKs: only the WHOIS answer can tell them apart.
    let mut watcher = Client::connect(&port, "watcher", None).await;
    watcher.join("#legacy").await;
    let mut carol = Client::connect(&port, "carol", None).await;
    carol.join("#legacy").await;
    let mut mallory = Client::connect(&port, "mallory", None).await;
    let mut alice = Client::connect(
        &port,
        "alice",
        Some(("alice", server.get("IRC_ALICE_PASSWORD"))),
    )
    .await;
    let jarvis = Jarvis::start(
        ws.path(),
        &config,
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    let joined = watcher
        .wait_for(DEADLINE, &mut |l: &str| {
            from(l, "jarvis-old") && l.contains(" JOIN ")
        })
        .await;
    assert!(
        joined.is_some(),
        "jarvis-old never joined:\n{}",
        jarvis.log()
    );
    spend_bucket(&mut watcher).await;

    // (a) mallory asks for a deploy, gives the nick up, and alice takes it and speaks.
    mallory.say("jarvis-old", "deploy demo").await;
    mallory.send("NICK mallory2").await;
    mallory
        .wait(|l| from(l, "mallory") && l.contains(" NICK "))
        .await;
    alice.send("NICK mallory").await;
    alice
        .wait(|l| from(l, "alice") && l.contains(" NICK "))
        .await;
    alice.nick = "mallory".into();
    alice.say("jarvis-old", "whoami").await;
    let line = alice
        .wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("you are")))
        .await;
    assert!(line.contains("IRC account alice on oldnet"), "{line}");
    // mallory's message was not run as alice's, nor answered to her.
    let told: Vec<&str> = alice
        .seen
        .iter()
        .filter_map(|l| text_from(l, "jarvis-old"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    let dir = ws.path().to_path_buf();
    assert_eq!(sql(&dir, "SELECT COUNT(*) FROM runs"), ["0"]);
    assert!(
        jarvis.log().contains("the answer is for someone else"),
        "{}",
        jarvis.log()
    );

    assert!(!jarvis.log().contains("the nick may now be someone else"));

    // (b) carol speaks in the channel and changes nick before the WHOIS: jarvis sees the
    // NICK and drops what it held; carol2's own message is answered, carol's never.
    spend_bucket(&mut watcher).await;
    carol.say("#legacy", "!whoami").await;
    carol.send("NICK carol2").await;
    carol
        .wait(|l| from(l, "carol") && l.contains(" NICK "))
        .await;
    eventually("the held message is dropped", || {
        jarvis.log().contains("the nick may now be someone else")
    })
    .await;
    carol.say("#legacy", "!whoami").await;
    let line = carol
        .wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("you are")))
        .await;
    assert!(line.contains("carol2: you are"), "{line}");
    let told: Vec<&str> = carol
        .seen
        .iter()
        .filter_map(|l| text_from(l, "jarvis-old"))
        .filter(|t| t.contains("you are"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
}

/// Spends oldnet's slow bucket (a WHOIS and an answer), so that the next WHOIS waits.
async fn spend_bucket(c: &mut Client) {
    c.say("jarvis-old", "whoami").await;
    c.wait(|l| text_from(l, "jarvis-old").is_some_and(|t| t.contains("you are")))
        .await;
}

/// A person granted by hostmask cannot approve their own run by taking another nick — nor
/// anyone's: a hostmask can be anyone's, so it never approves (SPEC 7), whatever its nick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostmask_never_approves_not_even_under_another_nick() {
    let Some(server) = start_server() else { return };
    let port = server.get("IRC_PORT").to_string();
    let ws = workspace(50);
    let gated = "environments:\n  order:\n    - { name: staging }\n    - { name: production, approval: true }\n";
    let config = config(ws.path(), &port, gated, "").replace(
        "  grants:\n",
        "  grants:\n    - { irc_hostmask: \"bob*!*@*\", network: testnet, roles: [deployer, approver] }\n",
    );
    let mut bob = Client::connect(&port, "bob", None).await;
    bob.join("#ops").await;
    let jarvis = Jarvis::start(
        ws.path(),
        &config,
        &[("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))],
    );
    bob.wait(|l| from(l, "jarvis") && l.contains(" JOIN "))
        .await;

    bob.say("#ops", "jarvis: deploy demo to production").await;
    let queued = bob.reply_with("deploy #1 of demo queued").await;
    assert!(queued.starts_with("bob: "), "{queued}");
    bob.reply_with("waits for approval").await;

    bob.say("#ops", "jarvis: approve #1").await;
    let refused = bob.reply_with("approving needs").await;
    assert!(
        refused.contains("a hostmask (bob!") && refused.contains("is not one"),
        "{refused}\n{}",
        jarvis.log()
    );
    // Under another nick, the same hostmask grant, the same answer.
    bob.send("NICK bob_").await;
    bob.wait(|l| l.contains(" NICK ") && l.contains("bob_"))
        .await;
    bob.say("#ops", "jarvis: approve #1").await;
    let refused = bob.reply_with("approving needs").await;
    assert!(refused.contains("a hostmask (bob_!"), "{refused}");
    let state = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(ws.path().join("data/jarvis.db"))
        .arg("SELECT state FROM runs WHERE id = 1")
        .output()
        .expect("sqlite3 runs");
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "waiting_approval"
    );
}
