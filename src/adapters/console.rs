//! The console: `jarvis shell`, the bot on this terminal as the operating-system user who
//! runs it (the identity `console:USER`, which `console: USER` grants and people name, and
//! `console: "*"` grants match whoever it is). Line editing
//! when stdin is a terminal, plain lines when it is piped; notifications are printed as they
//! happen; it ends when input ends and no run is queued or running.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

use crate::app::Application;
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

/// Runs the shell until input ends and the work it started is done and announced.
pub async fn run(app: Application) -> anyhow::Result<()> {
    let outlet = app.attach(Arc::new(Console::new()));
    let (tx, mut rx) = mpsc::channel::<String>(16);
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
    let user = os_user();
    let me = Target::direct(NETWORK, &user);
    while let Some(line) = rx.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let msg = Incoming {
            reply_to: me.clone(),
            nick: user.clone(),
            identities: vec![Identity::Console(user.clone())],
            identity_note: None,
            text: line,
        };
        if let Some(reply) = app.bot().handle(&msg).await {
            for text in reply.public.iter().chain(reply.private.iter()) {
                let _ = outlet.say(&me, "", text).await;
            }
        }
    }
    app.engine().wait_idle().await;
    app.wait_delivered(NETWORK).await;
    Ok(())
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
