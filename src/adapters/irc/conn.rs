//! Opening the byte stream to an IRC server: TCP, optionally TLS (rustls with the ring
//! provider, built by `config::network::ChatTls` as for XMPP: the system's roots plus any
//! `ca_file`, and a client certificate for SASL EXTERNAL).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::IrcNetworkConfig;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds the TLS settings once per network: reading certificate files is a configuration
/// matter, and its errors should show at start, not at every reconnect.
pub fn tls_config(cfg: &IrcNetworkConfig) -> Result<Option<Arc<ClientConfig>>, String> {
    if !cfg.tls {
        return Ok(None);
    }
    cfg.tls_files().client_config().map(Some)
}

/// Keeps the connection's ACKs immediate. Servers such as InspIRCd leave Nagle's
/// algorithm on, so the line after an echo-message waits for our ACK of the echo, which
/// Linux delays by 40 ms: every round trip took 44 ms instead of a fraction of one.
/// Quick-ACK mode is not sticky, so it is set again after every read.
pub struct QuickAck(Option<std::os::fd::OwnedFd>);

impl QuickAck {
    pub fn poke(&self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.0 {
            let _ = socket2::SockRef::from(fd).set_tcp_quickack(true);
        }
    }
}

/// Connects to the configured server.
pub async fn open(
    cfg: &IrcNetworkConfig,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(Box<dyn Io>, QuickAck), String> {
    let addr = (cfg.server.as_str(), cfg.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {}:{} timed out", cfg.server, cfg.port))?
        .map_err(|e| format!("cannot connect to {}:{}: {e}", cfg.server, cfg.port))?;
    let _ = tcp.set_nodelay(true);
    // A duplicate of the socket's descriptor: options set on it apply to the socket.
    let quick = {
        use std::os::fd::AsFd;
        QuickAck(tcp.as_fd().try_clone_to_owned().ok())
    };
    quick.poke();
    let Some(tls) = tls else {
        return Ok((Box::new(tcp), quick));
    };
    let name = ServerName::try_from(cfg.server.clone())
        .map_err(|e| format!("'{}' is not a TLS server name: {e}", cfg.server))?;
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS with {}:{} timed out", cfg.server, cfg.port))?
    .map_err(|e| format!("TLS with {}:{} failed: {e}", cfg.server, cfg.port))?;
    Ok((Box::new(stream), quick))
}
