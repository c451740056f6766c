//! The bot: takes a message that addresses it, checks who may do what, carries the command
//! out through the engine and the store, writes the audit log, and answers in a few lines.
//! It speaks no protocol; adapters bring messages in and outlets take answers out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

mod hosts;
pub mod rollout;

use super::actions::ActionConfig;
use super::command::{self, COMMANDS, Command, ParseError, RunRef, Target};
use super::environments::{self, EnvironmentsConfig};
use super::groups::GroupConfig;
use super::policy::{Decision, Policy, Question, Verb};
use super::render;
use super::roles::{self, Identity, Role, RolesConfig};
use super::{Incoming, Origin, TargetKind};
use crate::clipboard::Clipboard;
use crate::engine::events::{EventBody, kind as event_kind};
use crate::engine::pipeline::{self, RunKind, Stage};
use crate::engine::{Engine, EngineError};
use crate::store::{AuditEntry, NewRun, Placement, Run, StoreError};

/// An answer: lines for where the message was said, and lines for the sender alone; what
/// came of the command, for adapters that answer with a status (HTTP); and the run it
/// queued, if any.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reply {
    pub public: Vec<String>,
    pub private: Vec<String>,
    pub verdict: Verdict,
    pub run: Option<i64>,
}

/// What came of a command, beyond its words.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    #[default]
    Done,
    /// The asker lacks the role (or is the requester of the run they approve).
    Forbidden,
    /// No such run or host.
    NotFound,
    /// The run or host is not in a state for this (busy host, run not waiting, …).
    Conflict,
    /// The request itself is wrong: a design that does not load, no such pipeline, …
    Invalid,
    /// jarvis is stopping.
    Unavailable,
    /// Something inside failed (the database); the detail is in the log.
    Failed,
}

impl Reply {
    fn line(text: impl Into<String>) -> Reply {
        Reply {
            public: vec![text.into()],
            ..Reply::default()
        }
    }

    fn lines(lines: Vec<String>) -> Reply {
        Reply {
            public: lines,
            ..Reply::default()
        }
    }

    fn with(mut self, verdict: Verdict) -> Reply {
        self.verdict = verdict;
        self
    }
}

/// What the bot needs of the configuration, built by the application.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// The bot's nick, which users address it by.
    pub name: String,
    pub roles: RolesConfig,
    pub pipelines: BTreeMap<String, pipeline::PipelineConfig>,
    /// The timeout of a stage that names none.
    pub default_timeout: Duration,
    /// Lines an answer in a room may have; the rest goes privately.
    pub channel_lines: usize,
    /// Whether designs come from LDAP (a host with no run yet is then `cn=HOST`).
    pub ldap_designs: bool,
    /// The named actions of `run ACTION on HOST`.
    pub actions: BTreeMap<String, ActionConfig>,
    /// The configured schedules, name → what `schedules` says of them ("0 3 * * *
    /// Europe/Berlin: redeploy web1"); their firings are in the store.
    pub schedules: BTreeMap<String, String>,
    /// The environments in promotion order.
    pub environments: EnvironmentsConfig,
    /// The host groups that rollouts go over.
    pub groups: BTreeMap<String, GroupConfig>,
    /// What `orphans` asks, when the application can ask providers.
    pub orphans: Option<OrphanLister>,
}

/// Lists what the configured providers hold under jarvis's tags that no host record names,
/// one line each, or says in one line why it could not. The application supplies it: the
/// chat side knows no provider and no worker's settings.
#[derive(Clone)]
pub struct OrphanLister(
    pub  Arc<
        dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Vec<String>, String>>
            + Send
            + Sync,
    >,
);

impl std::fmt::Debug for OrphanLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrphanLister")
    }
}

