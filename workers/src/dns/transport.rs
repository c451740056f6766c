//! How `dns` talks to the primary: every request signed with the granted TSIG key, over UDP
//! (TCP when the request is large or the answer comes back truncated), and every answer's
//! signature checked before anything in it is believed. Refusals become the one line an
//! operator reads: `REFUSED by SERVER (TSIG key NAME): …`, never with the secret.

use futures_util::StreamExt;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsRequestSender, DnsStreamHandle};
use hickory_net::{NetError, proto};
use proto::op::{DnsRequest, DnsRequestOptions, Message, ResponseCode, SerialMessage};
use proto::rr::rdata::tsig::TsigError;
use proto::rr::{Name, TSigVerifier};

use super::{Settings, shown};
use crate::clock;
use crate::protocol::{self, Failure};

/// Requests larger than this go over TCP from the start (RFC 1035's UDP limit).
const UDP_REQUEST_LIMIT: usize = 512;

/// One conversation with the primary: signs each request, picks UDP or TCP, and checks that
/// each answer is signed by the same key before believing it.
pub(super) struct Client<'a> {
    pub(super) settings: &'a Settings,
}

impl Client<'_> {
    /// Sends one request and returns the answer, verified when the request was signed.
    pub(super) async fn exchange(&self, message: Message) -> Result<Message, Failure> {
        let (signed, verifier) = self.sign(message)?;
        let bytes = signed
            .to_vec()
            .map_err(|e| Failure::fatal(format!("cannot encode the DNS request: {e}")))?;
        let (answer, raw) = if bytes.len() > UDP_REQUEST_LIMIT {
            self.over_tcp(bytes, signed.id).await?
        } else {
            match self.over_udp(signed.clone()).await? {
                (answer, _) if answer.truncation => {
                    protocol::log(&format!(
                        "the UDP answer from {} is truncated: asking again over TCP",
                        self.settings.server_label
                    ));
                    // Signed afresh: a verifier belongs to one exchange, and the time stays current.
                    let (resigned, verifier) = self.sign(strip_signature(signed))?;
                    let bytes = resigned.to_vec().map_err(|e| {
                        Failure::fatal(format!("cannot encode the DNS request: {e}"))
                    })?;
                    let (answer, raw) = self.over_tcp(bytes, resigned.id).await?;
                    return self.trust(answer, &raw, verifier);
                }
                other => other,
            }
        };
        self.trust(answer, &raw, verifier)
    }

    fn sign(&self, mut message: Message) -> Result<(Message, Option<TSigVerifier>), Failure> {
        let Some(key) = &self.settings.key else {
            return Ok((message, None));
        };
        let verifier = message
            .finalize(&key.signer, clock::now_secs())
            .map_err(|e| Failure::fatal(format!("cannot sign with TSIG key {}: {e}", key.name)))?;
        Ok((message, verifier))
    }

    /// Checks the answer's TSIG before anything in it is believed.
    fn trust(
        &self,
        answer: Message,
        raw: &[u8],
        verifier: Option<TSigVerifier>,
    ) -> Result<Message, Failure> {
        if let Some(error) = answer.signature().and_then(|sig| sig.data.error) {
            return Err(self.key_problem(tsig_code(error)));
        }
        let Some(mut verifier) = verifier else {
            return Ok(answer);
        };
        if answer.signature().is_none() {
            if answer.response_code == ResponseCode::NoError {
                return Err(Failure::fatal(format!(
                    "unsigned answer from {} ({}): not trusting it",
                    self.settings.server_label,
                    self.settings.key_label()
                )));
            }
            // Servers may leave error answers unsigned; the code is all we use of them.
            return Ok(answer);
        }
        match verifier.verify(raw) {
            Ok(_) => Ok(answer),
            Err(e) => {
                protocol::log(&format!("TSIG verification of the answer failed: {e}"));
                let text = e.to_string();
                let code = if text.contains("outdated") {
                    "BADTIME"
                } else {
                    // hickory words a missing or wrong MAC as "truncated HMAC": a bad signature.
                    "BADSIG"
                };
                Err(Failure::fatal(format!(
                    "{code} from {} ({}): the answer's signature does not verify with this key",
                    self.settings.server_label,
                    self.settings.key_label()
                )))
            }
        }
    }

    fn key_problem(&self, code: &str) -> Failure {
        let why = match code {
            "BADSIG" => {
                "the signature does not verify: DNS_TSIG_SECRET is not the server's secret for this key"
            }
            "BADKEY" => "the server does not know this key name or algorithm",
            "BADTIME" => {
                "the clocks of jarvis and the server differ by more than the allowed window"
            }
            "BADTRUNC" => "the server does not accept a truncated MAC",
            _ => "the server rejected the TSIG signature",
        };
        Failure::fatal(format!(
            "{code} by {} ({}): {why}",
            self.settings.server_label,
            self.settings.key_label()
        ))
    }

    pub(super) fn refusal(&self, code: ResponseCode, zone: &Name, name: &Name) -> Failure {
        let server = &self.settings.server_label;
        let key = self.settings.key_label();
        let zone = shown(zone);
        let name = shown(name);
        match code {
            ResponseCode::Refused => Failure::fatal(format!(
                "REFUSED by {server} ({key}): not allowed to update zone {zone}"
            )),
            ResponseCode::NotAuth => Failure::fatal(format!(
                "NOTAUTH by {server} ({key}): not authoritative for zone {zone}, or the key is not accepted"
            )),
            ResponseCode::NotZone => Failure::fatal(format!(
                "NOTZONE by {server} ({key}): {name} is not in zone {zone}"
            )),
            ResponseCode::BADSIG => self.key_problem("BADSIG"),
            ResponseCode::BADKEY => self.key_problem("BADKEY"),
            ResponseCode::BADTIME => self.key_problem("BADTIME"),
            ResponseCode::ServFail => Failure::retry(format!(
                "SERVFAIL by {server} ({key}): the server failed to apply the update to zone {zone}"
            )),
            ResponseCode::YXRRSet
            | ResponseCode::NXRRSet
            | ResponseCode::YXDomain
            | ResponseCode::NXDomain => Failure::retry(format!(
                "{} by {server} ({key}): the records of {name} changed during the update, or it is a CNAME",
                code_name(code)
            )),
            other => Failure::fatal(format!(
                "{} by {server} ({key}): the update of {name} failed",
                code_name(other)
            )),
        }
    }

    async fn over_udp(&self, message: Message) -> Result<(Message, Vec<u8>), Failure> {
        let provider = TokioRuntimeProvider::new();
        let mut stream = UdpClientStream::builder(self.settings.server, provider)
            .with_timeout(Some(self.settings.timeout))
            .build();
        let mut answers =
            stream.send_message(DnsRequest::new(message, DnsRequestOptions::default()));
        match answers.next().await {
            Some(Ok(answer)) => Ok(answer.into_parts()),
            Some(Err(e)) => Err(self.transport(e)),
            None => Err(self.transport(NetError::Timeout)),
        }
    }

    async fn over_tcp(&self, bytes: Vec<u8>, id: u16) -> Result<(Message, Vec<u8>), Failure> {
        let server = self.settings.server;
        let (connect, mut handle) = TcpClientStream::new(
            server,
            None,
            Some(self.settings.timeout),
            TokioRuntimeProvider::new(),
        );
        let talk = async {
            let mut stream = connect.await?;
            handle.send(SerialMessage::new(bytes, server))?;
            while let Some(answer) = stream.next().await {
                let (raw, _) = answer?.into_parts();
                if raw.get(..2) == Some(&id.to_be_bytes()[..]) {
                    return Ok(raw);
                }
            }
            Err(NetError::from(
                "the server closed the connection without an answer",
            ))
        };
        let raw = tokio::time::timeout(self.settings.timeout, talk)
            .await
            .map_err(|_| self.transport(NetError::Timeout))?
            .map_err(|e| self.transport(e))?;
        let answer = Message::from_vec(&raw).map_err(|e| {
            Failure::retry(format!(
                "unreadable answer from {}: {e}",
                self.settings.server_label
            ))
        })?;
        Ok((answer, raw))
    }

    fn transport(&self, error: NetError) -> Failure {
        let server = &self.settings.server_label;
        match error {
            NetError::Timeout => Failure::retry(format!(
                "no answer from {server} within {}s",
                self.settings.timeout.as_secs()
            )),
            other => Failure::retry(format!("cannot talk to {server}: {other}")),
        }
    }
}

fn strip_signature(mut message: Message) -> Message {
    message.signature = None;
    message
}

fn tsig_code(error: TsigError) -> &'static str {
    match error {
        TsigError::BadSig => "BADSIG",
        TsigError::BadKey => "BADKEY",
        TsigError::BadTime => "BADTIME",
        TsigError::BadTrunc => "BADTRUNC",
        TsigError::Unknown(_) => "TSIG error",
    }
}

/// The mnemonic of RFC 2136/6895 for a response code.
fn code_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}
