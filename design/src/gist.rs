//! Designs from gists: `GET {api}/gists/ID` on the GitHub API, the design file picked from
//! the gist's files, and a truncated file fetched from its `raw_url`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use serde::Deserialize;

use crate::Design;
use crate::config::{DesignsConfig, GistConfig, HostPort};
use crate::error::{DesignError, printable};
use crate::http::{self, ClientSettings, host_of, read_limited, transport_error};
use crate::validate::{Refusal, parse_bytes};

/// The gist API client, built once.
#[derive(Debug, Clone)]
pub(crate) struct GistSource {
    client: Result<reqwest::Client, String>,
}

#[derive(Deserialize)]
struct GistAnswer {
    files: BTreeMap<String, Option<GistFile>>,
}

#[derive(Deserialize)]
struct GistFile {
    raw_url: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    truncated: bool,
    content: Option<String>,
}

#[derive(Deserialize)]
struct ApiMessage {
    message: Option<String>,
}

impl GistSource {
    pub(crate) fn new(config: &GistConfig) -> GistSource {
        let allowed = allowed_hosts(config);
        let client = http::client(ClientSettings {
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            max_redirects: config.max_redirects,
            allowed: Arc::new(move |url| allowed.iter().any(|h| h.matches(url))),
            addresses: None,
        });
        if let Err(e) = &client {
            tracing::error!(error = %e, "the gist client could not be built");
        }
        GistSource { client }
    }

    pub(crate) async fn load(
        &self,
        config: &DesignsConfig,
        reference: &str,
        id: &str,
    ) -> Result<Design, DesignError> {
        let gist = &config.gist;
        let client = self
            .client
            .as_ref()
            .map_err(|e| DesignError::Source(e.clone()))?;
        let url = gist.api.join(&format!("gists/{id}"));
        let api_host = host_of(gist.api.url());
        let mut request = client
            .get(&url)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &gist.token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&e, &api_host, gist.timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(
            response,
            gist.max_response_bytes,
            &format!("the gist API's answer for {id}"),
            gist.timeout,
        )
        .await?;
        if !status.is_success() {
            return Err(status_error(gist, id, status, &headers, &body));
        }
        let answer: GistAnswer = serde_json::from_slice(&body).map_err(|e| {
            tracing::warn!(id, error = %e, "the gist API answered something that is not a gist");
            DesignError::Source(format!(
                "the gist API at {} answered {} for gist {id} that is not a gist ({})",
                printable(&api_host),
                describe_content(&headers, &body),
                if body.first() == Some(&b'{') {
                    "no 'files'"
                } else {
                    "not JSON"
                }
            ))
        })?;
        let (name, file) = pick_file(id, answer.files)?;
        let origin = format!("gist {id} ({})", printable(&name));
        let bytes = match file.content {
            Some(content) if !file.truncated => content.into_bytes(),
            _ => fetch_raw(client, config, id, &name, &file).await?,
        };
        let mut design = parse_bytes(reference, &bytes, config.max_bytes, &config.limits)?;
        design.origin = origin;
        Ok(design)
    }
}

/// The API's own host, and the configured raw hosts.
fn allowed_hosts(config: &GistConfig) -> Vec<HostPort> {
    let api = config.api_host();
    std::iter::once(api)
        .chain(config.raw_hosts.iter().cloned())
        .collect()
}

/// The design file: the only `*.yaml`/`*.yml` file, or the only file.
fn pick_file(
    id: &str,
    files: BTreeMap<String, Option<GistFile>>,
) -> Result<(String, GistFile), DesignError> {
    let mut files: Vec<(String, GistFile)> = files
        .into_iter()
        .filter_map(|(name, file)| file.map(|f| (name, f)))
        .collect();
    let is_yaml = |name: &str| {
        let lower = name.to_ascii_lowercase();
        lower.ends_with(".yaml") || lower.ends_with(".yml")
    };
    let yaml: Vec<usize> = (0..files.len()).filter(|&i| is_yaml(&files[i].0)).collect();
    let chosen = match (yaml.as_slice(), files.len()) {
        ([only], _) => *only,
        ([], 1) => 0,
        ([], 0) => return Err(DesignError::NotFound(format!("gist {id} has no files"))),
        ([], n) => {
            return Err(DesignError::Invalid(format!(
                "design: gist {id} has {n} files and none ends in .yaml or .yml; name the design file NAME.yaml"
            )));
        }
        (many, _) => {
            let names: Vec<String> = many
                .iter()
                .take(5)
                .map(|&i| printable(&files[i].0))
                .collect();
            return Err(DesignError::Invalid(format!(
                "design: gist {id} has {} YAML files ({}); keep one design per gist",
                many.len(),
                names.join(", ")
            )));
        }
    };
    Ok(files.swap_remove(chosen))
}

