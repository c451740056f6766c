//! IRC. Only this module knows IRC.
//!
//! One [`IrcNetwork`] per configured network: a task keeps a connection up (reconnecting
//! with exponential backoff and jitter after any disconnect or ping timeout), registers by
//! hand (CAP LS 302, CAP REQ, SASL PLAIN or EXTERNAL, CAP END), joins the channels, and only
//! then reports itself online. Each received PRIVMSG becomes an [`Incoming`] whose identity
//! is the sender's services account (IRCv3 `account-tag`, else `extended-join` /
//! `account-notify` / WHOIS 330 with a cache) plus the hostmask; a bare nick is never one.
//!
//! Why no `irc` crate: its `Client` sends CAP END from `identify()` before SASL can run, its
//! `send` only queues onto an unbounded channel (so "the server has the line" cannot be
//! known), it has no reconnect and its flood settings do nothing, and its rustls feature pulls
//! in aws-lc-rs. Its `irc-proto` half would only parse lines, and its typed commands file
//! extended-join's account as a channel key while its framed codec ends the stream at the
//! first undecodable line. The grammar jarvis needs is small (proto.rs) and tested.
//!
//! A nick is no identity: it can pass to someone else at any moment. A message held for a
//! WHOIS is credited only to the `user@host` the answer names, NICK/QUIT/KICK/PART drop
//! what is held, and lookups time out (whois.rs); a private reply carries whom its nick was
//! verified as and is dropped if the nick may have changed hands before it is written
//! (`accounts::Owners`).
//!
//! Delivery: with `echo-message`, `send` resolves when the server echoes the PRIVMSG back
//! (the server has it), or fails as refused when it answers 401/403/404 (no such target,
//! cannot send to channel) instead; without it, when the line is written and flushed.
//!
//! Pacing: one token bucket per network ([`Pacer`]) for every line after registration —
//! the outlet's PRIVMSGs wait for it, and so do WHOIS lookups (queued, shared per nick,
//! bounded: whois.rs); JOIN, NICK and PONG are charged to it.

mod accounts;
mod conn;
mod negotiate;
pub mod proto;
mod session;
mod whois;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use crate::chat::pace::Pacer;
use crate::chat::{ChatNetwork, Incoming, Rate, SendError, Target, TargetKind};
use crate::config::irc::IrcNetworkConfig;

/// A conservative default: InspIRCd allows a burst of 10 then 1 command a second, Solanum
/// about the same; jarvis also sends its own PINGs, WHOIS and JOINs on top.
const DEFAULT_RATE: Rate = Rate {
    burst: 5,
    per_second: 0.8,
};

/// RFC 1123 allows 63 bytes per label; hosts seen on networks stay within this.
const ASSUMED_HOST_LEN: usize = 63;

/// A line for the connection's writer, answered once the server has it.
struct Outgoing {
    target: String,
    /// For a private line: whom the nick must still belong to when the line is written.
    owner: Option<String>,
    line: String,
    ack: oneshot::Sender<Result<(), SendError>>,
}

/// How jarvis appears to others, for the length of its lines as they see them.
#[derive(Debug, Clone)]
struct Me {
    nick: String,
    user: Option<String>,
    host: Option<String>,
}

/// State shared by the adapter's handle and its connection task.
struct Shared {
    cfg: IrcNetworkConfig,
    desired_nick: String,
    online: watch::Sender<bool>,
    /// The current connection's writer, from registration until it ends.
    writer: Mutex<Option<mpsc::Sender<Outgoing>>>,
    me: Mutex<Me>,
    /// The connection's token bucket: the outlet's PRIVMSGs and the session's own lines
    /// (WHOIS, JOIN, PONG, NICK) all draw from it.
    pacer: Pacer,
}

/// One IRC network.
pub struct IrcNetwork {
    shared: Arc<Shared>,
}

