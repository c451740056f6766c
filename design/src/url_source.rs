//! Designs from `https://` URLs on allowed hosts; redirects stay on allowed hosts too. Every
//! host is resolved first and only public addresses (or those `allow_addresses` names) are
//! connected to: the client's resolver checks names, and addresses written in a URL are
//! checked before the request and on each redirect.

use std::sync::Arc;

use reqwest::header::ACCEPT;

use crate::Design;
use crate::address::{AddressPolicy, AddressRefused};
use crate::config::{DesignsConfig, UrlsConfig};
use crate::error::{DesignError, printable};
use crate::http::{
    self, ClientSettings, find_source, host_of, literal_ip, read_limited, shown_url,
    transport_error,
};
use crate::validate::parse_bytes;

#[derive(Debug, Clone)]
pub(crate) struct UrlSource {
    client: Result<reqwest::Client, String>,
    addresses: Arc<AddressPolicy>,
}

impl UrlSource {
    pub(crate) fn new(config: &UrlsConfig) -> UrlSource {
        let allow = config.allow.clone();
        let addresses = Arc::new(AddressPolicy::new(&config.allow_addresses));
        let client = http::client(ClientSettings {
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            max_redirects: config.max_redirects,
            allowed: Arc::new(move |url| {
                allow
                    .iter()
                    .any(|a| a.host.matches(url) && (url.scheme() == "https" || a.allow_http))
            }),
            addresses: Some(Arc::clone(&addresses)),
        });
        if let Err(e) = &client {
            tracing::error!(error = %e, "the design URL client could not be built");
        }
        UrlSource { client, addresses }
    }

    pub(crate) async fn load(
        &self,
        config: &DesignsConfig,
        reference: &str,
        url: &url::Url,
    ) -> Result<Design, DesignError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| DesignError::Source(e.clone()))?;
        let host = host_of(url);
        let shown = shown_url(url);
        // No resolver is asked about an address written in the URL: check it here.
        if let Some(ip) = literal_ip(url) {
            self.addresses
                .check_literal(ip)
                .map_err(|why| DesignError::Reference(format!("{shown}: {why}")))?;
        }
        let response = client
            .get(url.clone())
            .header(
                ACCEPT,
                "application/yaml, text/yaml, text/plain;q=0.9, */*;q=0.1",
            )
            .send()
            .await
            .map_err(|e| match find_source::<AddressRefused>(&e) {
                Some(refused) => {
                    tracing::info!(url = %shown, reason = %refused, "design URL refused");
                    DesignError::Reference(format!("{shown}: {refused}"))
                }
                None => transport_error(&e, &host, config.urls.timeout),
            })?;
        let status = response.status();
        if matches!(status.as_u16(), 404 | 410) {
            return Err(DesignError::NotFound(format!(
                "there is no design at {shown} (HTTP {})",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(DesignError::Source(format!(
                "{} answered HTTP {} {} for {shown}",
                printable(&host),
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            )));
        }
        let body = read_limited(
            response,
            config.max_bytes,
            &format!("the design at {shown}"),
            config.urls.timeout,
        )
        .await?;
        let mut design = parse_bytes(reference, &body, config.max_bytes, &config.limits)?;
        design.origin = shown;
        Ok(design)
    }
}
