//! A small client for Linode API v4: bearer token from the environment, JSON in and out, error
//! bodies turned into one line, 429 waited out (bounded), 5xx and network trouble reported as
//! worth a retry, and paginated lists read to the end.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::protocol::{self, Failure};

/// The API a token is for when `LINODE_API` names none.
const DEFAULT_API: &str = "https://api.linode.com/v4";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a 429 is waited out before the task gives up (and asks to be retried later).
const MAX_THROTTLED: u32 = 5;
/// The longest single wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The page size asked for when listing; the API allows 25 to 500.
const PAGE_SIZE: u32 = 100;
/// A bound on pages read, so a misbehaving server cannot keep the task listing forever.
const MAX_PAGES: u64 = 1000;

pub struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    /// The API named by `LINODE_API`, with the token granted as `LINODE_TOKEN`.
    pub fn from_env() -> Result<Api, Failure> {
        let token = std::env::var("LINODE_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                Failure::fatal("no LINODE_TOKEN: the configuration must grant it to linode")
            })?;
        let base = std::env::var("LINODE_API")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_API.to_string());
        let base = base.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Failure::fatal(format!(
                "LINODE_API must be an http(s) URL, not '{base}'"
            )));
        }
        // reqwest is built without a default TLS provider; ring is the one this project uses.
        // A second install in the same process fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("jarvis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::fatal(format!("cannot make an HTTP client: {e}")))?;
        Ok(Api {
            base,
            token: token.trim().to_string(),
            client,
        })
    }

    /// One request; answers the status and JSON body of any answer that is neither a 429
    /// (waited out), a 5xx, nor missing (both worth a retry of the task).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        filter: Option<&Value>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        let what = format!("{method} {path}");
        let mut throttled = 0;
        loop {
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .query(query);
            if let Some(filter) = filter {
                request = request.header("X-Filter", filter.to_string());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            protocol::log(&format!("linode: {what}"));
            let response = request
                .send()
                .await
                .map_err(|e| Failure::retry(format!("Linode API {what}: {}", transport(e))))?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS && throttled < MAX_THROTTLED {
                throttled += 1;
                let wait = retry_after(response.headers()).min(MAX_RETRY_AFTER);
                protocol::progress(&format!(
                    "Linode API rate limit on {what}: waiting {}s ({throttled}/{MAX_THROTTLED})",
                    wait.as_secs_f32()
                ));
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = response
                .text()
                .await
                .map_err(|e| Failure::retry(format!("Linode API {what}: {}", transport(e))))?;
            let body: Value = if text.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&text).unwrap_or(Value::Null)
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Failure::retry(format!(
                    "Linode API {what}: still rate limited after {MAX_THROTTLED} waits"
                )));
            }
            if status.is_server_error() {
                return Err(Failure::retry(format!(
                    "Linode API {what} failed ({status}): {}",
                    reasons(&body)
                )));
            }
            return Ok((status, body));
        }
    }

    /// A request whose answer must be a success; anything else fails the task with the API's
    /// reasons.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let (status, answer) = self.send(method.clone(), path, &[], None, body).await?;
        expect_success(&format!("{method} {path}"), status, answer)
    }

    /// Every item of a paginated list, page by page.
    pub async fn list_all(&self, path: &str, filter: &Value) -> Result<Vec<Value>, Failure> {
        let mut items = Vec::new();
        let mut page: u64 = 1;
        loop {
            let query = [
                ("page", page.to_string()),
                ("page_size", PAGE_SIZE.to_string()),
            ];
            let (status, answer) = self
                .send(Method::GET, path, &query, Some(filter), None)
                .await?;
            let answer = expect_success(&format!("GET {path}"), status, answer)?;
            let data = answer
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| Failure::fatal(format!("Linode API GET {path}: no data list")))?;
            items.extend(data.iter().cloned());
            let pages = answer.get("pages").and_then(Value::as_u64).unwrap_or(1);
            if page >= pages || page >= MAX_PAGES || data.is_empty() {
                return Ok(items);
            }
            page += 1;
        }
    }
}

/// The body of a successful answer, or a failure that carries the API's reasons.
pub fn expect_success(what: &str, status: StatusCode, body: Value) -> Result<Value, Failure> {
    if status.is_success() {
        return Ok(body);
    }
    let reasons = reasons(&body);
    Err(match status {
        StatusCode::UNAUTHORIZED => Failure::fatal(format!(
            "Linode API refused the token (LINODE_TOKEN) on {what}: {reasons}"
        )),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            Failure::retry(format!("Linode API {what} ({status}): {reasons}"))
        }
        _ => Failure::fatal(format!("Linode API refused {what} ({status}): {reasons}")),
    })
}

/// `{"errors": [{"field", "reason"}]}` as one line: `field: reason; reason`.
pub fn reasons(body: &Value) -> String {
    let errors = body.get("errors").and_then(Value::as_array);
    let text = match errors {
        Some(errors) if !errors.is_empty() => errors
            .iter()
            .map(|e| {
                let reason = e
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason");
                match e.get("field").and_then(Value::as_str) {
                    Some(field) => format!("{field}: {reason}"),
                    None => reason.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "no reason given".to_string(),
    };
    let mut line: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.chars().count() > 300 {
        line.push('…');
    }
    line
}

/// What went wrong on the wire, without the URL reqwest likes to add (it may carry a query).
fn transport(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    format!("{kind}: {detail}")
}

/// The wait a 429 asks for: `Retry-After` in seconds; a date or nothing means a few seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line() {
        let body = json!({"errors": [
            {"field": "region", "reason": "region is not valid"},
            {"reason": "Too\nmany"}
        ]});
        assert_eq!(reasons(&body), "region: region is not valid; Toomany");
        assert_eq!(reasons(&json!({})), "no reason given");
    }
}
