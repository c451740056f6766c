//! A small client for the EC2 Query API: form-encoded POSTs signed with AWS Signature Version
//! 4, XML answers, retries with backoff on throttling and 5xx, and one line for every refusal.
//!
//! Why `aws-sigv4` (+ `quick-xml`) and not the official SDK (`aws-sdk-ec2` + `aws-config`):
//! the signer is the SDK's own, kept by AWS, but alone (features `sign-http`, `http1`) it and
//! quick-xml add twelve small crates to this workspace (the smithy types and runtime API,
//! base64-simd) that build in 21 s on 2 cores (17 s CPU, debug; measured). `aws-sdk-ec2` 1.274
//! is 1.24 million lines of generated Rust (an 88 MB source tree, a 7.8 MB `.crate`) for its
//! 811 actions; with `aws-config` it brings 54 crates this workspace does not have, among them
//! aws-lc-sys (a C build, which this project keeps out; see the IRC adapter), a second TLS and
//! HTTP stack (rustls 0.21, hyper 0.14) and the SSO/STS SDKs. Its build time was not measured
//! (it would have held the shared cores far longer than the signer's); its size alone
//! outweighs the five actions used here. The Query API is stable and small: form-encoded
//! parameters in, a few XML elements out (see `xml`).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::StatusCode;

use super::xml;
use crate::protocol::{self, Failure};

/// The API version every action is asked in.
const VERSION: &str = "2016-11-15";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of one request before a throttled or failing API makes the task ask for a retry.
const MAX_TRIES: u32 = 6;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A bound on pages read, so a misbehaving server cannot keep the task listing forever.
const MAX_PAGES: usize = 100;

/// Codes that mean "slow down": waited out with backoff.
const THROTTLED: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];
/// Codes of a server-side trouble, worth another try like a 5xx.
const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "InsufficientInstanceCapacity",
];
/// Codes that mean the credentials are wrong: no retry helps.
const AUTH: &[&str] = &[
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "RequestExpired",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
];
/// Codes of an account limit.
const QUOTA: &[&str] = &[
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "AddressLimitExceeded",
    "VolumeLimitExceeded",
    "ResourceLimitExceeded",
];

pub struct Api {
    url: String,
    region: String,
    credentials: Credentials,
    client: reqwest::Client,
}

/// Where a request's refusal leaves the task.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Try the same request again after a wait.
    Again,
    /// Fail the task with this line; `retry` tells whether a later run of it may succeed.
    Fail { line: String, retry: bool },
}