/// What started a run other than a person's command: a webhook delivery or a schedule. It
/// is kept in the run's clipboard (`jarvis.trigger`) and told in the run's announcement
/// ("deploy #51 of web1 for acme/site@3f2a1c0 by push").
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Trigger {
    /// `push`, `tag`, `release`, `schedule NAME`.
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The branch or tag (`refs/heads/main`, `refs/tags/v1.2`).
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Trigger {
    /// `deploy #51 of web1 for acme/site@3f2a1c0 by push`
    pub fn announcement(&self, kind: &str, id: i64, host: &str) -> String {
        let mut line = format!("{kind} #{id} of {host}");
        if let Some(repository) = &self.repository {
            line.push_str(&format!(" for {repository}"));
            if let Some(commit) = &self.commit {
                line.push('@');
                line.extend(commit.chars().take(7));
            }
        }
        line.push_str(&format!(" by {}", self.by));
        line
    }
}

pub struct Bot {
    settings: Arc<BotConfig>,
    engine: Engine,
    designs: Arc<jarvis_design::DesignSources>,
    /// Rung when a rollout was started, cancelled or resumed.
    rollouts: tokio::sync::Notify,
}

impl Bot {
    pub fn new(
        settings: Arc<BotConfig>,
        engine: Engine,
        designs: Arc<jarvis_design::DesignSources>,
    ) -> Bot {
        Bot {
            settings,
            engine,
            designs,
            rollouts: tokio::sync::Notify::new(),
        }
    }

    pub fn nick(&self) -> &str {
        &self.settings.name
    }

    /// Answers a message, or `None` when it was not for jarvis.
    pub async fn handle(&self, msg: &Incoming) -> Option<Reply> {
        let direct = msg.reply_to.kind == TargetKind::Direct;
        let text = command::addressed(&msg.text, &self.settings.name, direct)?;
        let reply = match command::parse(text) {
            Ok(cmd) => self.run_command(msg, &cmd, text, None).await,
            // A lone `!` in a room is noise (or meant for another bot): say nothing, as other
            // bots do. Addressed by name with nothing after it, jarvis answers.
            Err(ParseError::Empty) if !direct && msg.text.trim_start().starts_with('!') => {
                return None;
            }
            Err(ParseError::Empty) if !direct => Reply::line(ParseError::Empty.to_string()),
            Err(e) => Reply::line(e.to_string()),
        };
        Some(self.fit_for_room(msg, reply))
    }

    /// In a room, only a few lines: the rest goes to the sender directly.
    fn fit_for_room(&self, msg: &Incoming, mut reply: Reply) -> Reply {
        let keep = self.settings.channel_lines.max(1);
        if msg.reply_to.kind == TargetKind::Room && reply.public.len() > keep {
            let rest = reply.public.split_off(keep - 1);
            reply
                .public
                .push(format!("({} more lines sent to you privately)", rest.len()));
            let mut private = rest;
            private.append(&mut reply.private);
            reply.private = private;
        }
        reply
    }

    /// Carries out a command already parsed (the HTTP adapter's entry point): the same role
    /// checks, refusals and audit rows as a chat line `text` that says it.
    pub async fn perform(&self, msg: &Incoming, cmd: &Command, text: &str) -> Reply {
        self.run_command(msg, cmd, text, None).await
    }

    /// Carries out a command that a webhook or a schedule gives, as the person it acts as
    /// (in `msg`): the same checks and audit rows, and the run it queues records `trigger`
    /// and is announced with it.
    pub async fn perform_triggered(
        &self,
        msg: &Incoming,
        cmd: &Command,
        text: &str,
        trigger: &Trigger,
    ) -> Reply {
        self.run_command(msg, cmd, text, Some(trigger)).await
    }

    async fn run_command(
        &self,
        msg: &Incoming,
        cmd: &Command,
        text: &str,
        trigger: Option<&Trigger>,
    ) -> Reply {
        let roles = self.settings.roles.roles_of(&msg.identities);
        if let Decision::Refused(why) = self.decide(msg, Verb::Command(cmd)) {
            if cmd.changes_state() {
                let needed = cmd.required_role().map(Role::as_str).unwrap_or("a role");
                self.audit(msg, text, &format!("refused: needs {needed}"))
                    .await;
            }
            return Reply::line(why).with(Verdict::Forbidden);
        }
        let reply = match self.execute(msg, cmd, &roles, trigger).await {
            Ok(r) => r,
            Err(e) => {
                match &e {
                    BotError::User(_) | BotError::NotFound(_) | BotError::Promotion(_) => {
                        tracing::debug!(command = cmd.name(), error = %e, "command refused")
                    }
                    _ => tracing::error!(command = cmd.name(), error = %e, "command failed"),
                }
                Reply::line(format!("{} failed: {}", cmd.name(), user_error(&e)))
                    .with(verdict_of(&e))
            }
        };
        if cmd.changes_state() {
            let outcome = reply.public.first().cloned().unwrap_or_default();
            self.audit(msg, text, &outcome).await;
        }
        reply
    }

    /// Who asks, and where answers about what they queue go.
    fn asker(&self, msg: &Incoming) -> Asker {
        Asker {
            who: self.who(msg),
            // A webhook or schedule with nowhere to announce asks from no network: its runs
            // record no origin, and their notifications go to `chat.notify` only.
            origin: if msg.reply_to.network.is_empty() {
                String::new()
            } else {
                Origin {
                    target: msg.reply_to.clone(),
                    nick: msg.nick.clone(),
                }
                .encode()
            },
        }
    }

    /// Who sent `msg`: the verified identity that speaks for them and the person it is.
    fn who(&self, msg: &Incoming) -> Who {
        Who {
            key: requester_key(msg),
            person: self
                .settings
                .roles
                .person_of(&msg.identities)
                .map(str::to_string),
        }
    }

    async fn audit(&self, msg: &Incoming, text: &str, outcome: &str) {
        let who = self.who(msg);
        let entry = AuditEntry {
            identity: who.key,
            person: who.person,
            network: msg.reply_to.network.clone(),
            channel: msg.reply_to.name.clone(),
            command: crate::text::one_line(text, 400),
            outcome: crate::text::one_line(outcome, 400),
        };
        if let Err(e) = self.engine.store().audit(&entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    async fn execute(
        &self,
        msg: &Incoming,
        cmd: &Command,
        roles: &[Role],
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        match cmd {
            Command::Deploy {
                target: Target::Single(reference),
                environment,
            } => {
                let asker = self.asker(msg);
                let at = Placing::new(environment.as_deref(), None).by(trigger);
                self.queue(&asker, RunKind::Deploy, reference, None, &at)
                    .await
            }
            Command::Redeploy {
                target: Target::Single(host),
                environment,
            } => {
                let at = Placing::new(environment.as_deref(), None).by(trigger);
                self.queue_for_host(&self.asker(msg), RunKind::Redeploy, host, &at)
                    .await
            }
            Command::Destroy {
                target: Target::Single(host),
            } => {
                let at = Placing::new(None, None).by(trigger);
                self.queue_for_host(&self.asker(msg), RunKind::Destroy, host, &at)
                    .await
            }
            Command::Deploy {
                target: Target::Group(group),
                environment,
            } => {
                self.start_rollout(
                    msg,
                    RunKind::Deploy,
                    group,
                    environment.as_deref(),
                    None,
                    trigger,
                )
                .await
            }
            Command::Redeploy {
                target: Target::Group(group),
                environment,
            } => {
                self.start_rollout(
                    msg,
                    RunKind::Redeploy,
                    group,
                    environment.as_deref(),
                    None,
                    trigger,
                )
                .await
            }
            Command::Destroy {
                target: Target::Group(group),
            } => {
                self.start_rollout(msg, RunKind::Destroy, group, None, None, trigger)
                    .await
            }
            Command::Promote { host, environment } => {
                self.promote(msg, host, environment, trigger).await
            }
            Command::Status {
                run: Some(r @ (RunRef::Rollout(_) | RunRef::Group(_))),
            } => self.rollout_status(r).await,
            Command::Cancel {
                run: r @ (RunRef::Rollout(_) | RunRef::Group(_)),
            } => self.cancel_rollout(msg, r).await,
            Command::Resume {
                run: r @ (RunRef::Rollout(_) | RunRef::Group(_)),
            } => self.resume_rollout(msg, r).await,
            Command::Run {
                action,
                target: Target::Single(host),
            } => self.run_action(msg, action, host, trigger).await,
            Command::Run {
                action,
                target: Target::Group(group),
            } => self.start_action_rollout(msg, action, group, trigger).await,
            Command::Schedules => self.schedules().await,
            Command::Hosts { filter } => self.hosts_reply(filter.as_deref()).await,
            Command::Rollback { host, to } => {
                let at = Placing::new(None, None).by(trigger);
                self.rollback(&self.asker(msg), host, *to, &at).await
            }
            Command::Host { host } => self.host_reply(host).await,
            Command::Orphans => match &self.settings.orphans {
                Some(lister) => (lister.0)().await.map(Reply::lines).map_err(BotError::User),
                None => Ok(Reply::line(
                    "no provider can be asked from here; run 'jarvis hosts --orphans'",
                )),
            },
            Command::Plan { reference } => self.plan(reference).await,
            Command::Status { run: Some(r) } => self.status(Some(r)).await,
            Command::Status { run: None } => {
                // Three reads on the pool's connections at once: a reply waits for the
                // slowest of them rather than for their sum.
                let admin = roles.contains(&Role::Admin);
                let (reply, rollouts, undeliverable) =
                    tokio::join!(self.status(None), self.open_rollout_lines(), async {
                        if admin {
                            self.undeliverable_line().await
                        } else {
                            None
                        }
                    });
                let mut reply = reply?;
                reply.public.extend(rollouts?);
                reply.public.extend(undeliverable);
                Ok(reply)
            }
            Command::History { host, count } => {
                let runs = self.engine.store().history(host.as_deref(), *count).await?;
                if runs.is_empty() {
                    return Ok(Reply::line("no runs yet"));
                }
                Ok(Reply::lines(
                    runs.iter().map(render::history_line).collect(),
                ))
            }
            Command::Log { run, count } => {
                let run = self.find_run(run).await?;
                let lines = self.engine.store().log_tail(run.id, *count).await?;
                if lines.is_empty() {
                    return Ok(Reply::line(format!("run #{} has no log lines yet", run.id)));
                }
                let out = lines
                    .into_iter()
                    .map(|(stage, line)| match stage {
                        Some(s) => format!("[{s}] {line}"),
                        None => line,
                    })
                    .collect();
                Ok(Reply::lines(out))
            }
            Command::Cancel { run } => {
                let run = self.find_run(run).await?;
                self.engine.cancel(run.id, &self.who(msg).label()).await?;
                let left = crate::clipboard::made_summary(&run.clipboard)
                    .map(|made| {
                        format!(
                            "; it leaves behind what it made: {made} (say 'destroy {}' to remove it)",
                            run.host
                        )
                    })
                    .unwrap_or_default();
                Ok(Reply::line(format!(
                    "cancelling {}{left}",
                    render::run_name(&run.host, run.kind.as_str(), run.id)
                )))
            }
            Command::Resume { run } => {
                let run = self.find_run(run).await?;
                // Resuming an action runs it: the same right as starting it.
                if run.kind == RunKind::Action
                    && let Err(refusal) = self.allowed_action(msg, &run.pipeline)?
                {
                    return Ok(refusal);
                }
                let run = self.engine.resume(run.id).await?;
                let name = render::run_name(&run.host, run.kind.as_str(), run.id);
                if run.phase == crate::store::Phase::OnFailure {
                    let task = run
                        .on_failure
                        .get(run.next_stage)
                        .map(|s| s.task.as_str())
                        .unwrap_or("");
                    return Ok(Reply::line(format!(
                        "resuming {name}'s undo at on_failure stage {}/{} {task}",
                        run.next_stage + 1,
                        run.on_failure.len()
                    )));
                }
                let at = match run.state {
                    crate::store::RunState::Interrupted => run.next_stage,
                    _ => run.failed_stage.unwrap_or(run.next_stage),
                };
                let task = run.stages.get(at).map(|s| s.task.as_str()).unwrap_or("");
                Ok(Reply::line(format!(
                    "resuming {name} at stage {}/{} {task}",
                    at + 1,
                    run.stages.len()
                )))
            }
            Command::Retry { run } => self.retry(msg, run).await,
            Command::Approve { run } => {
                let run = match run {
                    RunRef::Host(host) => return self.approve_by_host(host).await,
                    other => self.find_run(other).await?,
                };
                if run.state != crate::store::RunState::WaitingApproval {
                    return Ok(Reply::line(format!(
                        "run #{} is {}, not waiting for approval",
                        run.id,
                        run.state.as_str().replace('_', " ")
                    ))
                    .with(Verdict::Conflict));
                }
                let asked_by = run
                    .initial_clipboard
                    .get("jarvis")
                    .and_then(|j| j.get("person"))
                    .and_then(|p| p.as_str());
                let verb = Verb::Approve {
                    run: run.id,
                    requester: &run.requester,
                    person: asked_by,
                };
                if let Decision::Refused(why) = self.decide(msg, verb) {
                    return Ok(Reply::line(why).with(Verdict::Forbidden));
                }
                let run = self.engine.approve(run.id, &self.who(msg).label()).await?;
                let task = run
                    .stages
                    .get(run.next_stage)
                    .map(|s| s.task.as_str())
                    .unwrap_or("");
                Ok(Reply::line(format!(
                    "approved {} stage {}/{} {task}",
                    render::run_name(&run.host, run.kind.as_str(), run.id),
                    run.next_stage + 1,
                    run.stages.len()
                )))
            }
            Command::Trust {
                host,
                algorithm,
                fingerprint,
            } => {
                let by = msg
                    .identities
                    .first()
                    .map(|i| i.key())
                    .unwrap_or_else(|| format!("unverified:{}", msg.nick));
                let key = crate::store::HostKey {
                    algorithm: algorithm.clone(),
                    fingerprint: fingerprint.clone(),
                };
                let before = self.engine.store().host_keys(host).await?;
                self.engine.store().trust_host_key(host, &key, &by).await?;
                let replaced = if before.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it replaces {})",
                        before
                            .iter()
                            .map(|p| format!("{} {}", p.key.algorithm, p.key.fingerprint))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                Ok(Reply::line(format!(
                    "{host} is now pinned to {algorithm} {fingerprint}{replaced}; SSH stages of its runs accept only that key"
                )))
            }
            Command::Token { action } => {
                let by = self.who(msg).key;
                crate::chat::tokens::command(self.engine.store(), &self.settings.roles, action, &by)
                    .await
                    .map(|(public, private)| Reply {
                        public,
                        private,
                        ..Reply::default()
                    })
                    .map_err(|e| match e {
                        crate::chat::tokens::TokenError::User(t) => BotError::User(t),
                        crate::chat::tokens::TokenError::NotFound(t) => BotError::NotFound(t),
                        crate::chat::tokens::TokenError::Store(e) => BotError::Store(e),
                    })
            }
            Command::Pipelines => Ok(Reply::lines(self.pipelines())),
            Command::Whoami => {
                let person = self.settings.roles.person_of(&msg.identities);
                let who = match (roles::principal(&msg.identities), &msg.identity_note) {
                    (Some(id), _) => match person {
                        Some(p) => format!("{id} (person {p})"),
                        None => id.to_string(),
                    },
                    (None, Some(note)) => note.clone(),
                    (None, None) => format!("{} (not logged in to an account)", msg.nick),
                };
                let roles = if roles.is_empty() {
                    "none".to_string()
                } else {
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Ok(Reply::line(format!("you are {who}; roles: {roles}")))
            }
            Command::Help { command } => Ok(help(command.as_deref(), roles, &self.settings.name)),
        }
    }

    /// `approve HOST` names no run, and the run a host has may change between the notice an
    /// approver read and their answer (a gated deploy cancelled and replaced by a destroy):
    /// the answer names the run that waits, and asks for its id.
    async fn approve_by_host(&self, host: &str) -> Result<Reply, BotError> {
        let store = self.engine.store();
        match store.active_run_for_host(host).await? {
            Some(run) if run.state == crate::store::RunState::WaitingApproval => {
                Ok(Reply::line(format!(
                    "{host}'s run waiting for approval is {} asked by {}; to approve that one, say 'approve #{}'",
                    render::run_name(&run.host, run.kind.as_str(), run.id),
                    render::requester_display(&run.requester),
                    run.id
                ))
                .with(Verdict::Conflict))
            }
            Some(run) => Ok(Reply::line(format!(
                "{host}'s run #{} is {}, not waiting for approval",
                run.id,
                run.state.as_str().replace('_', " ")
            ))
            .with(Verdict::Conflict)),
            None => Err(BotError::NotFound(format!(
                "{host} has no run waiting for approval"
            ))),
        }
    }

    async fn find_run(&self, r: &RunRef) -> Result<Run, BotError> {
        let store = self.engine.store();
        let found = match r {
            RunRef::Id(id) => store.run(*id).await?,
            RunRef::Host(host) => match store.active_run_for_host(host).await? {
                Some(run) => Some(run),
                None => store.last_run_for_host(host).await?,
            },
            RunRef::Rollout(_) | RunRef::Group(_) => {
                return Err(BotError::User(format!(
                    "{r} is a rollout; say 'status {r}', 'cancel {r}' or 'resume {r}'"
                )));
            }
        };
        found.ok_or_else(|| {
            BotError::NotFound(match r {
                RunRef::Id(id) => format!("there is no run #{id}"),
                RunRef::Host(h) => format!("{h} has no runs"),
                other => format!("there is no {other}"),
            })
        })
    }

    /// For admins under `status`: notifications set aside as undeliverable, if any.
    async fn undeliverable_line(&self) -> Option<String> {
        let store = self.engine.store();
        let n = store.count_undeliverable().await.ok().filter(|n| *n > 0)?;
        let last = store.undeliverable(1).await.ok()?.into_iter().next()?;
        let target = super::Target::from_outbox(&last.network, &last.target);
        Some(format!(
            "{} undeliverable; the last, to {} on {} after {} tries: {}",
            render::count(n, "notification"),
            target.name,
            last.network,
            last.attempts,
            crate::text::one_line(&last.reason, 120)
        ))
    }

    async fn status(&self, run: Option<&RunRef>) -> Result<Reply, BotError> {
        match run {
            Some(r) => {
                let run = match (self.find_run(r).await, r) {
                    (Ok(run), _) => run,
                    // Not a failure of `status`: the answer is that there is nothing yet.
                    (Err(BotError::NotFound(_)), RunRef::Host(host)) => {
                        return Ok(Reply::line(format!("{host} has no runs yet")));
                    }
                    (Err(e), _) => return Err(e),
                };
                let live = self.engine.live(run.id);
                Ok(Reply::line(render::status_line(
                    &run,
                    live.as_ref().and_then(|l| l.progress.as_deref()),
                )))
            }
            None => {
                let runs = self.engine.store().active_runs().await?;
                if runs.is_empty() {
                    return Ok(Reply::line("nothing is running"));
                }
                Ok(Reply::lines(
                    runs.iter()
                        .map(|run| {
                            let live = self.engine.live(run.id);
                            render::status_line(
                                run,
                                live.as_ref().and_then(|l| l.progress.as_deref()),
                            )
                        })
                        .collect(),
                ))
            }
        }
    }

    /// Loads a design and picks its pipeline: what `deploy` and `plan` share.
    async fn design_and_pipeline(
        &self,
        kind: RunKind,
        reference: &str,
    ) -> Result<(jarvis_design::Design, String), BotError> {
        let design = self
            .designs
            .load(reference)
            .await
            .map_err(|e| BotError::User(e.to_string()))?;
        let (name, _) = pipeline::select(
            &self.settings.pipelines,
            kind,
            &design.provider,
            design.pipeline.as_deref(),
        )
        .map_err(BotError::User)?;
        Ok((design, name.to_string()))
    }

    /// `deploy REF` (and a rollout's or promotion's deploy): the design `reference` loads,
    /// on its host's record when jarvis has one.
    async fn queue(
        &self,
        asker: &Asker,
        kind: RunKind,
        reference: &str,
        retry_of: Option<i64>,
        at: &Placing<'_>,
    ) -> Result<Reply, BotError> {
        let design = self
            .designs
            .load(reference)
            .await
            .map_err(|e| BotError::User(e.to_string()))?;
        let record = self.standing_record(&design.hostname).await?;
        let subject = hosts::Subject {
            host: design.hostname,
            record,
            reference: reference.to_string(),
            provider: design.provider,
            pipeline: design.pipeline,
            document: design.document,
            note: None,
        };
        self.queue_subject(asker, kind, subject, retry_of, at).await
    }

    /// Queues a run of `kind` on `subject`: the environment is its record's (a command's or
    /// design's other one is refused, unless this is the promotion that moves it), and the
    /// record's resources go on the clipboard.
    async fn queue_subject(
        &self,
        asker: &Asker,
        kind: RunKind,
        subject: hosts::Subject,
        retry_of: Option<i64>,
        at: &Placing<'_>,
    ) -> Result<Reply, BotError> {
        let (pipeline_name, pipeline_config) = pipeline::select(
            &self.settings.pipelines,
            kind,
            &subject.provider,
            subject.pipeline.as_deref(),
        )
        .map_err(BotError::User)?;
        let pipeline_name = pipeline_name.to_string();
        let record = subject.record.as_ref();
        let chosen = self
            .settings
            .environments
            .choose(at.environment, &subject.document)
            .map_err(BotError::User)?;
        let environment = match record.map(|r| r.environment.clone()) {
            Some(Some(recorded)) if !at.promotion => {
                if let Some(other) = chosen.filter(|c| *c != recorded) {
                    return Err(BotError::Promotion(format!(
                        "{} is recorded in {recorded}, not {other}; a host changes environment only by 'promote {} to {other}'",
                        subject.host, subject.host
                    )));
                }
                Some(recorded)
            }
            _ => chosen,
        };
        let mut notes: Vec<String> = subject.note.iter().cloned().collect();
        if kind == RunKind::Redeploy
            && let Some(record) = record
        {
            if let Some(refusal) = hosts::placement_refusal(
                record,
                &subject.document,
                &pipeline_name,
                &pipeline_config.stages,
            ) {
                return Err(BotError::User(refusal));
            }
            notes.extend(hosts::move_note(record, &subject.document));
        }
        let placement = Placement {
            environment,
            design_digest: Some(self.settings.environments.digest(&subject.document)),
            rollout: at.rollout,
        };
        let mut clipboard = initial_clipboard(
            &hosts::with_record(&subject.document, record),
            &subject.host,
            kind,
            &pipeline_name,
            &asker.who,
            &subject.reference,
            at.trigger,
        );
        hosts::mark_record(&mut clipboard, record);
        let mut reply = self
            .submit(
                asker,
                kind,
                &subject.host,
                &pipeline_name,
                &subject.reference,
                clipboard,
                retry_of,
                placement,
                at.trigger,
            )
            .await?;
        if reply.verdict == Verdict::Done
            && !notes.is_empty()
            && let Some(first) = reply.public.first_mut()
        {
            first.push_str(&format!("; {}", notes.join("; ")));
        }
        Ok(reply)
    }

    #[allow(clippy::too_many_arguments)]
    async fn submit(
        &self,
        asker: &Asker,
        kind: RunKind,
        host: &str,
        pipeline_name: &str,
        reference: &str,
        mut clipboard: Clipboard,
        retry_of: Option<i64>,
        placement: Placement,
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        let Some((mut stages, on_failure, promote_within)) =
            self.frozen_stages(kind, pipeline_name)
        else {
            let what = if kind == RunKind::Action {
                "action"
            } else {
                "pipeline"
            };
            return Err(BotError::User(format!(
                "{what} '{pipeline_name}' is no longer configured"
            )));
        };
        if let Some(env) = &placement.environment {
            if let Some(digest) = &placement.design_digest
                && let Err(refusal) = environments::check_promotion(
                    self.engine.store(),
                    &self.settings.environments,
                    promote_within,
                    env,
                    host,
                    digest,
                )
                .await?
            {
                return Err(BotError::Promotion(refusal));
            }
            // An environment that wants approval holds every run before its first stage.
            if self
                .settings
                .environments
                .get(env)
                .is_some_and(|e| e.approval)
                && let Some(first) = stages.first_mut()
            {
                first.approval = true;
            }
            if let Some(serde_json::Value::Object(jarvis)) = clipboard.get_mut("jarvis") {
                jarvis.insert("environment".into(), json!(env));
            }
        }
        let count = stages.len();
        let new = NewRun {
            host: host.to_string(),
            kind,
            pipeline: pipeline_name.to_string(),
            stages,
            on_failure,
            design_ref: reference.to_string(),
            requester: asker.who.key.clone(),
            origin: asker.origin.clone(),
            clipboard,
            retry_of,
            placement,
        };
        let origin = new.origin.clone();
        match self.engine.submit(new).await {
            Ok(id) => {
                if let Some(trigger) = trigger {
                    let text = trigger.announcement(kind.as_str(), id, host);
                    self.announce(id, host, &origin, text).await;
                }
                Ok(Reply {
                    run: Some(id),
                    ..Reply::line(format!(
                        "{} #{id} of {host} queued ({pipeline_name} pipeline, {})",
                        kind.as_str(),
                        render::count(count, "stage")
                    ))
                })
            }
            Err(EngineError::Store(StoreError::HostBusy { host, run })) => {
                let state = match self.engine.store().run(run).await? {
                    Some(r) => r.state.as_str().replace('_', " "),
                    None => "active".into(),
                };
                Ok(Reply {
                    run: Some(run),
                    ..Reply::line(format!(
                        "{host} already has run #{run} ({state}); say 'status #{run}', or 'cancel #{run}' first"
                    ))
                    .with(Verdict::Conflict)
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `redeploy` and `destroy` of a known host: through its record (see [`hosts`]).
    async fn queue_for_host(
        &self,
        asker: &Asker,
        kind: RunKind,
        host: &str,
        at: &Placing<'_>,
    ) -> Result<Reply, BotError> {
        let subject = self.subject(host, kind).await?;
        self.queue_subject(asker, kind, subject, None, at).await
    }

    /// The design a known host was last deployed from, else its LDAP entry when LDAP is
    /// configured, else a design of that name.
    async fn design_of_host(&self, host: &str) -> Result<String, BotError> {
        Ok(match self.engine.store().last_run_for_host(host).await? {
            Some(run) => run.design_ref,
            None if self.settings.ldap_designs => format!("cn={host}"),
            None => host.to_string(),
        })
    }

    /// The stages a run of `kind` freezes: the named pipeline's, or the named action's.
    /// Also the pipeline's `promote_within` (an action has none).
    fn frozen_stages(&self, kind: RunKind, name: &str) -> Option<FrozenStages> {
        let timeout = self.settings.default_timeout;
        if kind == RunKind::Action {
            self.settings.actions.get(name).map(|a| {
                let (stages, on_failure) = a.frozen_stages(timeout);
                (stages, on_failure, None)
            })
        } else {
            self.settings.pipelines.get(name).map(|p| {
                let (stages, on_failure) = p.frozen_stages(timeout);
                (stages, on_failure, p.promote_within)
            })
        }
    }

    /// Tells the channel of `origin` (an encoded [`Origin`]) about run `run`, from a webhook
    /// or a schedule: what queued it ("deploy #51 of web1 for acme/site@3f2a1c0 by push"),
    /// or why a firing queued nothing ("schedule nightly skipped: web1 already has run #12").
    pub async fn announce(&self, run: i64, host: &str, origin: &str, text: String) {
        let body = EventBody {
            run,
            host: host.to_string(),
            origin: origin.to_string(),
            ..EventBody::default()
        }
        .text(text);
        let store = self.engine.store();
        match store
            .add_events(&[body.into_event(event_kind::TRIGGERED)])
            .await
        {
            Ok(()) => self.engine.events_written().notify_one(),
            Err(e) => tracing::error!(run, error = %e, "cannot store a trigger's announcement"),
        }
    }

    /// Asks the policy (the one place that decides) about `verb` from `msg`'s sender.
    fn decide(&self, msg: &Incoming, verb: Verb) -> Decision {
        let policy = Policy {
            roles: &self.settings.roles,
            actions: &self.settings.actions,
        };
        policy.decide(&Question {
            who: &msg.identities,
            unverified: msg.identity_note.as_deref(),
            verb,
        })
    }

    /// The configured action `name`, if the policy lets the asker run it; else the refusal
    /// to answer with.
    fn allowed_action(
        &self,
        msg: &Incoming,
        name: &str,
    ) -> Result<Result<&crate::chat::actions::ActionConfig, Reply>, BotError> {
        match self.decide(msg, Verb::Action(name)) {
            Decision::Allowed => self
                .settings
                .actions
                .get(name)
                .map(Ok)
                .ok_or_else(|| BotError::NotFound(format!("there is no action '{name}'"))),
            Decision::Unknown(why) => Err(BotError::NotFound(why)),
            Decision::Refused(why) => Ok(Err(Reply::line(why).with(Verdict::Forbidden))),
        }
    }

    /// Queues the action `name` on `host`'s design (the asker's right to it checked
    /// already), as a child of `rollout` when one runs it.
    async fn queue_action(
        &self,
        asker: &Asker,
        name: &str,
        host: &str,
        rollout: Option<i64>,
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        let subject = self.subject(host, RunKind::Action).await?;
        let record = subject.record.as_ref();
        let reference = subject.reference.clone();
        let mut clipboard = initial_clipboard(
            &hosts::with_record(&subject.document, record),
            host,
            RunKind::Action,
            name,
            &asker.who,
            &reference,
            trigger,
        );
        hosts::mark_record(&mut clipboard, record);
        // An action is no deployment: it has no environment and no promotion rule.
        let placement = Placement {
            environment: None,
            design_digest: None,
            rollout,
        };
        self.submit(
            asker,
            RunKind::Action,
            host,
            name,
            &reference,
            clipboard,
            None,
            placement,
            trigger,
        )
        .await
    }

    /// `run ACTION on HOST`: the action's stages on the host's design, if the asker holds
    /// the action's role or a grant of it; waits up to the action's `wait` and answers with
    /// the last lines of the run's log.
    async fn run_action(
        &self,
        msg: &Incoming,
        name: &str,
        host: &str,
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        let action = match self.allowed_action(msg, name)? {
            Ok(action) => action,
            Err(refusal) => return Ok(refusal),
        };
        let asker = self.asker(msg);
        let queued = self.queue_action(&asker, name, host, None, trigger).await?;
        let Some(id) = queued.run.filter(|_| queued.verdict == Verdict::Done) else {
            return Ok(queued);
        };
        let store = self.engine.store();
        let run = self.engine.wait_for_end(id, action.wait).await?;
        let title = format!("{name} #{id} on {host}");
        let first = match run.state {
            crate::store::RunState::Succeeded => format!(
                "{title} succeeded in {}",
                crate::text::duration(crate::engine::run_duration(&run))
            ),
            crate::store::RunState::Failed => format!(
                "{title} FAILED: {}",
                crate::text::one_line(run.error.as_deref().unwrap_or("no reason given"), 200)
            ),
            state @ (crate::store::RunState::Queued | crate::store::RunState::Running) => {
                format!(
                    "{title} is still {} after {}; say 'status #{id}' or 'log #{id}'",
                    state.as_str(),
                    crate::text::duration(action.wait.as_millis() as u64)
                )
            }
            state => format!(
                "{title} is {}; say 'status #{id}' or 'log #{id}'",
                state.as_str().replace('_', " ")
            ),
        };
        let mut lines = vec![first];
        lines.extend(
            store
                .log_tail(id, action.lines)
                .await?
                .into_iter()
                .map(|(_, line)| line),
        );
        Ok(Reply {
            run: Some(id),
            ..Reply::lines(lines)
        })
    }

    /// `schedules`: each configured schedule with its next and last firing.
    async fn schedules(&self) -> Result<Reply, BotError> {
        if self.settings.schedules.is_empty() {
            return Ok(Reply::line("no schedules are configured"));
        }
        let rows = self.engine.store().schedules().await?;
        let lines = self
            .settings
            .schedules
            .iter()
            .map(|(name, what)| {
                let row = rows.iter().find(|r| &r.name == name);
                let next = row
                    .map(|r| render::utc_time(r.next_at))
                    .unwrap_or_else(|| "not planned yet".into());
                let last = match row.and_then(|r| r.last_at.map(|at| (at, &r.last_outcome))) {
                    Some((at, Some(outcome))) => format!(
                        "{} ({})",
                        render::utc_time(at),
                        crate::text::one_line(outcome, 120)
                    ),
                    Some((at, None)) => render::utc_time(at),
                    None => "never".into(),
                };
                format!("{name} — {what}; next {next}, last {last}")
            })
            .collect();
        Ok(Reply::lines(lines))
    }

    /// `promote HOST to ENV`: the host's last design, run again (as it was last run: deploy
    /// or redeploy) on `environment`, under the promotion rule.
    async fn promote(
        &self,
        msg: &Incoming,
        host: &str,
        environment: &str,
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        let Some(last) = self.engine.store().last_run_for_host(host).await? else {
            return Err(BotError::NotFound(format!(
                "{host} has no runs, so there is nothing to promote; say 'deploy REF to {environment}'"
            )));
        };
        let kind = match last.kind {
            RunKind::Destroy => {
                return Err(BotError::User(format!(
                    "{host}'s last run #{} was a destroy; there is nothing to promote",
                    last.id
                )));
            }
            // An action's design is the host's: promoting it redeploys the host.
            RunKind::Action => RunKind::Redeploy,
            other => other,
        };
        if self.settings.environments.get(environment).is_none() {
            return Err(BotError::User(
                self.settings
                    .environments
                    .choose(Some(environment), &Clipboard::new())
                    .err()
                    .unwrap_or_default(),
            ));
        }
        let at = Placing::new(Some(environment), None)
            .by(trigger)
            .promoting();
        let subject = self.subject(host, kind).await?;
        let mut reply = self
            .queue_subject(&self.asker(msg), kind, subject, None, &at)
            .await?;
        if reply.verdict == Verdict::Done
            && let Some(first) = reply.public.first_mut()
        {
            *first = format!("promoting {host} to {environment}: {first}");
        }
        Ok(reply)
    }

    async fn retry(&self, msg: &Incoming, r: &RunRef) -> Result<Reply, BotError> {
        let old = self.find_run(r).await?;
        if old.initial_clipboard.is_empty() {
            return Err(BotError::User(format!(
                "run #{} is past retention and its design was pruned; say 'deploy {}'",
                old.id,
                crate::text::one_line(&old.design_ref, 100)
            )));
        }
        if old.kind == RunKind::Action
            && let Err(refusal) = self.allowed_action(msg, &old.pipeline)?
        {
            return Ok(refusal);
        }
        // The design as that run began it, on the host's record as it stands now: the
        // resources it then carried may be gone.
        let document = crate::inventory::design_as_deployed(&old.initial_clipboard);
        let record = self.standing_record(&old.host).await?;
        if let (Some(Some(recorded)), Some(asked)) = (
            record.as_ref().map(|r| r.environment.clone()),
            old.environment.as_deref(),
        ) && recorded != asked
        {
            return Err(BotError::Promotion(format!(
                "{} is recorded in {recorded} now, and run #{} was in {asked}; say 'promote {} to {asked}' or 'redeploy {}'",
                old.host, old.id, old.host, old.host
            )));
        }
        let asker = self.asker(msg);
        let mut clipboard = initial_clipboard(
            &hosts::with_record(&document, record.as_ref()),
            &old.host,
            old.kind,
            &old.pipeline,
            &asker.who,
            &old.design_ref,
            None,
        );
        hosts::mark_record(&mut clipboard, record.as_ref());
        let placement = Placement {
            environment: old.environment.clone(),
            design_digest: Some(self.settings.environments.digest(&document)),
            rollout: None,
        };
        let mut reply = self
            .submit(
                &asker,
                old.kind,
                &old.host,
                &old.pipeline,
                &old.design_ref,
                clipboard,
                Some(old.id),
                placement,
                None,
            )
            .await?;
        if let Some(first) = reply.public.first_mut() {
            *first = format!("retry of #{}: {first}", old.id);
        }
        Ok(reply)
    }

    async fn plan(&self, reference: &str) -> Result<Reply, BotError> {
        let (design, name) = self.design_and_pipeline(RunKind::Deploy, reference).await?;
        let Some(p) = self.settings.pipelines.get(&name) else {
            return Err(BotError::User(format!(
                "pipeline '{name}' is not configured"
            )));
        };
        let mut lines = vec![format!(
            "plan for {} ({}): {name} pipeline, {}; nothing was run",
            design.hostname,
            design.provider,
            render::count(p.stages.len(), "stage")
        )];
        lines.push(stage_list(&p.stages));
        if !p.on_failure.is_empty() {
            lines.push(format!("on failure: {}", stage_list(&p.on_failure)));
        }
        if let Some(record) = self.standing_record(&design.hostname).await? {
            lines.push(self.plan_for_record(
                &record,
                &design.document,
                &design.provider,
                design.pipeline.as_deref(),
            ));
        }
        Ok(Reply::lines(lines))
    }

    fn pipelines(&self) -> Vec<String> {
        if self.settings.pipelines.is_empty() {
            return vec!["no pipelines are configured".into()];
        }
        self.settings
            .pipelines
            .iter()
            .map(|(name, p)| {
                let providers = if p.providers.is_empty() {
                    String::new()
                } else {
                    format!(", providers {}", p.providers.join("/"))
                };
                format!(
                    "{name} ({}{providers}): {}",
                    p.command.as_str(),
                    stage_list(&p.stages)
                )
            })
            .collect()
    }
}

fn stage_list(stages: &[pipeline::StageConfig]) -> String {
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut flags = Vec::new();
            if s.approval || s.approval_if.is_some() {
                flags.push("approval");
            }
            if s.idempotent {
                flags.push("idempotent");
            }
            let with = s
                .with
                .as_ref()
                .map(|w| {
                    let text = serde_json::to_string(w).unwrap_or_default();
                    format!(" with {}", crate::text::one_line(&text, 120))
                })
                .unwrap_or_default();
            if flags.is_empty() {
                format!("{} {}{with}", i + 1, s.task)
            } else {
                format!("{} {} ({}){with}", i + 1, s.task, flags.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Who asks for a run and where its notifications go (a chat message's sender, or the
/// requester of a rollout whose child runs the driver queues).
struct Asker {
    who: Who,
    /// The encoded [`Origin`].
    origin: String,
}

/// A run's stages, its undo stages and the pipeline's `promote_within`.
type FrozenStages = (Vec<Stage>, Vec<Stage>, Option<Duration>);

/// Where a run is asked to go: an environment named by the command, and the rollout it is
/// a child run of; and the webhook or schedule that asked, if one did.
struct Placing<'a> {
    environment: Option<&'a str>,
    rollout: Option<i64>,
    trigger: Option<&'a Trigger>,
    /// A promotion: the one command that moves a recorded host to another environment.
    promotion: bool,
}

impl<'a> Placing<'a> {
    fn new(environment: Option<&'a str>, rollout: Option<i64>) -> Self {
        Placing {
            environment,
            rollout,
            trigger: None,
            promotion: false,
        }
    }

    fn promoting(mut self) -> Self {
        self.promotion = true;
        self
    }

    /// Asked by a webhook or a schedule.
    fn by(mut self, trigger: Option<&'a Trigger>) -> Self {
        self.trigger = trigger;
        self
    }
}

/// The verified identity that speaks for the sender, as stored (`runs.requester`, audit).
/// A sender with none is `unverified:NICK`, which no grant or person matches.
fn requester_key(msg: &Incoming) -> String {
    roles::principal(&msg.identities)
        .map(Identity::key)
        .unwrap_or_else(|| format!("unverified:{}", msg.nick))
}

/// Who did something, as the audit log, `approved_by` and "cancelled by" record it: the
/// verified identity key and the person it belongs to, never a bare nick.
struct Who {
    key: String,
    person: Option<String>,
}

impl Who {
    /// `alice (irc:libera:alice)`, or the key alone for an identity of no person.
    fn label(&self) -> String {
        match &self.person {
            Some(p) => format!("{p} ({})", self.key),
            None => self.key.clone(),
        }
    }
}

/// The clipboard a run starts with: the design plus a `jarvis` mapping (with the
/// requester's person, which `approve` checks against).
fn initial_clipboard(
    document: &Clipboard,
    host: &str,
    kind: RunKind,
    pipeline: &str,
    requester: &Who,
    reference: &str,
    trigger: Option<&Trigger>,
) -> Clipboard {
    let mut clipboard = document.clone();
    let mut jarvis = json!({
        "host": host,
        "command": kind.as_str(),
        "pipeline": pipeline,
        "requester": requester.key,
        "design": reference,
    });
    if let (Some(person), Some(map)) = (&requester.person, jarvis.as_object_mut()) {
        map.insert("person".into(), json!(person));
    }
    if let (Some(trigger), Some(map)) = (trigger, jarvis.as_object_mut()) {
        map.insert("trigger".into(), json!(trigger));
    }
    clipboard.insert("jarvis".into(), jarvis);
    clipboard
}

/// `help` lists what the asker may run; `help CMD` gives usage and an example.
fn help(command: Option<&str>, roles: &[Role], nick: &str) -> Reply {
    let allowed = |needed: Option<Role>| needed.is_none_or(|n| roles.iter().any(|r| r.covers(n)));
    match command {
        Some(name) => match command::spec(name) {
            Some(spec) => {
                let role = spec
                    .role
                    .map(|r| format!(" (needs {})", r.as_str()))
                    .unwrap_or_default();
                Reply::line(format!(
                    "{} — {}{role}. Example: {nick}: {}",
                    spec.usage, spec.summary, spec.example
                ))
            }
            None => Reply::line(format!(
                "no command '{}'; say 'help'",
                crate::text::one_line(name, 30)
            )),
        },
        None => Reply::lines(
            COMMANDS
                .iter()
                .filter(|c| allowed(c.role))
                .map(|c| format!("{} — {}", c.usage, c.summary))
                .collect(),
        ),
    }
}

#[derive(Debug, thiserror::Error)]
enum BotError {
    #[error("{0}")]
    User(String),
    /// The promotion rule refused the run: the line names what is missing.
    #[error("{0}")]
    Promotion(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the user is told of an error: their own mistakes in full, internal failures briefly
/// (the detail is in the log).
fn user_error(e: &BotError) -> String {
    match e {
        BotError::User(text) | BotError::NotFound(text) | BotError::Promotion(text) => text.clone(),
        BotError::Engine(EngineError::Store(StoreError::HostBusy { host, run })) => {
            format!("{host} already has run #{run}")
        }
        BotError::Engine(EngineError::Store(e @ StoreError::Refused { .. })) => e.to_string(),
        BotError::Engine(EngineError::Store(_)) | BotError::Store(_) => {
            "the database did not answer; see jarvis's log".into()
        }
        BotError::Engine(e) => e.to_string(),
    }
}

/// The verdict of a failed command.
fn verdict_of(e: &BotError) -> Verdict {
    match e {
        BotError::User(_) => Verdict::Invalid,
        BotError::Promotion(_) => Verdict::Conflict,
        BotError::NotFound(_) | BotError::Engine(EngineError::NoSuchRun(_)) => Verdict::NotFound,
        BotError::Engine(
            EngineError::WrongState { .. }
            | EngineError::Undone(_)
            | EngineError::Store(StoreError::HostBusy { .. } | StoreError::Refused { .. }),
        ) => Verdict::Conflict,
        BotError::Engine(EngineError::Stopping) => Verdict::Unavailable,
        BotError::Engine(EngineError::Store(_)) | BotError::Store(_) => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XMPP_ALICE: &str = "xmpp:jabber:alice@example.com";

    #[test]
    fn actions_are_recorded_with_identity_and_person() {
        let who = Who {
            key: XMPP_ALICE.into(),
            person: Some("alice".into()),
        };
        assert_eq!(who.label(), "alice (xmpp:jabber:alice@example.com)");
        let clipboard = initial_clipboard(
            &Clipboard::new(),
            "h",
            RunKind::Deploy,
            "p",
            &who,
            "h",
            None,
        );
        assert_eq!(clipboard["jarvis"]["person"], "alice");
        assert_eq!(clipboard["jarvis"]["requester"], XMPP_ALICE);
        let nobody = Who {
            key: "console:root".into(),
            person: None,
        };
        assert_eq!(nobody.label(), "console:root");
    }
}
