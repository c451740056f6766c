//! `alertmanager`: silences the host's alerts while it is redeployed (Alertmanager API v2).
//!
//! Tasks:
//! - `silence`: makes a silence matching the host, created by `jarvis`, with a comment naming
//!   the run, from now for the configured duration, and writes its id to
//!   `alertmanager.silence_id` (and its end to `alertmanager.ends_at`). Running it again in
//!   the same run finds the run's active silence and extends it instead of adding another.
//! - `unsilence`: expires the silence named by `alertmanager.silence_id` (or, when the
//!   clipboard has none, the active silences whose comment names this run). A silence that is
//!   gone or already expired is success, so it can run twice, or in `on_failure` stages after
//!   a failure before `silence` ran.
//!
//! Reads `instance.hostname` and `instance.fqdn`, and `jarvis.pipeline`/`jarvis.requester`
//! for the comment. The matcher is on the label `ALERTMANAGER_LABEL` (default `instance`):
//! with `ALERTMANAGER_VALUE=regex` (the default) it matches `HOST` or `FQDN` with an optional
//! `:PORT`, as Prometheus's `instance` label holds them; `hostname` or `fqdn` match that name
//! exactly (for a `host`-style label).
//!
//! Environment (granted to the module): `ALERTMANAGER_URL` (required; credentials in it are
//! never shown), `ALERTMANAGER_DURATION` (`90m`, `2h`, `1d`, `3600s`; default `2h`),
//! `ALERTMANAGER_LABEL`, `ALERTMANAGER_VALUE`, `ALERTMANAGER_TIMEOUT` (seconds, default 10).

use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::protocol::{self, Failure, Mapping, TaskResult};
use crate::{clock, host_facts};

const TASKS: &[&str] = &["silence", "unsilence"];

pub fn run(task: &str) -> ExitCode {
    match task {
        "silence" => protocol::run_task(silence),
        "unsilence" => protocol::run_task(unsilence),
        other => crate::unknown_task("alertmanager", other, TASKS),
    }
}

fn silence(mut clipboard: Mapping) -> TaskResult {
    let settings = Settings::from_env()?;
    let host = host_facts::hostname(&clipboard)?;
    let fqdn = host_facts::fqdn(&clipboard).ok();
    let matcher = settings.matcher(&host, fqdn.as_deref())?;
    let run_tag = run_tag();
    let comment = comment(&clipboard, &run_tag, &host);
    let now = clock::now_secs();
    let ends_at = clock::rfc3339(now + settings.duration.as_secs());
    protocol::progress(&format!(
        "silencing {host} at {} until {ends_at}",
        settings.label
    ));
    let api = Api::new(&settings)?;
    let (id, ends_at) = protocol::block_on(async {
        let earlier = api
            .silences()
            .await?
            .into_iter()
            .find(|s| s.is_active() && s.is_from(&run_tag) && s.matchers == [matcher.clone()]);
        let mut body = json!({
            "matchers": [matcher],
            "startsAt": clock::rfc3339(now),
            "endsAt": ends_at,
            "createdBy": "jarvis",
            "comment": comment,
        });
        if let Some(earlier) = &earlier {
            protocol::log(&format!("extending this run's silence {}", earlier.id));
            body["id"] = json!(earlier.id);
        }
        let created: Created = api
            .call(Method::POST, "/api/v2/silences", Some(body))
            .await?;
        Ok::<_, Failure>((created.silence_id, ends_at))
    })??;
    protocol::log(&format!("silence {id} is active until {ends_at}"));
    let section = protocol::section(&mut clipboard, "alertmanager");
    section.insert("silence_id".into(), json!(id));
    section.insert("ends_at".into(), json!(ends_at));
    Ok(Some(clipboard))
}

