//! One connection attempt: TCP, then STARTTLS (or plain, only where the configuration says
//! so), then SASL, ending in a stream ready for resource binding. tokio-xmpp's own connectors
//! trust only the system's roots, look the server up by SRV and retry forever without
//! saying why; jarvis needs a CA file for private servers and a first attempt whose failure
//! it can report, so it connects by itself and hands the result to tokio-xmpp's stanza
//! stream.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::sasl::DefinedCondition;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::stanzastream::XmppStream;
use tokio_xmpp::xmlstream::{
    self, ReadError, StreamHeader, Timeouts, XmppStreamElement, initiate_stream,
};

use super::socket::ChatSocket;
use super::{Tls, XmppAccountConfig};
use crate::secrets::Secret;

/// How long one attempt may take, from TCP connect to the end of SASL.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a connection attempt failed, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the server refused the password")]
    BadPassword,
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    #[error("cannot connect to {0}: {1}")]
    Unreachable(String, String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(String),
}

impl ConnectError {
    /// Whether trying again later can help (a server that is down) or not (a wrong password
    /// or certificate stays wrong).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ConnectError::BadPassword | ConnectError::LoginRefused(_) | ConnectError::Tls(_)
        )
    }
}

/// What a connection needs, prepared once from the configuration.
#[derive(Clone)]
pub struct Connector {
    pub jid: Jid,
    password: Secret,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Connector")
            .field("jid", &self.jid)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    pub fn new(config: &XmppAccountConfig, jid: Jid) -> Result<Connector, String> {
        let host = config
            .server
            .clone()
            .unwrap_or_else(|| jid.domain().to_string());
        let tls = match config.tls {
            Tls::Plain => None,
            Tls::Starttls => Some(TlsConnector::from(config.tls_files().client_config()?)),
        };
        Ok(Connector {
            jid,
            password: config.password.clone(),
            host,
            port: config.port,
            tls,
            timeouts: Timeouts {
                // Loopback and data-centre links: notice a dead server within a minute.
                read_timeout: Duration::from_secs(60),
                response_timeout: Duration::from_secs(20),
            },
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// One attempt, bounded in time.
    pub async fn connect(&self) -> Result<(StreamFeatures, XmppStream), ConnectError> {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Unreachable(
                self.address(),
                format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
            )),
        }
    }

    async fn attempt(&self) -> Result<(StreamFeatures, XmppStream), ConnectError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ConnectError::Unreachable(self.address(), io_reason(&e)))?;
        let tcp = ChatSocket::new(tcp);
        let domain = self.jid.domain().to_string();
        let (features, stream) = self.open(BufStream::new(tcp)).await?;
        match &self.tls {
            None => self.login(features, stream).await,
            Some(tls) => {
                if !features.can_starttls() {
                    return Err(ConnectError::Tls(format!(
                        "{} offers no STARTTLS (a loopback test server may be used with tls: plain)",
                        self.address()
                    )));
                }
                let tcp = starttls(stream).await?;
                let name = ServerName::try_from(domain.clone())
                    .map_err(|e| ConnectError::Tls(format!("'{domain}' is no TLS name: {e}")))?;
                let tls_stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Tls(tls_reason(&domain, &e)))?;
                let (features, stream) = self.open(BufStream::new(tls_stream)).await?;
                self.login(features, stream).await
            }
        }
    }

    async fn open<Io>(
        &self,
        io: Io,
    ) -> Result<(StreamFeatures, xmlstream::XmppStream<Io>), ConnectError>
    where
        Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
    {
        let pending = initiate_stream(io, ns::JABBER_CLIENT, self.header(), self.timeouts)
            .await
            .map_err(|e| ConnectError::Protocol(format!("cannot open the XML stream: {e}")))?;
        pending
            .recv_features()
            .await
            .map_err(|e| ConnectError::Protocol(format!("no stream features: {e}")))
    }

    fn header(&self) -> StreamHeader<'_> {
        StreamHeader {
            to: Some(Cow::Owned(self.jid.domain().to_string())),
            from: None,
            id: None,
        }
    }

    /// SASL, then the stream restart; binding is left to the stanza stream.
    async fn login<Io>(
        &self,
        features: StreamFeatures,
        stream: xmlstream::XmppStream<Io>,
    ) -> Result<(StreamFeatures, XmppStream), ConnectError>
    where
        Io: tokio_xmpp::connect::AsyncReadAndWrite + Send + 'static,
    {
        let Some(user) = self.jid.node() else {
            return Err(ConnectError::Protocol(
                "the JID has no user part (user@domain)".into(),
            ));
        };
        let creds = sasl::common::Credentials::default()
            .with_username(user.as_str())
            .with_password(self.password.expose().to_string())
            .with_channel_binding(sasl::common::ChannelBinding::None);
        let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds)
            .await
            .map_err(auth_reason)?;
        let pending = stream
            .send_header(self.header())
            .await
            .map_err(|e| ConnectError::Protocol(format!("cannot restart the stream: {e}")))?;
        let (features, stream) = pending
            .recv_features()
            .await
            .map_err(|e| ConnectError::Protocol(format!("no stream features after login: {e}")))?;
        Ok((features, stream.box_stream()))
    }
}

/// `<starttls/>`, `<proceed/>`, and the bare TCP stream back.
async fn starttls(
    mut stream: xmlstream::XmppStream<BufStream<ChatSocket>>,
) -> Result<ChatSocket, ConnectError> {
    let request = XmppStreamElement::Starttls(starttls::Nonza::Request(starttls::Request));
    stream
        .send(&request)
        .await
        .map_err(|e| ConnectError::Tls(format!("cannot ask for STARTTLS: {e}")))?;
    loop {
        match stream
            .next()
            .await
            .map(|r| r.and_then(|e| e.into_read_error()))
        {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Failure(_)))) => {
                return Err(ConnectError::Tls("the server refused STARTTLS".into()));
            }
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => {
                return Err(ConnectError::Tls(format!("STARTTLS failed: {e}")));
            }
            Some(Err(ReadError::ParseError(e))) => {
                return Err(ConnectError::Tls(format!("STARTTLS failed: {e}")));
            }
            None | Some(Err(ReadError::StreamFooterReceived)) => {
                return Err(ConnectError::Tls(
                    "the server closed the stream during STARTTLS".into(),
                ));
            }
        }
    }
    Ok(stream.into_inner().into_inner())
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

fn tls_reason(domain: &str, e: &std::io::Error) -> String {
    let detail = e.to_string();
    if detail.contains("UnknownIssuer") || detail.contains("invalid peer certificate") {
        format!(
            "the TLS certificate of {domain} is not trusted ({detail}); set ca_file to the CA that signed it"
        )
    } else {
        format!("TLS with {domain} failed: {detail}")
    }
}

fn auth_reason(e: tokio_xmpp::Error) -> ConnectError {
    use tokio_xmpp::error::AuthError;
    match e {
        tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized)) => {
            ConnectError::BadPassword
        }
        tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::EncryptionRequired)) => {
            ConnectError::LoginRefused("the server wants TLS first (use tls: starttls)".into())
        }
        tokio_xmpp::Error::Auth(AuthError::Fail(other)) => {
            ConnectError::LoginRefused(format!("{other:?}"))
        }
        tokio_xmpp::Error::Auth(AuthError::NoMechanism) => ConnectError::LoginRefused(
            "no login method in common (over a plain connection the server may offer none; use tls: starttls)"
                .into(),
        ),
        other => ConnectError::Protocol(format!("login failed: {other}")),
    }
}
