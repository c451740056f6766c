//! What the gist and URL sources share: an HTTP client whose redirects stay on allowed hosts
//! and are bounded, bodies read under a byte limit while they stream in, and transport
//! failures turned into one line.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;

use reqwest::redirect;

use crate::address::{AddressPolicy, AddressRefused, CheckedResolver};
use crate::error::{DesignError, printable};

/// Decides whether a URL (a redirect target) may be fetched.
pub(crate) type HostCheck = Arc<dyn Fn(&url::Url) -> bool + Send + Sync>;

/// Why a redirect was not followed; found again in the error chain to explain it.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// Settings of one HTTP client.
pub(crate) struct ClientSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_redirects: usize,
    pub allowed: HostCheck,
    /// When set, names are resolved by a resolver that connects only to the addresses this
    /// policy lets through, a redirect to a literal address is checked too, and no proxy is
    /// used (a proxy would resolve the name itself).
    pub addresses: Option<Arc<AddressPolicy>>,
}

/// Builds a client. reqwest is built without a crypto provider (to keep aws-lc out of the
/// build), so ring is installed as the process default unless something already chose one.
pub(crate) fn client(settings: ClientSettings) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ClientSettings {
        connect_timeout,
        timeout,
        max_redirects,
        allowed,
        addresses,
    } = settings;
    let redirect_addresses = addresses.clone();
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max_redirects {
            let why = format!("more than {max_redirects} redirects");
            return attempt.error(RedirectRefused(why));
        }
        let from_https = attempt
            .previous()
            .last()
            .is_some_and(|u| u.scheme() == "https");
        if from_https && attempt.url().scheme() != "https" {
            let why = "a redirect from https:// to plain http://".to_string();
            return attempt.error(RedirectRefused(why));
        }
        if !allowed(attempt.url()) {
            let why = format!(
                "a redirect to {}, which is not an allowed host",
                printable(&host_of(attempt.url()))
            );
            return attempt.error(RedirectRefused(why));
        }
        if let Some(policy) = &redirect_addresses
            && let Some(ip) = literal_ip(attempt.url())
            && let Err(why) = policy.check_literal(ip)
        {
            let why = format!(
                "not following a redirect to {}: {why}",
                printable(&host_of(attempt.url()))
            );
            return attempt.error(AddressRefused(why));
        }
        attempt.follow()
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("jarvis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(policy);
    if let Some(policy) = addresses {
        builder = builder.no_proxy().dns_resolver(CheckedResolver { policy });
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {}", root_cause(&e)))
}

/// The address a URL names literally (`http://127.0.0.1/`, `http://[::1]/`), which no
/// resolver is asked about.
pub(crate) fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// `host` or `host:port` of a URL, for messages.
pub(crate) fn host_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A URL for messages and logs: scheme, host and path, never the query (it may hold tokens).
pub(crate) fn shown_url(url: &url::Url) -> String {
    printable(&format!(
        "{}://{}{}",
        url.scheme(),
        host_of(url),
        url.path()
    ))
}

/// Reads the body, refusing it as soon as it grows past `limit` bytes (or announces so).
/// `what` names the body for the message, e.g. "the design at HOST".
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
    timeout: Duration,
) -> Result<Vec<u8>, DesignError> {
    let too_big = |n: String| {
        DesignError::Invalid(format!(
            "design: {what} is {n} bytes, over the limit of {limit} bytes"
        ))
    };
    if let Some(length) = response.content_length()
        && length > limit as u64
    {
        return Err(too_big(length.to_string()));
    }
    let host = host_of(response.url());
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| transport_error(&e, &host, timeout))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(too_big(format!("more than {limit}")));
        }
        body.extend_from_slice(&chunk);
    }
}

/// One line for a failed exchange with `host`; the full chain goes to the log.
pub(crate) fn transport_error(
    error: &reqwest::Error,
    host: &str,
    timeout: Duration,
) -> DesignError {
    tracing::warn!(host, error = %printable(&chain(error)), "design fetch failed");
    let host = printable(host);
    if let Some(refused) = find_source::<RedirectRefused>(error) {
        return DesignError::Source(format!("{host} answered with {refused}; not followed"));
    }
    if error.is_timeout() {
        return DesignError::Source(format!(
            "{host} did not answer within {}s",
            timeout.as_secs_f64()
        ));
    }
    if error.is_connect() {
        return DesignError::Source(format!("cannot connect to {host}: {}", root_cause(error)));
    }
    DesignError::Source(format!("talking to {host} failed: {}", root_cause(error)))
}

pub(crate) fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The innermost cause (e.g. "Connection refused (os error 111)"), which says the most.
fn root_cause(error: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = error;
    while let Some(next) = last.source() {
        last = next;
    }
    printable(&last.to_string())
}

/// The causes of an error, without reqwest's own line (it holds the whole URL).
fn chain(error: &reqwest::Error) -> String {
    let mut text = String::from("request failed");
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