fn unsilence(mut clipboard: Mapping) -> TaskResult {
    let settings = Settings::from_env()?;
    let named = match protocol::get_path(&clipboard, "alertmanager.silence_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if is_silence_id(id) => Some(id.clone()),
        Some(_) => {
            return Err(Failure::fatal(
                "alertmanager.silence_id is not a silence id (a UUID)",
            ));
        }
    };
    let run_tag = run_tag();
    let api = Api::new(&settings)?;
    protocol::progress(&format!("lifting the silence at {}", settings.label));
    protocol::block_on(async {
        let ids: Vec<String> = match named {
            Some(id) => vec![id],
            None => {
                let mine: Vec<String> = api
                    .silences()
                    .await?
                    .into_iter()
                    .filter(|s| s.is_active() && s.is_from(&run_tag))
                    .map(|s| s.id)
                    .collect();
                if mine.is_empty() {
                    protocol::log(
                        "no silence id on the clipboard and no active silence of this run: nothing to lift",
                    );
                }
                mine
            }
        };
        for id in ids {
            api.expire(&id).await?;
        }
        Ok::<_, Failure>(())
    })??;
    let section = protocol::section(&mut clipboard, "alertmanager");
    section.remove("silence_id");
    section.remove("ends_at");
    Ok(Some(clipboard))
}

/// The text that marks a silence as this run's, in its comment.
fn run_tag() -> String {
    let id = std::env::var("JARVIS_RUN_ID").unwrap_or_default();
    format!("jarvis run #{}", id.trim().trim_start_matches('#'))
}

fn comment(clipboard: &Mapping, run_tag: &str, host: &str) -> String {
    let text = |path: &str| {
        protocol::get_path(clipboard, path)
            .and_then(Value::as_str)
            .map(host_facts::printable)
    };
    let mut comment = format!("{run_tag}: {host}");
    if let Some(pipeline) = text("jarvis.pipeline") {
        comment.push_str(&format!(", {pipeline} pipeline"));
    }
    if let Some(requester) = text("jarvis.requester") {
        comment.push_str(&format!(", asked by {requester}"));
    }
    comment
}

/// A silence id goes into a URL path, so only a UUID's characters may pass.
fn is_silence_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

struct Settings {
    url: reqwest::Url,
    /// The URL without credentials, for messages.
    label: String,
    duration: Duration,
    matcher_label: String,
    matcher_value: MatchBy,
    timeout: Duration,
}

enum MatchBy {
    Regex,
    Hostname,
    Fqdn,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Settings {
    fn from_env() -> Result<Self, Failure> {
        let text = env("ALERTMANAGER_URL").ok_or_else(|| {
            Failure::fatal("ALERTMANAGER_URL is not granted to the alertmanager module")
        })?;
        let url = reqwest::Url::parse(text.trim_end_matches('/'))
            .map_err(|_| Failure::fatal("ALERTMANAGER_URL is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::fatal(
                "ALERTMANAGER_URL must be http:// or https://",
            ));
        }
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let duration =
            parse_duration(&env("ALERTMANAGER_DURATION").unwrap_or_else(|| "2h".into()))?;
        let matcher_label = env("ALERTMANAGER_LABEL").unwrap_or_else(|| "instance".into());
        if !matcher_label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Failure::fatal(format!(
                "ALERTMANAGER_LABEL '{matcher_label}' is not a label name"
            )));
        }
        let matcher_value = match env("ALERTMANAGER_VALUE").as_deref() {
            None | Some("regex") => MatchBy::Regex,
            Some("hostname") => MatchBy::Hostname,
            Some("fqdn") => MatchBy::Fqdn,
            Some(other) => {
                return Err(Failure::fatal(format!(
                    "ALERTMANAGER_VALUE must be regex, hostname or fqdn, not '{other}'"
                )));
            }
        };
        let timeout = match env("ALERTMANAGER_TIMEOUT") {
            None => Duration::from_secs(10),
            Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                Failure::fatal(format!(
                    "ALERTMANAGER_TIMEOUT must be whole seconds, not '{t}'"
                ))
            })?),
        };
        Ok(Settings {
            label: shown.as_str().trim_end_matches('/').to_string(),
            url,
            duration,
            matcher_label,
            matcher_value,
            timeout,
        })
    }

    fn matcher(&self, host: &str, fqdn: Option<&str>) -> Result<Matcher, Failure> {
        let (value, is_regex) = match (&self.matcher_value, fqdn) {
            (MatchBy::Regex, Some(fqdn)) => (
                format!("({}|{})(:[0-9]+)?", regex_quote(host), regex_quote(fqdn)),
                true,
            ),
            (MatchBy::Regex, None) => (format!("{}(:[0-9]+)?", regex_quote(host)), true),
            (MatchBy::Hostname, _) => (host.to_string(), false),
            (MatchBy::Fqdn, Some(fqdn)) => (fqdn.to_string(), false),
            (MatchBy::Fqdn, None) => {
                return Err(Failure::fatal(
                    "ALERTMANAGER_VALUE=fqdn, but the clipboard has no instance.fqdn",
                ));
            }
        };
        Ok(Matcher {
            name: self.matcher_label.clone(),
            value,
            is_regex,
            is_equal: true,
        })
    }
}

