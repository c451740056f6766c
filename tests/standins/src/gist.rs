//! A stand-in for the part of the GitHub REST API that jarvis uses: `GET /gists/ID`, answered
//! the way GitHub answers it (`id`, `files` as a map of `{filename, type, language, raw_url,
//! size, truncated, content}`, rate-limit headers), from gists kept as folders on disk:
//! `FOLDER/ID/FILENAME`. A file over 1 MiB comes `truncated: true` with its first MiB as
//! `content`, and its whole text is served at its `raw_url` (`/raw/ID/FILENAME`), as
//! gist.githubusercontent.com does. An unknown gist is 404 `{"message": "Not Found", …}`.
//!
//! With a token configured, a request with a different bearer token is 401 "Bad
//! credentials"; a request without one is served, as GitHub serves public gists.
//!
//! Test controls, outside the API and never recorded:
//! - `GET /_standin/requests`: every API request so far (method, path, and `auth`: `none`,
//!   `valid` or `invalid` — never the token itself);
//! - `POST /_standin/rate-limited` `{"on": bool}`: rate-limit mode, in which every API request
//!   is answered 403 with `x-ratelimit-remaining: 0` and GitHub's message;
//! - `POST /_standin/fail` `{"count", "status", "retry_after", "html"}`: the next `count` API
//!   requests answer `status` — 403 and 429 as rate limits, others with a JSON message, or
//!   with an HTML page when `html` is true (a proxy's error page, not JSON).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// GitHub truncates file content in gist answers past this many bytes.
pub const TRUNCATE_OVER: usize = 1024 * 1024;

/// The requests an unauthenticated client may make per hour, as GitHub reports it.
const RATE_LIMIT: u64 = 60;

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The folder of gists: one subfolder per gist id, holding the gist's files.
    pub folder: PathBuf,
    /// The only bearer token accepted, when set.
    pub token: Option<String>,
    /// Start in rate-limit mode.
    pub rate_limited: bool,
    /// Content longer than this is truncated in the API answer.
    pub truncate_over: usize,
}

impl Settings {
    pub fn new(folder: impl Into<PathBuf>) -> Settings {
        Settings {
            folder: folder.into(),
            token: None,
            rate_limited: false,
            truncate_over: TRUNCATE_OVER,
        }
    }
}

/// The stand-in as an axum router.
pub fn router(settings: Settings) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Shared::new(settings))
}

/// Serves the stand-in on a free port of 127.0.0.1 inside the current tokio runtime, for tests
/// that would rather not run a process; answers its base URL (`http://127.0.0.1:PORT`).
pub async fn spawn(settings: Settings) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = router(settings);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("gist stand-in stopped: {e}");
        }
    });
    Ok(url)
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Standin>>);