impl Api {
    /// The API of `region`: `EC2_ENDPOINT` when the configuration names one (an emulator, a
    /// VPC endpoint), else `https://ec2.REGION.amazonaws.com`, with the credentials granted as
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary ones,
    /// `AWS_SESSION_TOKEN`.
    pub fn from_env(region: &str) -> Result<Api, Failure> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let key = var("AWS_ACCESS_KEY_ID").ok_or_else(|| {
            Failure::fatal("no AWS_ACCESS_KEY_ID: the configuration must grant it to ec2")
        })?;
        let secret = var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            Failure::fatal("no AWS_SECRET_ACCESS_KEY: the configuration must grant it to ec2")
        })?;
        let token = var("AWS_SESSION_TOKEN");
        let url = match var("EC2_ENDPOINT") {
            Some(url) => url,
            None => format!("https://ec2.{region}.amazonaws.com"),
        };
        let url = format!("{}/", url.trim_end_matches('/'));
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Failure::fatal(format!(
                "EC2_ENDPOINT must be an http(s) URL, not '{}'",
                printable(&url)
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
            url,
            region: region.to_string(),
            credentials: Credentials::new(key, secret, token, None, "jarvis-ec2-env"),
            client,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// One action with its parameters; the XML body of its successful answer. Throttling,
    /// 5xx answers and trouble on the wire are tried again, with backoff.
    pub async fn call(&self, action: &str, params: &[(String, String)]) -> Result<String, Failure> {
        self.call_with(action, params, true).await
    }

    /// An action that makes something (RunInstances): tried again only after an answer that
    /// says nothing was done (throttling). After a timeout, a 5xx or a broken connection the
    /// instance may exist, so the task fails worth a retry and its next attempt looks the
    /// instance up by its tags first. (AWS would also recognise the ClientToken; emulators
    /// such as moto do not.)
    pub async fn call_making(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, Failure> {
        self.call_with(action, params, false).await
    }

    async fn call_with(
        &self,
        action: &str,
        params: &[(String, String)],
        again_when_unsure: bool,
    ) -> Result<String, Failure> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action);
        form.append_pair("Version", VERSION);
        for (name, value) in params {
            form.append_pair(name, value);
        }
        let body = form.finish();
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self.send(action, &body).await;
            let (why, sure) = match outcome {
                Ok((status, text)) if status.is_success() => return Ok(text),
                Ok((status, text)) => match classify(action, &self.region, status, &text) {
                    Refusal::Fail { line, retry } => {
                        return Err(if retry {
                            Failure::retry(line)
                        } else {
                            Failure::fatal(line)
                        });
                    }
                    Refusal::Again => (summary(status, &text), throttled(&text)),
                },
                Err(transport) => (transport, false),
            };
            if !sure && !again_when_unsure {
                return Err(Failure::retry(format!(
                    "EC2 {action} in {}: {why}; it may have been carried out, so the next \
                     attempt looks first",
                    self.region
                )));
            }
            if tries >= MAX_TRIES {
                return Err(Failure::retry(format!(
                    "EC2 {action} in {}: still failing after {MAX_TRIES} tries: {why}",
                    self.region
                )));
            }
            let wait = backoff(tries);
            protocol::progress(&format!(
                "EC2 {action}: {why}; trying again in {:.1}s ({tries}/{MAX_TRIES})",
                wait.as_secs_f32()
            ));
            tokio::time::sleep(wait).await;
        }
    }

    /// Signs and sends one request; the status and body of any answer, or what went wrong on
    /// the wire.
    async fn send(&self, action: &str, body: &str) -> Result<(StatusCode, String), String> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into();
        let headers = [("content-type", CONTENT_TYPE)];
        let signable = SignableRequest::new(
            "POST",
            &self.url,
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into_parts();
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", CONTENT_TYPE)
            .body(body.to_string());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        protocol::log(&format!("ec2: {action} in {}", self.region));
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        Ok((status, text))
    }

    /// Every instance `DescribeInstances` lists for these parameters (filters), page by page.
    pub async fn describe(
        &self,
        params: &[(String, String)],
    ) -> Result<Vec<xml::Instance>, Failure> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut page_params = params.to_vec();
            if let Some(token) = &token {
                page_params.push(("NextToken".into(), token.clone()));
            }
            let text = self.call("DescribeInstances", &page_params).await?;
            let page: xml::DescribeInstances = xml::parse(&text)
                .map_err(|e| Failure::retry(format!("EC2 DescribeInstances: {e}")))?;
            token = page.next_token.clone().filter(|t| !t.is_empty());
            found.extend(xml::instances(page));
            if token.is_none() {
                break;
            }
        }
        Ok(found)
    }
}

/// What a refused request means for the task: a wait and another try (throttling, 5xx), or
/// one line that says what failed and why.
pub fn classify(action: &str, region: &str, status: StatusCode, text: &str) -> Refusal {
    let error = xml::error(text);
    let code = error.as_ref().map(|e| e.code.as_str()).unwrap_or("");
    if THROTTLED.contains(&code)
        || TRANSIENT.contains(&code)
        || status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        return Refusal::Again;
    }
    let said = match &error {
        Some(e) => format!("{}: {}", e.code, printable(&e.message)),
        None => format!("HTTP {status}"),
    };
    if AUTH.contains(&code) || (error.is_none() && status == StatusCode::UNAUTHORIZED) {
        return Refusal::Fail {
            line: format!(
                "EC2 refused the credentials on {action} in {region} ({said}): check the \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY granted to ec2"
            ),
            retry: false,
        };
    }
    if code == "UnauthorizedOperation" {
        return Refusal::Fail {
            line: format!(
                "EC2 does not allow these credentials to {action} in {region} \
                 (UnauthorizedOperation): grant it in IAM"
            ),
            retry: false,
        };
    }
    if QUOTA.contains(&code) {
        return Refusal::Fail {
            line: format!("EC2 {action} in {region}: an account quota is reached ({said})"),
            retry: false,
        };
    }
    Refusal::Fail {
        line: format!("EC2 refused {action} in {region} ({said})"),
        retry: false,
    }
}