impl IrcNetwork {
    /// Starts keeping a connection to the network; messages for jarvis go to `incoming`.
    pub fn start(
        cfg: IrcNetworkConfig,
        bot_name: &str,
        incoming: mpsc::Sender<Incoming>,
    ) -> Result<Arc<IrcNetwork>, String> {
        cfg.check_at(&format!("chat.irc[{}]", cfg.name))?;
        let tls = conn::tls_config(&cfg).map_err(|e| format!("chat.irc[{}]: {e}", cfg.name))?;
        let desired_nick = cfg.nick.clone().unwrap_or_else(|| bot_name.to_string());
        let (online, _) = watch::channel(false);
        let pacer = Pacer::new(rate_of(&cfg));
        let shared = Arc::new(Shared {
            pacer,
            me: Mutex::new(Me {
                nick: desired_nick.clone(),
                user: None,
                host: None,
            }),
            desired_nick,
            cfg,
            online,
            writer: Mutex::new(None),
        });
        tokio::spawn(keep_connected(shared.clone(), tls, incoming));
        Ok(Arc::new(IrcNetwork { shared }))
    }
}

/// Connects, runs the session until it ends, waits, and does it again, forever.
async fn keep_connected(
    shared: Arc<Shared>,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    incoming: mpsc::Sender<Incoming>,
) {
    let cfg = &shared.cfg;
    let mut delay = cfg.reconnect_min;
    loop {
        let started = Instant::now();
        let outcome = match conn::open(cfg, tls.as_ref()).await {
            Ok((stream, quick)) => session::run(&shared, stream, quick, &incoming).await,
            Err(e) => Err(session::Ended::new(e, false)),
        };
        shared.set_offline();
        let was_ready = match &outcome {
            Ok(()) => true,
            Err(e) => e.was_ready,
        };
        match outcome {
            Ok(()) => tracing::warn!(network = %cfg.name, "the server closed the connection"),
            Err(e) => tracing::warn!(network = %cfg.name, error = %e.reason, "disconnected"),
        }
        // A connection that lived a while was a good one: start the backoff over.
        if was_ready && started.elapsed() > Duration::from_secs(60) {
            delay = cfg.reconnect_min;
        }
        let wait = delay.mul_f64(0.75 + fastrand::f64() * 0.5);
        tracing::info!(network = %cfg.name, wait_ms = wait.as_millis() as u64, "reconnecting");
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(cfg.reconnect_max);
    }
}

impl Shared {
    fn set_offline(&self) {
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
        self.online.send_replace(false);
    }

    fn set_writer(&self, writer: mpsc::Sender<Outgoing>) {
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(writer);
        }
    }

    fn update_me(&self, f: impl FnOnce(&mut Me)) {
        if let Ok(mut me) = self.me.lock() {
            f(&mut me);
        }
    }
}

impl ChatNetwork for IrcNetwork {
    fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// 512 bytes as other clients receive the line: `:nick!user@host PRIVMSG target :`,
    /// the text, and CRLF.
    fn max_line_bytes(&self, target: &Target) -> usize {
        let me = match self.shared.me.lock() {
            Ok(me) => me.clone(),
            Err(_) => Me {
                nick: self.shared.desired_nick.clone(),
                user: None,
                host: None,
            },
        };
        let nick = me.nick.len().max(self.shared.desired_nick.len());
        let user = match &me.user {
            Some(u) => u.len(),
            // `~` is added when the server finds no ident answer; 10 is the usual USERLEN.
            None => 1 + self.shared.user_name().len().min(10),
        };
        let host = me
            .host
            .as_ref()
            .map(|h| h.len())
            .unwrap_or(ASSUMED_HOST_LEN);
        let overhead =
            1 + nick + 1 + user + 1 + host + " PRIVMSG ".len() + target.name.len() + " :".len() + 2;
        512usize.saturating_sub(overhead).max(32)
    }

    fn rate(&self) -> Rate {
        rate_of(&self.shared.cfg)
    }

    fn pacer(&self) -> Option<Pacer> {
        Some(self.shared.pacer.clone())
    }

