//! Capability negotiation and SASL, without I/O: CAP LS 302 → CAP REQ (each refused
//! capability asked for again alone) → AUTHENTICATE → CAP END. The session feeds it the
//! server's CAP and SASL replies and writes the lines it answers with; everything it decides
//! is unit-tested here.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;

use super::proto::Message;
use crate::config::irc::{SaslConfig, SaslMechanism};

/// The IRCv3 capabilities jarvis asks for when the server offers them.
pub const WANTED_CAPS: &[&str] = &[
    "account-tag",
    "extended-join",
    "account-notify",
    "echo-message",
    "cap-notify",
    "message-tags",
];

/// A line the negotiation wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A command built from parameters (`CAP REQ …`, `AUTHENTICATE PLAIN`).
    Command(&'static str, Vec<String>),
    /// A line as it is (`AUTHENTICATE <base64>`).
    Line(String),
    /// `CAP END`: negotiation is over and registration goes on.
    CapEnd,
}

/// Where capability negotiation stands on one connection.
#[derive(Debug)]
pub struct Negotiation {
    /// The network's name, for the log.
    network: String,
    ircv3: bool,
    sasl: Option<SaslConfig>,
    /// What the server offers, with each capability's value (`sasl=PLAIN,EXTERNAL`).
    offered: HashMap<String, String>,
    ls_done: bool,
    /// What the server acknowledged (and has not deleted since).
    caps: HashSet<String>,
    /// CAP REQs not yet answered.
    requests: usize,
    sasl_started: bool,
    /// CAP END sent, or the server registered jarvis anyway.
    done: bool,
}

impl Negotiation {
    pub fn new(network: &str, ircv3: bool, sasl: Option<SaslConfig>) -> Negotiation {
        Negotiation {
            network: network.to_string(),
            ircv3,
            sasl,
            offered: HashMap::new(),
            ls_done: false,
            caps: HashSet::new(),
            requests: 0,
            sasl_started: false,
            done: false,
        }
    }

    /// Whether the server acknowledged `cap`.
    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    /// 001 arrived: whatever is still unanswered no longer matters.
    pub fn registered(&mut self) {
        self.done = true;
    }