impl Shared {
    fn new(settings: Settings) -> Shared {
        Shared(Arc::new(Mutex::new(Standin {
            rate_limited: settings.rate_limited,
            settings,
            requests: Vec::new(),
            failures: VecDeque::new(),
            used: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Standin> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Standin {
    settings: Settings,
    rate_limited: bool,
    requests: Vec<Value>,
    failures: VecDeque<Failure>,
    used: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Failure {
    status: u16,
    retry_after: Option<u64>,
    #[serde(default)]
    html: bool,
}

#[derive(Deserialize)]
struct FailRequest {
    #[serde(default = "one")]
    count: usize,
    #[serde(flatten)]
    failure: Failure,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
struct Switch {
    on: bool,
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if let Some(control) = path.strip_prefix("/_standin/") {
        return control_request(&shared, &method, control, &body);
    }
    let base = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => String::from("http://127.0.0.1"),
    };
    let mut standin = shared.lock();
    let auth = match (headers.get(header::AUTHORIZATION), &standin.settings.token) {
        (None, _) => "none",
        (Some(given), Some(token)) if given.as_bytes() == format!("Bearer {token}").as_bytes() => {
            "valid"
        }
        (Some(_), None) => "valid",
        (Some(_), Some(_)) => "invalid",
    };
    standin.requests.push(json!({
        "method": method.as_str(),
        "path": path,
        "accept": headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
        "auth": auth,
    }));
    standin.used += 1;
    if let Some(failure) = standin.failures.pop_front() {
        return failure_response(&failure);
    }
    if standin.rate_limited {
        return rate_limited(None);
    }
    if auth == "invalid" {
        return message(
            StatusCode::UNAUTHORIZED,
            "Bad credentials",
            "https://docs.github.com/rest",
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let folder = standin.settings.folder.clone();
    let truncate_over = standin.settings.truncate_over;
    let remaining = RATE_LIMIT.saturating_sub(standin.used);
    drop(standin);
    let mut response = match (method.as_str(), segments.as_slice()) {
        ("GET", ["gists", id]) => gist(&folder, &base, id, truncate_over),
        ("GET", ["raw", id, file]) => raw(&folder, id, file),
        _ => not_found("https://docs.github.com/rest"),
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset_time()));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    response
}

fn control_request(shared: &Shared, method: &Method, control: &str, body: &[u8]) -> Response {
    let mut standin = shared.lock();
    match (method.as_str(), control) {
        ("GET", "requests") => ok(Value::Array(standin.requests.clone())),
        ("POST", "rate-limited") => match serde_json::from_slice::<Switch>(body) {
            Ok(switch) => {
                standin.rate_limited = switch.on;
                ok(json!({}))
            }
            Err(e) => message(StatusCode::BAD_REQUEST, &format!("bad switch: {e}"), ""),
        },
        ("POST", "fail") => match serde_json::from_slice::<FailRequest>(body) {
            Ok(request) => {
                for _ in 0..request.count {
                    standin.failures.push_back(request.failure.clone());
                }
                ok(json!({}))
            }
            Err(e) => message(
                StatusCode::BAD_REQUEST,
                &format!("bad fail request: {e}"),
                "",
            ),
        },
        _ => not_found(""),
    }
}

/// A gist id or file name as GitHub would have it; anything else is simply not found, which
/// also keeps `..` and slashes away from the folder.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn gist(folder: &Path, base: &str, id: &str, truncate_over: usize) -> Response {
    let gist_not_found = || not_found("https://docs.github.com/rest/gists/gists#get-a-gist");
    if !safe_name(id) {
        return gist_not_found();
    }
    let Ok(entries) = std::fs::read_dir(folder.join(id)) else {
        return gist_not_found();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| safe_name(name))
        .collect();
    names.sort();
    let mut files = Map::new();
    for name in names {
        let Ok(text) = std::fs::read_to_string(folder.join(id).join(&name)) else {
            continue;
        };
        let size = text.len();
        let truncated = size > truncate_over;
        let mut cut = truncate_over.min(size);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let content = if truncated { &text[..cut] } else { &text[..] };
        let (kind, language) = file_type(&name);
        files.insert(
            name.clone(),
            json!({
                "filename": name,
                "type": kind,
                "language": language,
                "raw_url": format!("{base}/raw/{id}/{name}"),
                "size": size,
                "truncated": truncated,
                "content": content,
            }),
        );
    }
    ok(json!({
        "url": format!("{base}/gists/{id}"),
        "forks_url": format!("{base}/gists/{id}/forks"),
        "commits_url": format!("{base}/gists/{id}/commits"),
        "id": id,
        "node_id": format!("G_standin_{id}"),
        "git_pull_url": format!("{base}/{id}.git"),
        "git_push_url": format!("{base}/{id}.git"),
        "html_url": format!("https://gist.github.com/{id}"),
        "files": files,
        "public": true,
        "created_at": "2011-04-04T09:00:00Z",
        "updated_at": "2011-04-04T09:00:00Z",
        "description": "a jarvis design",
        "comments": 0,
        "user": null,
        "comments_url": format!("{base}/gists/{id}/comments"),
        "owner": {"login": "standin", "id": 1, "type": "User"},
        "truncated": false,
    }))
}

fn raw(folder: &Path, id: &str, file: &str) -> Response {
    if !safe_name(id) || !safe_name(file) {
        return (StatusCode::NOT_FOUND, "404: Not Found").into_response();
    }
    match std::fs::read(folder.join(id).join(file)) {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            bytes,
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "404: Not Found").into_response(),
    }
}

/// GitHub's `type` and `language` for a file name.
fn file_type(name: &str) -> (&'static str, Value) {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("yaml" | "yml") => ("application/x-yaml", json!("YAML")),
        Some("md") => ("text/markdown", json!("Markdown")),
        Some("json") => ("application/json", json!("JSON")),
        Some("txt") => ("text/plain", json!("Text")),
        _ => ("text/plain", Value::Null),
    }
}

fn reset_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600
}

fn rate_limited(retry_after: Option<u64>) -> Response {
    let mut response = message(
        StatusCode::FORBIDDEN,
        "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)",
        "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
    );
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset_time()));
    headers.insert("x-ratelimit-used", HeaderValue::from(RATE_LIMIT));
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn failure_response(failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if failure.html {
        let page = format!(
            "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
        );
        return (status, [(header::CONTENT_TYPE, "text/html")], page).into_response();
    }
    if matches!(status.as_u16(), 403 | 429) {
        let mut response = rate_limited(failure.retry_after);
        *response.status_mut() = status;
        return response;
    }
    let mut response = message(
        status,
        status.canonical_reason().unwrap_or("Error"),
        "https://docs.github.com/rest",
    );
    if let Some(seconds) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn message(status: StatusCode, text: &str, documentation_url: &str) -> Response {
    let mut body = BTreeMap::new();
    body.insert("message", json!(text));
    body.insert("documentation_url", json!(documentation_url));
    body.insert("status", json!(status.as_u16().to_string()));
    (status, axum::Json(body)).into_response()
}

fn not_found(documentation_url: &str) -> Response {
    message(StatusCode::NOT_FOUND, "Not Found", documentation_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_keep_to_the_folder() {
        assert!(safe_name("912450"));
        assert!(safe_name("loki.yaml"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "%2e%2e"] {
            assert!(!safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn yaml_files_are_typed_like_github() {
        assert_eq!(
            file_type("loki.yaml"),
            ("application/x-yaml", json!("YAML"))
        );
        assert_eq!(file_type("README.md").1, json!("Markdown"));
        assert_eq!(file_type("blob").1, Value::Null);
    }
}
