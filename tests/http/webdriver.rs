//! A small WebDriver client (the W3C protocol over chromedriver's HTTP API, with reqwest):
//! the dozen calls the browser test needs, and nothing else.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::support::PATIENCE;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where screenshots go: kept after the test as its artifacts.
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("the artifacts folder");
    dir
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// chromedriver, started on a free loopback port.
pub struct Driver {
    child: Child,
    base: String,
    browser: PathBuf,
    http: Client,
}

impl Driver {
    /// `None` (the test is skipped with a note) when Chromium or chromedriver is missing —
    /// except under CI, where a missing browser fails the test.
    pub fn start() -> Option<Driver> {
        let driver = find_program(&["chromedriver"]);
        let browser = find_program(&["chromium", "chromium-browser"]);
        let (Some(driver), Some(browser)) = (driver, browser) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the browser test needs Debian's chromium and chromium-driver (tests/testbed/install installs them)"
            );
            eprintln!(
                "SKIPPED: no chromium/chromedriver here; tests/testbed/install installs them"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        crate::install_tls_provider();
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a client");
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            browser,
            http,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = d
                .http
                .get(format!("{}/status", d.base))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    /// A new headless browser.
    pub fn session(&self) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"]
            }
        }}});
        let v = self
            .call("POST", "/session", Some(caps))
            .expect("a browser session");
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        Session { driver: self, id }
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req.send().map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"], v["value"]["message"]
            ))
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    pub fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    fn find(&self, css: &str) -> Result<String, String> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element id in {v}"))
    }

    /// The element, once it is there.
    fn wait_find(&self, css: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.find(css) {
                Ok(e) => return e,
                Err(e) if Instant::now() > deadline => panic!("no {css} on the page: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let e = self.wait_find(css);
            match self.cmd("POST", &format!("/element/{e}/click"), None) {
                Ok(_) => return,
                // The live part was replaced between the look and the click.
                Err(err) if Instant::now() > deadline => panic!("cannot click {css}: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_find(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|err| panic!("cannot type into {css}: {err}"));
    }

    /// Waits until the element's text contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.find(css)
                && let Ok(v) = self.cmd("GET", &format!("/element/{e}/text"), None)
            {
                last = v.as_str().unwrap_or_default().to_string();
                if last.contains(needle) {
                    return;
                }
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("return document.body ? document.body.innerText : '';")
                    .to_string();
                panic!("{css} never said {needle:?} (last: {last:?}); the page:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `script` (a function body) returns true, polling; panics with `what`
    /// and the page's text after `within`.
    pub fn wait_until(&self, script: &str, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(script) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("return document.body ? document.body.innerText : '';")
                    .to_string();
                panic!("{what} did not happen within {within:?}; the page:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Forgets every cookie, the HttpOnly session cookie included: a session that ended.
    pub fn delete_cookies(&self) {
        self.cmd("DELETE", "/cookie", None)
            .unwrap_or_else(|e| panic!("cannot delete the cookies: {e}"));
    }

    pub fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    pub fn screenshot(&self, path: &std::path::Path) {
        let v = self
            .cmd("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("no screenshot: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        std::fs::write(path, png).expect("the screenshot is written");
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", None);
    }
}
