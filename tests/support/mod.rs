//! Test support: the real `jarvis` binary driven through `jarvis shell` on pipes, each test
//! in its own throwaway data folder with its own configuration.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

pub const JARVIS: &str = env!("CARGO_BIN_EXE_jarvis");

/// How long any single expectation may wait: generous, since CI has 2 cores.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The folder of the test workers in tests/workers.
pub fn test_workers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workers")
}

/// The operating-system user the tests run as: jarvis's console identity.
pub fn os_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .expect("the tests run as a user with a name")
}

/// `jarvis check-config --config PATH`: whether it passed, and what it printed.
pub fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(JARVIS)
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run jarvis check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A throwaway jarvis home: data folder, designs folder, configuration.
pub struct Home {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database the home's jarvis uses instead of SQLite, if any.
    pub postgres: Option<Postgres>,
}

/// A fresh database on the test PostgreSQL server.
#[derive(Clone)]
pub struct Postgres {
    pub url: String,
    psql: PathBuf,
}

impl Postgres {
    /// Makes a new, empty database owned by `jarvis` on the testbed server.
    pub fn fresh(server: &jarvis_testbed::Server) -> Postgres {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let psql = Path::new(server.get("POSTGRES_BIN")).join("psql");
        let port = server.get("POSTGRES_PORT");
        let out = Command::new(&psql)
            .args(["-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {name} OWNER jarvis"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE DATABASE: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Postgres {
            url: format!("postgres://jarvis@127.0.0.1:{port}/{name}"),
            psql,
        }
    }

    /// One SQL query's rows, columns joined by `|`, via psql.
    pub fn sql(&self, query: &str) -> Vec<String> {
        let out = Command::new(&self.psql)
            .args(["-tA", "-F|", "-d", &self.url, "-c", query])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Home {
    /// `config` is YAML without `data_dir` and `designs`, which are filled in.
    pub fn new(config: &str) -> Home {
        Home::on(config, None)
    }

    /// Like [`Home::new`], with the runs in `postgres` when given.
    pub fn on(config: &str, postgres: Option<Postgres>) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("jarvis-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("designs")).unwrap();
        let database = postgres
            .as_ref()
            .map(|p| format!("database_url: {}\n", p.url))
            .unwrap_or_default();
        let full = format!(
            "data_dir: {}\ndesigns:\n  folder: {}\n{database}{}",
            dir.path().join("data").display(),
            dir.path().join("designs").display(),
            config
        );
        std::fs::write(dir.path().join("jarvis.yaml"), full).unwrap();
        Home { dir, postgres }
    }

    pub fn design(&self, name: &str, yaml: &str) {
        std::fs::write(
            self.dir.path().join("designs").join(format!("{name}.yaml")),
            yaml,
        )
        .unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("jarvis.yaml")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data/jarvis.db")
    }

    pub fn shell(&self) -> Shell {
        Shell::start(&self.config())
    }

    /// One SQL query's rows, columns joined by `|`, via the sqlite3 command-line tool (or
    /// psql, when the home is on PostgreSQL).
    pub fn sql(&self, query: &str) -> Vec<String> {
        if let Some(pg) = &self.postgres {
            return pg.sql(query);
        }
        let out = Command::new("sqlite3")
            .arg("-readonly")
            .arg(self.db())
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
}

/// `jarvis shell` on pipes: what it prints arrives line by line.
pub struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    stderr: Receiver<String>,
}

impl Shell {
    pub fn start(config: &Path) -> Shell {
        let mut child = Command::new(JARVIS)
            .arg("shell")
            .arg("--config")
            .arg(config)
            .env("JARVIS_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jarvis starts");
        let stdout = child.stdout.take().unwrap();
        let errout = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(errout).lines() {
                let Ok(line) = line else { break };
                let _ = etx.send(line);
            }
        });
        Shell {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("input is still open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a printed line containing `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_where(|l| l.contains(needle), needle)
    }

    pub fn expect_where(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line with {what:?} within {PATIENCE:?}; saw:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr_text()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "jarvis ended before printing {what:?}; saw:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr_text()
                ),
            }
        }
    }

    /// Says `line` and returns the first line printed after it that contains `needle`.
    pub fn ask(&mut self, line: &str, needle: &str) -> String {
        self.say(line);
        self.expect(needle)
    }

    /// Everything jarvis wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        let mut text = String::new();
        while let Ok(l) = self.stderr.try_recv() {
            text.push_str(&l);
            text.push('\n');
        }
        text
    }

