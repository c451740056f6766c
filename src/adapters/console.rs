//! The console: `jarvis shell`, the bot on this terminal as the operating-system user who
//! runs it (the identity `console:USER`, which `console: USER` grants and people name, and
//! `console: "*"` grants match whoever it is). Line editing
//! when stdin is a terminal, plain lines when it is piped; notifications are printed as they
//! happen; it ends when input ends and no run is queued or running.

use std::io::{IsTerminal, Write};

use futures_util::future::BoxFuture;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

use crate::chat::roles::Identity;
use crate::chat::{ChatNetwork, Incoming, Rate, SendError, Target};

pub const NETWORK: &str = "console";

/// The operating-system user running jarvis: the password database's name for the real
/// user id, else `$USER`, else `uid-N`.
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| format!("uid-{uid}"))
}

pub struct Console {
    online: watch::Sender<bool>,
}

impl Console {
    pub fn new() -> Console {
        let (online, _) = watch::channel(true);
        Console { online }
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl ChatNetwork for Console {
    fn name(&self) -> &str {
        NETWORK
    }

    fn max_line_bytes(&self, _target: &Target) -> usize {
        4000
    }

    fn rate(&self) -> Rate {
        Rate {
            burst: 10_000,
            per_second: 10_000.0,
        }
    }

    fn send<'a>(
        &'a self,
        _target: &'a Target,
        line: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
                .and_then(|_| out.flush())
                .map_err(|e| SendError::Failed(e.to_string()))
        })
    }

    fn online(&self) -> watch::Receiver<bool> {
        self.online.subscribe()
    }
}

/// The lines typed (with line editing on a terminal) or piped in, until input ends.
pub fn read_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>(16);
    if std::io::stdin().is_terminal() {
        std::thread::spawn(move || read_terminal(tx));
    } else {
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// A line typed by `user`, as the bot takes it: said to jarvis directly, by `console:USER`.
pub fn incoming(user: &str, line: String) -> Incoming {
    Incoming {
        reply_to: Target::direct(NETWORK, user),
        nick: user.to_string(),
        identities: vec![Identity::Console(user.to_string())],
        identity_note: None,
        text: line,
    }
}

fn read_terminal(tx: mpsc::Sender<String>) {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "no line editor; reading plain lines");
            return;
        }
    };
    while let Ok(line) = editor.readline("jarvis> ") {
        let _ = editor.add_history_entry(line.as_str());
        if tx.blocking_send(line).is_err() {
            break;
        }
    }
}