/// Fetches a truncated file from its `raw_url`, which must be on the API's host or a
/// configured raw host, and https unless the API itself is plain http (a stand-in).
async fn fetch_raw(
    client: &reqwest::Client,
    config: &DesignsConfig,
    id: &str,
    name: &str,
    file: &GistFile,
) -> Result<Vec<u8>, DesignError> {
    let gist = &config.gist;
    let shown = printable(name);
    if let Some(size) = file.size
        && size > config.max_bytes as u64
    {
        return Err(Refusal::new(
            "design",
            format!(
                "gist {id} file {shown} is {size} bytes, over the limit of {} bytes",
                config.max_bytes
            ),
        )
        .into());
    }
    let raw = file
        .raw_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .ok_or_else(|| {
            DesignError::Source(format!(
                "gist {id} file {shown} is truncated and has no usable raw_url"
            ))
        })?;
    let api_host = gist.api_host();
    let scheme_ok = raw.scheme() == "https" || raw.scheme() == gist.api.url().scheme();
    let on_api_host = api_host.matches(&raw);
    if !scheme_ok || !(on_api_host || gist.raw_hosts.iter().any(|h| h.matches(&raw))) {
        return Err(DesignError::Source(format!(
            "gist {id} file {shown} points to {}, which is not an allowed raw host (designs.gist.raw_hosts)",
            http::shown_url(&raw)
        )));
    }
    let mut request = client.get(raw.clone());
    // The token is for the API; a raw host of another name does not get it.
    if on_api_host && let Some(token) = &gist.token {
        request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let host = host_of(&raw);
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(&e, &host, gist.timeout))?;
    let status = response.status();
    if !status.is_success() {
        return Err(DesignError::Source(format!(
            "fetching gist {id} file {shown} from {} answered HTTP {}",
            printable(&host),
            status_text(status)
        )));
    }
    read_limited(
        response,
        config.max_bytes,
        &format!("gist {id} file {shown}"),
        gist.timeout,
    )
    .await
}

fn status_text(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// The API's `message`, made printable, with the token scrubbed should a server echo it.
fn api_message(gist: &GistConfig, body: &[u8]) -> Option<String> {
    let message = serde_json::from_slice::<ApiMessage>(body).ok()?.message?;
    let message = match &gist.token {
        Some(token) if !token.expose().is_empty() => message.replace(token.expose(), "***"),
        _ => message,
    };
    Some(printable(&message))
}

fn status_error(
    gist: &GistConfig,
    id: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> DesignError {
    let message = api_message(gist, body);
    tracing::warn!(id, status = status.as_u16(), message = ?message, "the gist API refused");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let api_host = printable(&host_of(gist.api.url()));
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    if matches!(status.as_u16(), 403 | 429) && (exhausted || header("retry-after").is_some()) {
        let wait = header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .or_else(|| {
                let reset = header("x-ratelimit-reset")?.parse::<u64>().ok()?;
                let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
                Some(reset.saturating_sub(now))
            });
        let when = match wait {
            Some(secs) => format!("; it resets in {}", human_wait(secs)),
            None => String::new(),
        };
        let hint = if gist.token.is_none() {
            " (a token in designs.gist.token raises the limit)"
        } else {
            ""
        };
        return DesignError::Source(format!(
            "the GitHub API at {api_host} is rate limiting jarvis{when}{hint}"
        ));
    }
    let detail = message
        .map(|m| format!(": {m}"))
        .unwrap_or_else(|| format!(" ({})", describe_content(headers, body)));
    match status.as_u16() {
        404 => DesignError::NotFound(format!("there is no gist {id} on {api_host}")),
        401 => DesignError::Source(format!(
            "the GitHub API at {api_host} refused jarvis's token (HTTP 401{detail})"
        )),
        _ => DesignError::Source(format!(
            "the GitHub API at {api_host} answered HTTP {} for gist {id}{detail}",
            status_text(status)
        )),
    }
}

fn describe_content(headers: &HeaderMap, body: &[u8]) -> String {
    let kind = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type");
    format!("{} bytes of {}", body.len(), printable(kind))
}

fn human_wait(secs: u64) -> String {
    match secs {
        0..=90 => format!("{secs}s"),
        91..=5400 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h", secs.div_ceil(3600)),
    }
}