    /// Closes input and waits for the shell to end by itself; returns all it printed after.
    pub fn finish(mut self) -> Vec<String> {
        self.stdin.take();
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait().unwrap() {
                Some(status) => {
                    assert!(status.success(), "jarvis shell exited with {status}");
                    break;
                }
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!("jarvis shell did not end after its input ended");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }

    /// Sends SIGTERM, as a service manager's stop does.
    pub fn terminate(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// Waits for jarvis to end by itself (after a signal); returns how it ended and all it
    /// printed.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.stdin.take();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            match self.child.try_wait().unwrap() {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!(
                        "jarvis did not end within {PATIENCE:?}; stderr:\n{}",
                        self.stderr_text()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process is still alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `cond` holds (polling; for conditions outside jarvis's output).
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The processes in process group `pgid` that are still alive.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_string();
                    let mut fields = after.split_whitespace();
                    let state = fields.next()?.to_string();
                    let group: i32 = fields.nth(1)?.parse().ok()?;
                    Some(group == pgid && state != "Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// `jarvis run` with its HTTP server on a free loopback port (the configuration's
/// `http.listen: 127.0.0.1:0`), found from its "serving HTTP" log line.
pub struct Daemon {
    child: Child,
    pub base: String,
    stderr: Receiver<String>,
}

impl Daemon {
    /// Starts jarvis on `home`'s configuration with `env` added to its environment.
    pub fn start_with(home: &Home, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(&home.config(), env)
    }

    /// Starts jarvis on the configuration file `config` with `env` added to its environment.
    pub fn start_on(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(JARVIS);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("JARVIS_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("jarvis starts");
        let errout = child.stderr.take().expect("stderr is piped");
        let (tx, stderr) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(errout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("jarvis did not serve HTTP:\n{}", seen.join("\n")));
            if line.contains("serving HTTP")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            {
                break addr;
            }
            seen.push(line);
        };
        Daemon {
            child,
            base: format!("http://{addr}"),
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A blocking HTTP client with a generous time limit.
    pub fn client(&self) -> reqwest::blocking::Client {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        reqwest::blocking::Client::builder()
            .timeout(PATIENCE)
            .build()
            .expect("a reqwest client")
    }

    /// What jarvis logged since the last look.
    pub fn log(&self) -> String {
        let mut text = String::new();
        while let Ok(l) = self.stderr.try_recv() {
            text.push_str(&l);
            text.push('\n');
        }
        text
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jarvis token create PERSON`: the token, printed once on stdout.
pub fn token(home: &Home, person: &str) -> String {
    token_with(home, person, &[])
}

/// [`token`], with `env` set for a configuration that reads it.
pub fn token_with(home: &Home, person: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(JARVIS);
    cmd.args(["token", "create", person, "--config"])
        .arg(home.config());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("jarvis token runs");
    assert!(
        out.status.success(),
        "jarvis token create {person}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Python with boto3 (which moto brings along) against the testbed's moto, in `region`, with
/// moto's key: its stdout. A second client, so that the tests never judge jarvis's EC2 client
/// by itself.
pub fn boto3(moto: &jarvis_testbed::Server, region: &str, script: &str) -> String {
    let out = Command::new(moto.get("MOTO_PYTHON"))
        .args(["-c", script])
        .env("REGION", region)
        .env("URL", moto.get("MOTO_URL"))
        .env("AWS_ACCESS_KEY_ID", moto.get("MOTO_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", moto.get("MOTO_SECRET_ACCESS_KEY"))
        .output()
        .expect("moto's python runs");
    assert!(
        out.status.success(),
        "boto3 against moto: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
