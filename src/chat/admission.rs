//! Fair shares of a network's attention: how many commands are handled at once, per
//! network and per sender, and how many lines one answer may queue.
//!
//! A network's place is held only while an answer is computed: sending is paced (a line a
//! second on IRC), and a long answer that held the place until it was out would let one
//! sender shut everyone else out. A sender's place is held until the answer is sent, so
//! one sender can queue at most `per_sender` answers of at most `reply_lines` lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::command::{Command, RunRef};

/// Why a command was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The network has `limit` commands being computed.
    Network(usize),
    /// This sender has `limit` commands being computed or sent.
    Sender(usize),
}

impl Busy {
    /// The one line the sender is answered with.
    pub fn line(self) -> String {
        match self {
            Busy::Network(n) => {
                format!("busy: {n} commands are being handled; try again in a moment")
            }
            Busy::Sender(n) => format!(
                "busy: you have {n} commands being handled; try again when their answers are out"
            ),
        }
    }
}

/// Commands in flight, bounded per network and per sender.
pub struct Admission {
    per_network: usize,
    per_sender: usize,
    networks: Mutex<HashMap<String, Arc<Semaphore>>>,
    senders: Arc<Mutex<HashMap<String, usize>>>,
}

/// A command's places. Drop [`Ticket::computed`] once the answer is known; the sender's
/// place goes when the [`SenderPlace`] is dropped, after sending.
pub struct Ticket {
    network: OwnedSemaphorePermit,
    sender: SenderPlace,
}

impl Ticket {
    /// Frees the network's place and keeps the sender's for the sending.
    pub fn computed(self) -> SenderPlace {
        drop(self.network);
        self.sender
    }
}

/// One of a sender's places; given back on drop.
pub struct SenderPlace {
    key: String,
    senders: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SenderPlace {
    fn drop(&mut self) {
        // A poisoned lock means a panic elsewhere already; the count is lost with it.
        if let Ok(mut senders) = self.senders.lock()
            && let Some(n) = senders.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                senders.remove(&self.key);
            }
        }
    }
}

impl Admission {
    pub fn new(per_network: usize, per_sender: usize) -> Admission {
        Admission {
            per_network: per_network.max(1),
            per_sender: per_sender.max(1),
            networks: Mutex::new(HashMap::new()),
            senders: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Places for one more command from `sender` (a stable key of who sent it) on
    /// `network`, or why not. The sender's limit is checked first, so a sender at their
    /// limit is told so rather than that the network is busy.
    pub fn admit(&self, network: &str, sender: &str) -> Result<Ticket, Busy> {
        let mut senders = self
            .senders
            .lock()
            .map_err(|_| Busy::Network(self.per_network))?;
        let held = senders.get(sender).copied().unwrap_or(0);
        if held >= self.per_sender {
            return Err(Busy::Sender(held));
        }
        let semaphore = {
            let mut networks = self
                .networks
                .lock()
                .map_err(|_| Busy::Network(self.per_network))?;
            networks
                .entry(network.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_network)))
                .clone()
        };
        let permit = semaphore
            .try_acquire_owned()
            .map_err(|_| Busy::Network(self.per_network))?;
        senders.insert(sender.to_string(), held + 1);
        Ok(Ticket {
            network: permit,
            sender: SenderPlace {
                key: sender.to_string(),
                senders: self.senders.clone(),
            },
        })
    }
}

/// Cuts an answer to at most `max` lines in all (public first, then private); when lines
/// are left out, the last kept line is replaced by `pointer`, which says where the rest is.
pub fn cut(public: &mut Vec<String>, private: &mut Vec<String>, max: usize, pointer: &str) {
    let max = max.max(2);
    let total = public.len() + private.len();
    if total <= max {
        return;
    }
    // Keep room for the pointer; it goes where the last kept line was.
    let keep = max - 1;
    let left_out = total - keep;
    let line = format!("({left_out} more lines not sent: {pointer})");
    if public.len() >= keep {
        public.truncate(keep);
        private.clear();
        public.push(line);
    } else {
        private.truncate(keep - public.len());
        private.push(line);
    }
}

/// Where the lines of a cut answer to `command` can be read: the run's web page when the
/// answer is a run's log and the page has a public address, else a smaller `log`.
pub fn rest_is_at(command: Option<&Command>, public_url: Option<&str>) -> String {
    match command {
        Some(Command::Log {
            run: RunRef::Id(id),
            ..
        }) => match public_url {
            Some(url) => format!("see {}/runs/{id}", url.trim_end_matches('/')),
            None => format!("say 'log #{id} N' with a smaller N"),
        },
        Some(Command::Log { run, .. }) => format!("say 'log {run} N' with a smaller N"),
        _ => "ask for less at a time".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_place_is_freed_when_computed_and_a_senders_when_sent() {
        let a = Admission::new(2, 2);
        let one = a.admit("irc", "alice").unwrap();
        let _two = a.admit("irc", "bob").unwrap();
        assert_eq!(a.admit("irc", "carol").err(), Some(Busy::Network(2)));
        // Other networks are unaffected.
        assert!(a.admit("xmpp", "carol").is_ok());
        let sending = one.computed();
        assert!(a.admit("irc", "carol").is_ok());
        drop(sending);
    }

    #[test]
    fn one_sender_is_held_to_their_share_and_others_are_not() {
        let a = Admission::new(8, 2);
        let one = a.admit("irc", "viewer").unwrap().computed();
        let _two = a.admit("irc", "viewer").unwrap().computed();
        assert_eq!(a.admit("irc", "viewer").err(), Some(Busy::Sender(2)));
        assert!(a.admit("irc", "alice").is_ok());
        drop(one);
        assert!(a.admit("irc", "viewer").is_ok());
    }

    #[test]
    fn the_rest_of_a_runs_log_is_on_its_web_page_when_there_is_one() {
        let log = |text: &str| crate::chat::command::parse(text).ok();
        let url = Some("https://jarvis.example.com/");
        assert_eq!(
            rest_is_at(log("log #12 200").as_ref(), url),
            "see https://jarvis.example.com/runs/12"
        );
        assert_eq!(
            rest_is_at(log("log #12 200").as_ref(), None),
            "say 'log #12 N' with a smaller N"
        );
        assert_eq!(
            rest_is_at(log("log web1 200").as_ref(), url),
            "say 'log web1 N' with a smaller N"
        );
    }

    #[test]
    fn a_long_answer_is_cut_and_says_where_the_rest_is() {
        let mut public = vec!["a".to_string(), "b".to_string()];
        let mut private: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        cut(&mut public, &mut private, 5, "see /runs/1");
        assert_eq!(public, ["a", "b"]);
        assert_eq!(private, ["0", "1", "(28 more lines not sent: see /runs/1)"]);

        let mut public: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        let mut private = vec![];
        cut(&mut public, &mut private, 3, "x");
        assert_eq!(public, ["0", "1", "(28 more lines not sent: x)"]);

        let mut public = vec!["a".to_string()];
        cut(&mut public, &mut private, 3, "x");
        assert_eq!(public, ["a"]);
    }
}
