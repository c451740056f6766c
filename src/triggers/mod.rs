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
use crate::chat::environments::EnvironmentsConfig;
use crate::chat::roles::Identity;
use crate::chat::{Incoming, Target};

/// The command a trigger's `run` names, for its `environment`. Only commands that queue
/// runs are taken. A trigger's `environment` must be one of `environments`, and joins a
/// `deploy`/`redeploy` as its `to ENV` (`run: "deploy cn=web1"`, `environment: staging`
/// runs `deploy cn=web1 to staging`), under the same promotion rule as in chat.
pub fn command_for(
    run: &str,
    environment: Option<&str>,
    environments: &EnvironmentsConfig,
) -> Result<Command, String> {
    let mut cmd = command::parse(run).map_err(|e| e.to_string())?;
    let asked = match &mut cmd {
        Command::Deploy { environment, .. } | Command::Redeploy { environment, .. } => {
            Some(environment)
        }
        Command::Destroy { .. } | Command::Run { .. } => None,
        // A promotion names its environment itself; a trigger's `environment` may only
        // repeat it.
        Command::Promote {
            environment: named, ..
        } => {
            known_environment(named, environments)?;
            return match environment {
                Some(env) if env != named => Err(format!(
                    "environment '{}': the command already says 'to {}'",
                    crate::text::one_line(env, 40),
                    crate::text::one_line(named, 40)
                )),
                _ => Ok(cmd),
            };
        }
        other => {
            return Err(format!(
                "'{}' queues no run; say deploy, redeploy, destroy, promote or run",
                other.name()
            ));
        }
    };
    let Some(env) = environment else {
        if let Some(Some(named)) = asked.as_deref() {
            known_environment(named, environments)?;
        }
        return Ok(cmd);
    };
    known_environment(env, environments)?;
    match asked {
        None => Err(format!(
            "environment '{}': '{}' runs on no environment; say deploy or redeploy",
            crate::text::one_line(env, 40),
            cmd.name()
        )),
        Some(Some(named)) if named != env => Err(format!(
            "environment '{}': the command already says 'to {}'",
            crate::text::one_line(env, 40),
            crate::text::one_line(named, 40)
        )),
        Some(slot) => {
            *slot = Some(env.to_string());
            Ok(cmd)
        }
    }
}

/// Ok if `env` is a configured environment, else one line naming the ones there are.
fn known_environment(env: &str, environments: &EnvironmentsConfig) -> Result<(), String> {
    if environments.get(env).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = environments.order.iter().map(|e| e.name.as_str()).collect();
    Err(if names.is_empty() {
        format!(
            "environment '{}': no environments are configured (environments.order)",
            crate::text::one_line(env, 40)
        )
    } else {
        format!(
            "environment '{}' is not configured; say one of {}",
            crate::text::one_line(env, 40),
            names.join(", ")
        )
    })
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
