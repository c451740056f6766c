//! The `http:` section: where the HTTP server listens and how it is reached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jarvis_design::AddressRange;
use serde::Deserialize;

/// The HTTP server: the JSON API under `/api/v1`, the web page, live events, `/metrics` and
/// `/healthz`. Without this section `jarvis run` serves no HTTP.
///
/// ```yaml
/// http:
///   listen: 127.0.0.1:8080
///   public_url: https://jarvis.example.com/
///   trusted_proxies: [127.0.0.1]     # a reverse proxy in front, terminating TLS
/// ```
///
/// Plain HTTP (no `tls`) is allowed on a loopback address, or behind the proxies listed in
/// `trusted_proxies`; anywhere else tokens and session cookies would cross a network in clear.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ADDRESS:PORT` to listen on; port 0 takes a free port (the log says which).
    pub listen: SocketAddr,
    /// Serve HTTPS with a certificate and key from PEM files.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Proxies whose `X-Forwarded-For` is believed for the client's address (what the audit
    /// log records as the channel).
    #[serde(default)]
    pub trusted_proxies: Vec<AddressRange>,
    /// The address people reach jarvis at, for links; default `http(s)://LISTEN/`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Whether anyone may read runs (the page and the API's reads) without logging in, as a
    /// viewer. Default false: reading needs a token or a session too.
    #[serde(default)]
    pub anonymous_read: bool,
    /// How long a web session lasts after logging in. Default 12h.
    #[serde(
        default = "default_session",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub session: Duration,
    /// A bearer token that `/metrics` requires (`Authorization: Bearer TOKEN`), written as
    /// `${VARIABLE}`; Prometheus sends it from `authorization: {credentials_file: …}`.
    /// Without it `/metrics` answers only clients on this machine (loopback; behind
    /// `trusted_proxies`, the forwarded client's address counts), since the figures name
    /// pipelines, tasks and networks.
    #[serde(default)]
    pub metrics_token: Option<crate::secrets::Secret>,
}

/// The PEM files of an HTTPS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_session() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl HttpConfig {
    /// The loopback server of `jarvis shell` with no configuration: a free port.
    pub fn local() -> HttpConfig {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            trusted_proxies: Vec::new(),
            public_url: None,
            anonymous_read: false,
            session: default_session(),
            metrics_token: None,
        }
    }

    /// What the types cannot say; a problem starts with its path.
    pub fn check(&self) -> Result<(), String> {
        if self.tls.is_none()
            && !self.listen.ip().to_canonical().is_loopback()
            && self.trusted_proxies.is_empty()
        {
            return Err(format!(
                "http.listen: {} is not a loopback address, so serving plain HTTP would send tokens and cookies in clear; add tls, or list the reverse proxy under trusted_proxies",
                self.listen
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err("http.public_url: must start with https:// or http://".into());
        }
        if self.session.is_zero() {
            return Err("http.session: must be positive".into());
        }
        if let Some(token) = &self.metrics_token
            && token.expose().trim().len() < 16
        {
            return Err(
                "http.metrics_token: at least 16 characters (write it as ${VARIABLE}, from the environment)"
                    .into(),
            );
        }
        Ok(())
    }
}