    fn send<'a>(
        &'a self,
        target: &'a Target,
        line: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if !proto::valid_target(&target.name) {
                return Err(SendError::Refused(format!(
                    "'{}' is not an IRC target",
                    crate::text::one_line(&target.name, 40)
                )));
            }
            let text = proto::clean_text(line);
            let line = proto::build("PRIVMSG", &[&target.name, &text])
                .map_err(|e| SendError::Refused(e.to_string()))?;
            let writer = match self.shared.writer.lock() {
                Ok(w) => w.clone(),
                Err(_) => None,
            };
            let Some(writer) = writer else {
                return Err(SendError::Offline);
            };
            let (ack, done) = oneshot::channel();
            writer
                .send(Outgoing {
                    target: target.name.clone(),
                    owner: match target.kind {
                        TargetKind::Direct => target.verified.clone(),
                        TargetKind::Room => None,
                    },
                    line,
                    ack,
                })
                .await
                .map_err(|_| SendError::Offline)?;
            done.await.unwrap_or(Err(SendError::Offline))
        })
    }

    fn online(&self) -> watch::Receiver<bool> {
        self.shared.online.subscribe()
    }
}

fn rate_of(cfg: &IrcNetworkConfig) -> Rate {
    match cfg.rate {
        Some(f) => Rate {
            burst: f.burst,
            per_second: f.per_second,
        },
        None => DEFAULT_RATE,
    }
}

impl Shared {
    fn user_name(&self) -> String {
        self.cfg
            .user
            .clone()
            .unwrap_or_else(|| self.desired_nick.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> IrcNetworkConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn configuration_is_checked() {
        let ok = config(
            "name: n\nserver: localhost\nchannels: ['#ops']\nsasl: {account: j, password: pw}\n",
        );
        assert!(ok.check(0).is_ok());
        assert_eq!(ok.port, 6667);
        let bad = config("name: n\nserver: localhost\nchannels: ['ops']\n");
        assert!(bad.check(0).unwrap_err().contains("channels"));
        let bad = config("name: n\nserver: s\nsasl: {account: j}\n");
        assert!(bad.check(0).unwrap_err().contains("PLAIN"));
        let bad = config("name: n\nserver: s\nsasl: {mechanism: external}\n");
        assert!(bad.check(0).unwrap_err().contains("EXTERNAL"));
    }

    #[test]
    fn sasl_plain_goes_in_clear_to_loopback_only() {
        let sasl = "sasl: {account: j, password: pw}\n";
        for server in ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LocalHost."] {
            let ok = config(&format!("name: n\nserver: '{server}'\n{sasl}"));
            assert!(ok.check(0).is_ok(), "{server}");
        }
        let bad = config(&format!("name: n\nserver: irc.example.com\n{sasl}"));
        assert_eq!(
            bad.check(2).unwrap_err(),
            "chat.irc[2].sasl: SASL PLAIN would send the password in clear to irc.example.com; set tls: true (or use SASL EXTERNAL)"
        );
        let ok = config(&format!(
            "name: n\nserver: irc.example.com\ntls: true\n{sasl}"
        ));
        assert!(ok.check(0).is_ok());
        let secret = format!("{:?}", ok.sasl);
        assert!(!secret.contains("pw"), "{secret}");
    }

    #[tokio::test]
    async fn line_budget_counts_the_prefix_others_see() {
        let (tx, _rx) = mpsc::channel(1);
        let cfg =
            config("name: n\nserver: 127.0.0.1\nport: 1\nreconnect_min: 1h\nreconnect_max: 1h\n");
        let net = IrcNetwork::start(cfg, "jarvis", tx).unwrap();
        let target = Target::room("n", "#ops");
        // :jarvis!~jarvis@<63> PRIVMSG #ops :  + CRLF
        let assumed = 512 - (1 + 6 + 1 + 7 + 1 + 63 + 9 + 4 + 2 + 2);
        assert_eq!(net.max_line_bytes(&target), assumed);
        net.shared.update_me(|me| {
            me.user = Some("~jarvis".into());
            me.host = Some("127.0.0.1".into());
        });
        assert_eq!(net.max_line_bytes(&target), assumed + 63 - 9);
        assert!(matches!(
            net.send(&target, "hello").await,
            Err(SendError::Offline)
        ));
    }
}