/// Whether an answer says the request was throttled (and so not carried out).
fn throttled(text: &str) -> bool {
    xml::error(text).is_some_and(|e| THROTTLED.contains(&e.code.as_str()))
}

/// A refusal worth another try, in a few words for the progress line.
fn summary(status: StatusCode, text: &str) -> String {
    match xml::error(text) {
        Some(e) => format!("{} ({status})", e.code),
        None => format!("HTTP {status}"),
    }
}

/// The wait before try `tries + 1`: doubling from a quarter second, at most 8 s, with up to a
/// quarter more at random so that many workers do not come back at once.
pub fn backoff(tries: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1 << tries.saturating_sub(1).min(10))
        .min(BACKOFF_MAX);
    let mut byte = [0u8; 1];
    let jitter = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte) {
        Ok(()) => base.mul_f64(f64::from(byte[0]) / 1024.0),
        Err(_) => Duration::ZERO,
    };
    base + jitter
}

/// At most 300 printable characters of a text from the API.
fn printable(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() > 300 {
        let mut short: String = clean.chars().take(300).collect();
        short.push('…');
        short
    } else {
        clean
    }
}

/// What went wrong on the wire, without the URL reqwest likes to add.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> String {
        format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>says\nwhy</Message></Error></Errors></Response>"
        )
    }

    #[test]
    fn throttling_and_server_trouble_are_tried_again() {
        let again = |status: u16, text: &str| {
            classify(
                "RunInstances",
                "eu-west-1",
                StatusCode::from_u16(status).unwrap(),
                text,
            )
        };
        assert_eq!(again(503, &error("RequestLimitExceeded")), Refusal::Again);
        assert_eq!(again(400, &error("Throttling")), Refusal::Again);
        assert_eq!(again(500, "<html>oops</html>"), Refusal::Again);
        assert_eq!(again(502, ""), Refusal::Again);
    }

    #[test]
    fn refusals_are_one_line_that_names_the_cause() {
        let line = |status: u16, text: &str| match classify(
            "RunInstances",
            "eu-west-1",
            StatusCode::from_u16(status).unwrap(),
            text,
        ) {
            Refusal::Fail { line, retry } => {
                assert!(!retry);
                assert!(!line.contains('\n'), "{line}");
                line
            }
            Refusal::Again => panic!("not a refusal"),
        };
        for code in [
            "AuthFailure",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
        ] {
            let l = line(401, &error(code));
            assert!(
                l.starts_with("EC2 refused the credentials on RunInstances"),
                "{l}"
            );
            assert!(
                l.contains(code) && l.contains("AWS_SECRET_ACCESS_KEY"),
                "{l}"
            );
        }
        let l = line(400, &error("InstanceLimitExceeded"));
        assert!(
            l.contains("quota") && l.contains("InstanceLimitExceeded"),
            "{l}"
        );
        let l = line(400, &error("InvalidAMIID.NotFound"));
        assert_eq!(
            l,
            "EC2 refused RunInstances in eu-west-1 (InvalidAMIID.NotFound: sayswhy)"
        );
        assert!(line(403, "").contains("HTTP 403"));
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert!(backoff(1) >= BACKOFF_FIRST && backoff(1) < BACKOFF_FIRST * 2);
        assert!(backoff(3) >= BACKOFF_FIRST * 4);
        assert!(backoff(30) <= BACKOFF_MAX + BACKOFF_MAX / 4);
    }
}
