//! Runs that no person types: webhooks (`webhook`, served at `POST /hooks/NAME` by the HTTP
//! adapter) and schedules (`schedule`). Each names what to run as a chat command line, parsed
//! by the chat language's own pure parser, and acts as a configured person of
//! `roles.people`: the bot carries the command out with that person's grants, writes the
//! audit row, and records the trigger with the run it queues.

pub mod config;
pub mod schedule;
pub mod webhook;

use crate::chat::bot::{Bot, Reply, Trigger};
use crate::chat::command::{self, Command};
use crate::chat::roles::Identity;
use crate::chat::{Incoming, Target};

/// The command a trigger's `run` names, for its `environment`. Only commands that queue
/// runs are taken. This is where an environment joins the command once environments exist
/// (issue #18, item 3): until then a trigger that names one is refused by check-config.
pub fn command_for(run: &str, environment: Option<&str>) -> Result<Command, String> {
    if let Some(env) = environment {
        return Err(format!(
            "environment '{}': environments are not configured in this build",
            crate::text::one_line(env, 40)
        ));
    }
    let cmd = command::parse(run).map_err(|e| e.to_string())?;
    match cmd {
        Command::Deploy { .. }
        | Command::Redeploy { .. }
        | Command::Destroy { .. }
        | Command::Run { .. } => Ok(cmd),
        other => Err(format!(
            "'{}' queues no run; say deploy, redeploy, destroy or run",
            other.name()
        )),
    }
}

/// Where a trigger's runs are announced: `NETWORK TARGET`, or nowhere — a target on no
/// network, whose runs record no origin, so that their notifications go to `chat.notify`
/// only.
pub fn announce_target(announce: Option<&str>, source: &str) -> Target {
    match announce.and_then(|a| a.split_once(' ')) {
        Some((network, name)) => {
            let name = name.trim();
            if name.starts_with('#')
                || name.contains('@') && !name.contains('/') && name.contains("conference")
            {
                Target::room(network, name)
            } else {
                Target::direct(network, name)
            }
        }
        None => Target::direct("", source),
    }
}

/// The origin a run of `target` records (none for a target on no network).
pub fn origin_of(target: &Target, nick: &str) -> String {
    if target.network.is_empty() {
        return String::new();
    }
    crate::chat::Origin {
        target: target.clone(),
        nick: nick.to_string(),
    }
    .encode()
}

/// A configured `announce`: `NETWORK TARGET`.
pub fn check_announce(announce: &Option<String>) -> Result<(), String> {
    match announce {
        Some(a) if a.split_whitespace().count() != 2 => {
            Err("announce: write 'NETWORK TARGET', e.g. 'libera #ops'".into())
        }
        _ => Ok(()),
    }
}

/// Carries out `cmd` for trigger source `source` (`hook.site`, `schedule.nightly`) as
/// `person`, announcing in `target`.
pub async fn fire(
    bot: &Bot,
    source: &str,
    person: &str,
    target: &Target,
    cmd: &Command,
    text: &str,
    trigger: &Trigger,
) -> Reply {
    let msg = Incoming {
        reply_to: target.clone(),
        nick: source.to_string(),
        identities: vec![Identity::Trigger {
            source: source.to_string(),
            person: person.to_string(),
        }],
        identity_note: None,
        text: text.to_string(),
    };
    bot.perform_triggered(&msg, cmd, text, trigger).await
}