    /// A `CAP` line from the server; `Err` with the reason when the connection must end.
    pub fn on_cap(&mut self, msg: &Message) -> Result<Vec<Out>, String> {
        let list = || msg.params.last().map(String::as_str).unwrap_or("");
        let mut out = Vec::new();
        match msg.param(1).to_ascii_uppercase().as_str() {
            "LS" => {
                // `CAP * LS * :caps` means more lines follow.
                let more = msg.params.len() >= 4 && msg.param(2) == "*";
                for cap in list().split_whitespace() {
                    let (name, value) = cap.split_once('=').unwrap_or((cap, ""));
                    self.offered.insert(name.to_string(), value.to_string());
                }
                if !more && !self.ls_done {
                    self.ls_done = true;
                    out = self.request_caps()?;
                }
            }
            "ACK" => {
                for cap in list().split_whitespace() {
                    match cap.strip_prefix('-') {
                        Some(gone) => {
                            self.caps.remove(gone);
                        }
                        None => {
                            self.caps.insert(cap.to_string());
                        }
                    }
                }
                out = self.cap_answered()?;
            }
            "NAK" => {
                let refused: Vec<String> = list().split_whitespace().map(str::to_string).collect();
                if refused.len() > 1 && !self.done {
                    // A request is all or nothing: ask for each alone to get those we can.
                    for cap in refused {
                        self.requests += 1;
                        out.push(Out::Command("CAP", vec!["REQ".into(), cap]));
                    }
                } else {
                    tracing::info!(network = %self.network, caps = ?refused, "capability refused");
                }
                out.extend(self.cap_answered()?);
            }
            "DEL" => {
                for cap in list().split_whitespace() {
                    self.caps.remove(cap);
                    self.offered.remove(cap);
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn request_caps(&mut self) -> Result<Vec<Out>, String> {
        let mut wanted: Vec<&str> = Vec::new();
        if self.ircv3 {
            wanted.extend(
                WANTED_CAPS
                    .iter()
                    .copied()
                    .filter(|c| self.offered.contains_key(*c)),
            );
        }
        if let Some(sasl) = &self.sasl {
            let Some(mechs) = self.offered.get("sasl") else {
                return Err(
                    "SASL is configured, but the server offers no SASL (are services linked?)"
                        .into(),
                );
            };
            let mech = mechanism_name(sasl.mechanism);
            if !mechs.is_empty() && !mechs.split(',').any(|m| m.eq_ignore_ascii_case(mech)) {
                return Err(format!(
                    "the server does not offer SASL {mech} (it offers {mechs})"
                ));
            }
            wanted.push("sasl");
        }
        if wanted.is_empty() {
            return Ok(self.cap_end());
        }
        let list = wanted.join(" ");
        self.requests = 1;
        Ok(vec![Out::Command("CAP", vec!["REQ".into(), list])])
    }

    fn cap_answered(&mut self) -> Result<Vec<Out>, String> {
        if self.done {
            return Ok(vec![]);
        }
        self.requests = self.requests.saturating_sub(1);
        if self.requests > 0 {
            return Ok(vec![]);
        }
        match &self.sasl {
            Some(sasl) if !self.sasl_started => {
                if !self.caps.contains("sasl") {
                    return Err("the server refused the SASL capability".into());
                }
                self.sasl_started = true;
                let mech = mechanism_name(sasl.mechanism);
                Ok(vec![Out::Command("AUTHENTICATE", vec![mech.into()])])
            }
            Some(_) => Ok(vec![]),
            None => Ok(self.cap_end()),
        }
    }

    /// `AUTHENTICATE +`: the credentials, base64 in 400-byte pieces (a full last piece is
    /// followed by `+`). The password never reaches a log.
    pub fn sasl_response(&self) -> Vec<Out> {
        let Some(sasl) = &self.sasl else {
            return vec![];
        };
        let payload = match sasl.mechanism {
            SaslMechanism::Plain => {
                let account = sasl.account.clone().unwrap_or_default();
                let password = sasl.password.clone().unwrap_or_default();
                format!("{account}\0{account}\0{}", password.expose())
            }
            SaslMechanism::External => sasl.account.clone().unwrap_or_default(),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload.as_bytes());
        if encoded.is_empty() {
            return vec![Out::Line("AUTHENTICATE +".into())];
        }
        let mut out = Vec::new();
        let mut rest = encoded.as_str();
        loop {
            let (piece, tail) = rest.split_at(rest.len().min(400));
            out.push(Out::Line(format!("AUTHENTICATE {piece}")));
            rest = tail;
            if rest.is_empty() {
                if piece.len() == 400 {
                    out.push(Out::Line("AUTHENTICATE +".into()));
                }
                return out;
            }
        }
    }

    /// 903: SASL succeeded.
    pub fn sasl_succeeded(&mut self) -> Vec<Out> {
        self.cap_end()
    }

    fn cap_end(&mut self) -> Vec<Out> {
        if self.done {
            return vec![];
        }
        self.done = true;
        vec![Out::CapEnd]
    }
}

fn mechanism_name(m: SaslMechanism) -> &'static str {
    match m {
        SaslMechanism::Plain => "PLAIN",
        SaslMechanism::External => "EXTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(line: &str) -> Message {
        Message::parse(line).expect("a line")
    }

    fn req(list: &str) -> Out {
        Out::Command("CAP", vec!["REQ".into(), list.into()])
    }

    fn plain() -> Option<SaslConfig> {
        serde_saphyr::from_str("account: jarvis\npassword: hunter22\n").ok()
    }

    #[test]
    fn without_sasl_it_asks_for_what_is_offered_and_ends() {
        let mut n = Negotiation::new("irc", true, None);
        // A multi-line LS waits for its last line.
        let first = n.on_cap(&cap(":irc CAP * LS * :account-tag multi-prefix"));
        assert_eq!(first, Ok(vec![]));
        let asked = n.on_cap(&cap(":irc CAP * LS :echo-message sasl=PLAIN"));
        assert_eq!(asked, Ok(vec![req("account-tag echo-message")]));
        let end = n.on_cap(&cap(":irc CAP * ACK :account-tag echo-message"));
        assert_eq!(end, Ok(vec![Out::CapEnd]));
        assert!(n.has("echo-message") && n.has("account-tag") && !n.has("sasl"));
        // A late answer changes nothing once CAP END went out.
        assert_eq!(n.on_cap(&cap(":irc CAP * ACK :cap-notify")), Ok(vec![]));
    }

    #[test]
    fn nothing_wanted_means_cap_end_at_once() {
        let mut n = Negotiation::new("irc", false, None);
        assert_eq!(
            n.on_cap(&cap(":irc CAP * LS :account-tag")),
            Ok(vec![Out::CapEnd])
        );
        assert!(!n.has("account-tag"));
    }

    #[test]
    fn a_refused_request_is_asked_again_one_by_one() {
        let mut n = Negotiation::new("irc", true, None);
        n.on_cap(&cap(":irc CAP * LS :account-tag extended-join"))
            .expect("asks");
        let again = n.on_cap(&cap(":irc CAP * NAK :account-tag extended-join"));
        assert_eq!(again, Ok(vec![req("account-tag"), req("extended-join")]));
        assert_eq!(n.on_cap(&cap(":irc CAP * ACK :account-tag")), Ok(vec![]));
        assert_eq!(
            n.on_cap(&cap(":irc CAP * NAK :extended-join")),
            Ok(vec![Out::CapEnd])
        );
        assert!(n.has("account-tag") && !n.has("extended-join"));
        // cap-notify's DEL takes one away.
        n.on_cap(&cap(":irc CAP * DEL :account-tag")).expect("del");
        assert!(!n.has("account-tag"));
    }

    #[test]
    fn sasl_plain_runs_before_cap_end() {
        let mut n = Negotiation::new("irc", true, plain());
        let asked = n.on_cap(&cap(":irc CAP * LS :sasl=PLAIN,EXTERNAL account-tag"));
        assert_eq!(asked, Ok(vec![req("account-tag sasl")]));
        let auth = n.on_cap(&cap(":irc CAP * ACK :account-tag sasl"));
        assert_eq!(
            auth,
            Ok(vec![Out::Command("AUTHENTICATE", vec!["PLAIN".into()])])
        );
        // jarvis\0jarvis\0hunter22
        assert_eq!(
            n.sasl_response(),
            vec![Out::Line(
                "AUTHENTICATE amFydmlzAGphcnZpcwBodW50ZXIyMg==".into()
            )]
        );
        assert_eq!(n.sasl_succeeded(), vec![Out::CapEnd]);
        assert_eq!(n.sasl_succeeded(), vec![]);
    }

    #[test]
    fn sasl_the_server_cannot_do_ends_the_connection() {
        let mut n = Negotiation::new("irc", true, plain());
        assert!(
            n.on_cap(&cap(":irc CAP * LS :account-tag"))
                .expect_err("no sasl")
                .contains("offers no SASL")
        );
        let mut n = Negotiation::new("irc", true, plain());
        assert_eq!(
            n.on_cap(&cap(":irc CAP * LS :sasl=EXTERNAL")),
            Err("the server does not offer SASL PLAIN (it offers EXTERNAL)".into())
        );
        let mut n = Negotiation::new("irc", false, plain());
        n.on_cap(&cap(":irc CAP * LS :sasl")).expect("asks");
        assert_eq!(
            n.on_cap(&cap(":irc CAP * NAK :sasl")),
            Err("the server refused the SASL capability".into())
        );
    }

    #[test]
    fn long_credentials_go_in_400_byte_pieces() {
        let mut sasl = plain().expect("sasl");
        // 300 bytes of payload → exactly 400 base64 bytes: a `+` must follow.
        sasl.account = Some("a".repeat(148));
        sasl.password = serde_saphyr::from_str("xx").ok();
        let n = Negotiation::new("irc", true, Some(sasl));
        let out = n.sasl_response();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], Out::Line("AUTHENTICATE +".into()));
        let Out::Line(first) = &out[0] else {
            panic!("a line")
        };
        assert_eq!(first.len(), "AUTHENTICATE ".len() + 400);
    }
}
