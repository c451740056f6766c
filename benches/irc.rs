//! `cargo bench --bench irc`: the round trip of `status` through a real IRC server (InspIRCd +
//! Anope from tests/testbed), 200 times for each kind of sender jarvis identifies
//! differently:
//!
//! - `account`: alice, logged in with SASL, asks in #ops (`jarvis: status`); her account
//!   comes with the message (account-tag).
//! - `hostmask`: carol, not logged in and granted `viewer` by her hostmask, asks in #ops
//!   (`!status`) from a plain socket with the system's defaults (Nagle on, delayed ACKs),
//!   as a simple client or script would.
//! - `private`: alice asks in a private message, for which jarvis asks the server (WHOIS)
//!   who she is before answering.
//! - `floor_own_echo`: alice's line to her own nick, back through the server: the server's
//!   own share, of which a `status` has twice.
//!
//! Each client waits for what it needs (the server's answers, jarvis in the channel) rather
//! than for a fixed time; a wait that gets nothing for a minute fails with what it waited
//! for. Prints `name value unit` lines; skips with a message when the server is not
//! installed.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;

const REQUESTS: usize = 200;
const WARMUP: usize = 5;
/// The longest any single wait may take before the bench gives up with a reason.
const WAIT: Duration = Duration::from_secs(60);
const CHANNEL: &str = "#ops";

struct Client {
    nick: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The last lines read, for error messages.
    recent: Vec<String>,
}

impl Client {
    /// Registers NICK; with a password, logs in to the services account NICK with SASL
    /// PLAIN first. `nodelay` turns Nagle's algorithm off, as IRC clients built for speed do.
    fn connect(port: u16, nick: &str, password: Option<&str>, nodelay: bool) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("{nick}: cannot connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(nodelay)?;
        let mut c = Client {
            nick: nick.to_string(),
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            recent: Vec::new(),
        };
        if password.is_some() {
            c.send("CAP LS 302")?;
        }
        c.send(&format!("NICK {nick}"))?;
        c.send(&format!("USER {nick} 0 * :{nick}"))?;
        if let Some(password) = password {
            c.wait("the capability list", |l| command_of(l) == Some("CAP"))?;
            c.send("CAP REQ :sasl")?;
            c.wait("CAP ACK", |l| l.contains(" ACK "))?;
            c.send("AUTHENTICATE PLAIN")?;
            c.wait("AUTHENTICATE +", |l| command_of(l) == Some("AUTHENTICATE"))?;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{nick}\0{nick}\0{password}"));
            c.send(&format!("AUTHENTICATE {token}"))?;
            c.wait("SASL success (903)", |l| command_of(l) == Some("903"))?;
            c.send("CAP END")?;
        }
        c.wait("welcome (001)", |l| command_of(l) == Some("001"))?;
        Ok(c)
    }

    fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .with_context(|| format!("{}: cannot send", self.nick))
    }

    /// Reads until a line satisfies `pred` (answering PINGs), for at most [`WAIT`].
    fn wait(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.gave_up(what));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => bail!(
                    "{}: the server closed the connection while waiting for {what}; last lines:\n{}",
                    self.nick,
                    self.recent.join("")
                ),
                Ok(_) => {}
                // A socket read timeout shows as EAGAIN (WouldBlock) on Linux, TimedOut
                // elsewhere; an interrupted read is simply retried.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.gave_up(what));
                }
                Err(e) => return Err(anyhow!(e).context(format!("{}: reading", self.nick))),
            }
            if self.recent.len() >= 20 {
                self.recent.remove(0);
            }
            self.recent.push(line.clone());
            if let Some(rest) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {}", rest.trim_end()))?;
            }
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    fn gave_up(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "{}: nothing like {what} within {}s; last lines:\n{}",
            self.nick,
            WAIT.as_secs(),
            self.recent.join("")
        )
    }

    /// Joins CHANNEL and returns once `jarvis` is in it: named in the channel's NAMES list,
    /// or joining after it.
    fn join_with_jarvis(&mut self) -> Result<()> {
        self.send(&format!("JOIN {CHANNEL}"))?;
        let mut listed = false;
        let mut names_done = false;
        while !(listed && names_done) {
            let line = self.wait("jarvis in the channel", |l| {
                matches!(command_of(l), Some("353" | "366" | "JOIN"))
            })?;
            match command_of(&line) {
                Some("353") => listed |= names(&line).any(|n| n.eq_ignore_ascii_case("jarvis")),
                Some("366") => {
                    names_done = true;
                    if !listed {
                        // Not there yet: it joins later.
                        self.wait("jarvis joining", |l| {
                            command_of(l) == Some("JOIN") && l.starts_with(":jarvis!")
                        })?;
                        listed = true;
                    }
                }
                _ => {
                    if line.starts_with(":jarvis!") {
                        listed = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Asks `text` of `to` and times each answer from jarvis containing `answer`, after a
    /// warm-up.
    fn measure(&mut self, to: &str, text: &str, answer: &str) -> Result<Vec<Duration>> {
        self.measure_from(":jarvis!", to, text, answer)
    }

    /// As [`Client::measure`], with answers from whoever's prefix starts with `from`.
    fn measure_from(
        &mut self,
        from: &str,
        to: &str,
        text: &str,
        answer: &str,
    ) -> Result<Vec<Duration>> {
        let ask = format!("PRIVMSG {to} :{text}");
        let mut times = Vec::with_capacity(REQUESTS);
        for i in 0..WARMUP + REQUESTS {
            let start = Instant::now();
            self.send(&ask)?;
            self.wait(answer, |l| l.starts_with(from) && l.contains(answer))
                .with_context(|| format!("request {} of {}", i + 1, WARMUP + REQUESTS))?;
            if i >= WARMUP {
                times.push(start.elapsed());
            }
        }
        Ok(times)
    }
}

/// The command of a line with an optional prefix (and no tags: the clients ask for none).
fn command_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if first.starts_with(':') {
        words.next()
    } else {
        Some(first)
    }
}

/// The nicks of a 353 (NAMES) line, without their status prefixes.
fn names(line: &str) -> impl Iterator<Item = &str> {
    let list = line.trim_end().split_once(" :").map_or("", |(_, l)| l);
    list.split_whitespace()
        .map(|n| n.trim_start_matches(['@', '+', '%', '&', '~']))
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("irc bench failed: {e:#}");
        std::process::exit(1);
    }
}

fn bench() -> Result<()> {
    let Some(server) = jarvis_testbed::Server::start("ircd")? else {
        println!("irc bench skipped: InspIRCd/Anope not installed");
        return Ok(());
    };
    let port: u16 = server.get("IRC_PORT").parse()?;
    let dir = tempfile::tempdir()?;
    // Pacing is jarvis's flood protection, not what is measured here: lift it.
    let config = format!(
        "name: jarvis\ndata_dir: {data}\nchat:\n  irc:\n    - name: bench\n      server: 127.0.0.1\n      port: {port}\n      channels: ['{CHANNEL}']\n      flood: {{burst: 1000, per_second: 1000}}\n      sasl:\n        account: jarvis\n        password: ${{JARVIS_IRC_PASSWORD}}\n\
         roles:\n  grants:\n    - {{irc_account: alice, network: bench, roles: [viewer]}}\n    - {{irc_hostmask: 'carol!*@127.0.0.1', network: bench, roles: [viewer]}}\n",
        data = dir.path().join("data").display(),
    );
    let config_path = dir.path().join("jarvis.yaml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.path().join("jarvis.log"))?;
    let mut jarvis = Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))
        .env("JARVIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let result = run(port, server.get("IRC_ALICE_PASSWORD"));
    let _ = jarvis.kill();
    let _ = jarvis.wait();
    let figures = result.map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("jarvis.log")).unwrap_or_default();
        e.context(format!("jarvis's log:\n{log}"))
    })?;
    for (name, mut times) in figures {
        common::latencies(&name, &mut times);
    }
    Ok(())
}

fn run(port: u16, alice_password: &str) -> Result<Vec<(String, Vec<Duration>)>> {
    let mut alice = Client::connect(port, "alice", Some(alice_password), true)?;
    alice.join_with_jarvis()?;
    let mut carol = Client::connect(port, "carol", None, false)?;
    carol.join_with_jarvis()?;

    let account = alice.measure(CHANNEL, "jarvis: status", &format!("{CHANNEL} :alice: "))?;
    let hostmask = carol.measure(CHANNEL, "!status", &format!("{CHANNEL} :carol: "))?;
    let private = alice.measure("jarvis", "status", "PRIVMSG alice :")?;
    // The server's own share: a line to one's own nick comes back through the server once;
    // a `status` crosses it twice (the ask, the answer), so twice this is its floor.
    let echo = alice.measure_from(":alice!", "alice", "echo", "PRIVMSG alice :echo")?;
    for c in [&mut alice, &mut carol] {
        let _ = c.send("QUIT");
    }
    Ok(vec![
        ("irc_status_account".into(), account),
        ("irc_status_hostmask".into(), hostmask),
        ("irc_status_private".into(), private),
        ("irc_floor_own_echo".into(), echo),
    ])
}