/// Escapes what a host name may hold that a regular expression would read as syntax.
fn regex_quote(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let bad = || {
        Failure::fatal(format!(
            "ALERTMANAGER_DURATION '{text}' is not a duration like 90m, 2h or 1d"
        ))
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match number.checked_mul(unit_secs) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Matcher {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct Silence {
    id: String,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    comment: String,
    #[serde(default, rename = "createdBy")]
    created_by: String,
    #[serde(default)]
    matchers: Vec<Matcher>,
}

#[derive(Debug, Deserialize)]
struct Status {
    state: String,
}

impl Silence {
    fn is_active(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.state == "active" || s.state == "pending")
    }

    fn is_from(&self, run_tag: &str) -> bool {
        self.created_by == "jarvis"
            && (self.comment == run_tag || self.comment.starts_with(&format!("{run_tag}:")))
    }
}

#[derive(Debug, Deserialize)]
struct Created {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

struct Api<'a> {
    client: reqwest::Client,
    settings: &'a Settings,
}

impl<'a> Api<'a> {
    fn new(settings: &'a Settings) -> Result<Self, Failure> {
        // reqwest is built without a default crypto provider: use ring's (already installed
        // by an earlier call is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| Failure::fatal(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Api { client, settings })
    }

    async fn silences(&self) -> Result<Vec<Silence>, Failure> {
        self.call(Method::GET, "/api/v2/silences", None).await
    }

    /// Expires a silence; one that is gone or already expired is fine.
    async fn expire(&self, id: &str) -> Result<(), Failure> {
        let path = format!("/api/v2/silence/{id}");
        let response = self.send(Method::DELETE, &path, None).await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            protocol::log(&format!("silence {id} is expired"));
            return Ok(());
        }
        // Alertmanager 0.25 answers an unknown id with 500 "silence not found".
        if status == StatusCode::NOT_FOUND || body.contains("not found") {
            protocol::log(&format!("silence {id} does not exist (any more)"));
            return Ok(());
        }
        Err(self.http_failure(Method::DELETE, &path, status, &body))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, Failure> {
        let response = self.send(method.clone(), path, body).await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(self.http_failure(method, path, status, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            Failure::fatal(format!(
                "{method} {}{path} answered JSON jarvis cannot read: {e}",
                self.settings.label
            ))
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response, Failure> {
        let mut url = self.settings.url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.map_err(|e| self.transport(e))
    }

    fn transport(&self, error: reqwest::Error) -> Failure {
        let what = if error.is_timeout() {
            format!("no answer within {}s", self.settings.timeout.as_secs())
        } else if error.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        };
        // reqwest's text may hold the URL, and a URL may hold credentials: keep it in the log.
        let error = error.without_url();
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        protocol::log(&format!("alertmanager: {chain}"));
        Failure::retry(format!("Alertmanager at {}: {what}", self.settings.label))
    }

    fn http_failure(&self, method: Method, path: &str, status: StatusCode, body: &str) -> Failure {
        let detail = host_facts::printable(body.trim().trim_matches('"'));
        let text = format!(
            "Alertmanager {method} {}{path} answered {status}: {detail}",
            self.settings.label
        );
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Failure::retry(text)
        } else {
            Failure::fatal(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("2 weeks").is_err());
    }

    #[test]
    fn host_names_are_quoted_in_regexes() {
        assert_eq!(regex_quote("loki.example.com"), "loki\\.example\\.com");
    }

    #[test]
    fn silence_ids_are_checked_before_they_reach_a_path() {
        assert!(is_silence_id("86c0cba1-4bff-4bd5-b638-7ddd1eaf6bed"));
        assert!(!is_silence_id("../../api/v2/status"));
        assert!(!is_silence_id(""));
    }
}
