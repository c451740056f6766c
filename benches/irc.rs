//! Round trip through a real IRC server (InspIRCd + Anope from deploy/testbed): a logged-in
//! client says `jarvis: status` in #ops and waits for jarvis's `alice: …` reply, 200 times.
//! Prints `name value unit` lines; skips with a message when the server is not installed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

const REQUESTS: usize = 200;

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    /// Reads until a line contains `needle` (answering PINGs).
    fn wait(&mut self, needle: &str) -> std::io::Result<String> {
        self.wait_until(|l| l.contains(needle))
    }

    fn wait_until(&mut self, pred: impl Fn(&str) -> bool) -> std::io::Result<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("the server closed the connection"));
            }
            if let Some(rest) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {}", rest.trim_end()))?;
            }
            if pred(&line) {
                return Ok(line);
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let Some(server) = jarvis_testbed::Server::start("ircd")? else {
        println!("irc bench skipped: InspIRCd/Anope not installed");
        return Ok(());
    };
    let port: u16 = server.get("IRC_PORT").parse()?;
    let dir = tempfile::tempdir()?;
    // Pacing is jarvis's flood protection, not what is measured here: lift it.
    let config = format!(
        "name: jarvis\ndata_dir: {data}\nchat:\n  irc:\n    - name: bench\n      server: 127.0.0.1\n      port: {port}\n      channels: ['#ops']\n      flood: {{burst: 1000, per_second: 1000}}\n      sasl:\n        account: jarvis\n        password: ${{JARVIS_IRC_PASSWORD}}\nroles:\n  grants:\n    - {{irc_account: alice, network: bench, roles: [viewer]}}\n",
        data = dir.path().join("data").display(),
    );
    let config_path = dir.path().join("jarvis.yaml");
    std::fs::write(&config_path, config)?;
    let mut jarvis = Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("JARVIS_IRC_PASSWORD", server.get("IRC_JARVIS_PASSWORD"))
        .env("JARVIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let result = run(port, server.get("IRC_ALICE_PASSWORD"));
    let _ = jarvis.kill();
    let _ = jarvis.wait();
    let mut times = result?;
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!("irc_status_roundtrip_median {:.2} ms", ms(median));
    println!("irc_status_roundtrip_p99 {:.2} ms", ms(p99));
    println!(
        "irc_status_roundtrip_max {:.2} ms",
        ms(times[times.len() - 1])
    );
    Ok(())
}

fn run(port: u16, password: &str) -> anyhow::Result<Vec<Duration>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    let mut c = Client {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
    };
    c.send("CAP LS 302")?;
    c.send("NICK alice")?;
    c.send("USER alice 0 * :alice")?;
    c.wait(" LS ")?;
    c.send("CAP REQ :sasl")?;
    c.wait(" ACK ")?;
    c.send("AUTHENTICATE PLAIN")?;
    c.wait("AUTHENTICATE")?;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("alice\0alice\0{password}"));
    c.send(&format!("AUTHENTICATE {token}"))?;
    c.wait(" 903 ")?;
    c.send("CAP END")?;
    c.wait(" 001 ")?;
    c.send("JOIN #ops")?;
    // jarvis is there already (NAMES) or joins later.
    c.wait_until(|l| {
        (l.contains(" 353 ") && l.contains("jarvis"))
            || (l.starts_with(":jarvis!") && l.contains(" JOIN "))
    })?;
    // Warm up (first design load, database pages).
    for _ in 0..5 {
        c.send("PRIVMSG #ops :jarvis: status")?;
        c.wait("PRIVMSG #ops :alice: ")?;
    }
    let mut times = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let start = Instant::now();
        c.send("PRIVMSG #ops :jarvis: status")?;
        c.wait("PRIVMSG #ops :alice: ")?;
        times.push(start.elapsed());
    }
    c.send("QUIT")?;
    Ok(times)
}
