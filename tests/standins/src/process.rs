//! Runs a stand-in binary as a child process for a test: waits for its `LISTENING` line, hands
//! out its base URL, talks to its `/_standin/` controls, and kills it when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long a stand-in may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running stand-in process.
pub struct Standin {
    child: Child,
    url: String,
}

impl Standin {
    /// Starts the stand-in binary `name` of this crate (e.g. `linode-standin`), found beside
    /// the running test's own target folder.
    pub fn spawn_named(name: &str, args: &[&str]) -> Result<Standin> {
        Standin::spawn(&binary(name)?, args)
    }

    /// Starts the stand-in at `binary` with `args` (plus `--port 0`) and waits until it listens.
    pub fn spawn(binary: &Path, args: &[&str]) -> Result<Standin> {
        let mut child = Command::new(binary)
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("the stand-in has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the stand-in never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx.recv_timeout(START_LIMIT);
        let line = match first {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not announce LISTENING within {START_LIMIT:?}: {other:?}",
                    binary.display()
                );
            }
        };
        let Some(url) = line.strip_prefix("LISTENING ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} said {line:?} instead of LISTENING", binary.display());
        };
        Ok(Standin {
            url: url.trim().to_string(),
            child,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every API request the stand-in has received, oldest first.
    pub fn requests(&self) -> Result<Vec<Value>> {
        match self.control("GET", "requests", None)? {
            Value::Array(items) => Ok(items),
            other => bail!("the stand-in's request list is not a list: {other}"),
        }
    }

    /// Every instance-like thing the stand-in holds (for the Linode stand-in: instances).
    pub fn instances(&self) -> Result<Vec<Value>> {
        match self.control("GET", "instances", None)? {
            Value::Array(items) => Ok(items),
            other => bail!("the stand-in's instance list is not a list: {other}"),
        }
    }

    /// Makes the next `count` API requests answer `status` (and `Retry-After: retry_after`);
    /// with `after`, each request is still carried out and only its answer is lost.
    pub fn fail_next(
        &self,
        count: usize,
        status: u16,
        retry_after: Option<u64>,
        after: bool,
    ) -> Result<()> {
        self.fail_next_matching(count, status, retry_after, after, None, None)
    }

    /// Like [`Standin::fail_next`], only for requests with this method and path (e.g.
    /// `POST`, `/v4/linode/instances`).
    pub fn fail_next_matching(
        &self,
        count: usize,
        status: u16,
        retry_after: Option<u64>,
        after: bool,
        method: Option<&str>,
        path: Option<&str>,
    ) -> Result<()> {
        let body = serde_json::json!({
            "count": count, "status": status, "retry_after": retry_after, "after": after,
            "method": method, "path": path,
        });
        self.control("POST", "fail", Some(&body)).map(|_| ())
    }

    /// One request to the stand-in's test controls.
    fn control(&self, method: &str, what: &str, body: Option<&Value>) -> Result<Value> {
        let answer = self.request(method, &format!("/_standin/{what}"), &[], body)?;
        if answer.status != 200 {
            bail!("the stand-in answered {}: {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }

    /// One plain HTTP/1.1 request to the stand-in (`path` may carry a query), with a JSON
    /// body when given. A test client that needs no TLS and no async runtime.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer> {
        let authority = self
            .url
            .strip_prefix("http://")
            .context("the stand-in's URL is not http://")?;
        let mut stream = TcpStream::connect(authority)
            .with_context(|| format!("cannot reach the stand-in at {authority}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        write!(stream, "{head}\r\n{body}")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let (head, payload) = answer
            .split_once("\r\n\r\n")
            .context("the stand-in's answer has no header end")?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .context("the stand-in's answer has no status line")?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            bail!("the stand-in answered chunked, which this client does not read");
        }
        let body = if payload.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(payload).context("the stand-in's answer is not JSON")?
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// An answer to [`Standin::request`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of this crate's binary `name` beside the running test
/// (`target/PROFILE/deps/TEST` → `target/PROFILE/NAME`). Cargo builds a package's binaries
/// only when that package itself is under test, so a test in another package may find it
/// missing or older than its source: then it is built here with `cargo build -p
/// jarvis-standins --bin NAME` (cargo does not hold its build lock while tests run).
pub fn binary(name: &str) -> Result<PathBuf> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().context("cannot find the running test's path")?;
    let dir = exe.parent().context("the running test has no folder")?;
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .context("the test's deps folder has no parent")?
    } else {
        dir
    };
    let path = profile_dir.join(name);
    let Some(why) = staleness(&path, name)? else {
        return Ok(path);
    };
    eprintln!("building {name}: {why}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "jarvis-standins", "--bin", name]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("cannot run cargo to build the stand-in")?;
    if !status.success() || !path.is_file() {
        bail!("cargo build -p jarvis-standins --bin {name} failed ({status})");
    }
    Ok(path)
}

/// Why the binary at `path` cannot be used as it is, if it cannot.
fn staleness(path: &Path, name: &str) -> Result<Option<String>> {
    if !path.is_file() {
        return Ok(Some(format!("no {}", path.display())));
    }
    let built = modified(path)?;
    // The binary is relinked when the library or its own main changes; other binaries' files
    // say nothing about it.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = src.join("bin").join(format!("{name}.rs"));
    let mut source = newest_source(&src, &src.join("bin"))?;
    if main.is_file() {
        source = source.max(modified(&main)?);
    }
    Ok((source > built).then(|| format!("{} is older than its source", path.display())))
}

fn modified(path: &Path) -> Result<SystemTime> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot read the time of {}", path.display()))
}

fn newest_source(dir: &Path, skip: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let time = if path == skip {
            continue;
        } else if path.is_dir() {
            newest_source(&path, skip)?
        } else {
            modified(&path)?
        };
        newest = newest.max(time);
    }
    Ok(newest)
}
