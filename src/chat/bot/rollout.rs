//! Rollouts: `redeploy group:web` (or deploy, destroy) over a group's hosts in batches of
//! `max_parallel`, each batch waiting for the one before to succeed (a run succeeds only
//! once all its stages did, a health-check stage among them), stopping once `max_failures`
//! hosts failed. The rollout is stored (`store::rollout`); the driver here reads where it
//! stands from its child runs in the store each time a run settles, and queues each child
//! exactly as `redeploy HOST` would (design, pipeline, environment, promotion rule), with
//! the rollout's id in the same insert. So a rollout survives `kill -9` as its runs do.

use std::sync::Arc;
use std::time::Duration;

use super::{Asker, Bot, BotError, Placing, Reply, Trigger, Verdict, Who};
use crate::chat::Incoming;
use crate::chat::command::RunRef;
use crate::chat::render;
use crate::engine::events::{EventBody, kind};
use crate::engine::pipeline::RunKind;
use crate::store::{NewEvent, NewRollout, Rollout, RolloutHost, RolloutState, Run, RunState};

/// Where one host of a rollout stands.
#[derive(Debug, Clone, PartialEq)]
pub enum HostState {
    /// Not queued yet.
    Pending,
    /// Its run is queued, running, waiting for approval or interrupted.
    Active(i64),
    Done(i64),
    /// Its run failed or was cancelled, or it could not be queued: why.
    Failed(String),
}

impl HostState {
    /// One word: pending, running, done, failed.
    pub fn as_str(&self) -> &'static str {
        match self {
            HostState::Pending => "pending",
            HostState::Active(_) => "running",
            HostState::Done(_) => "done",
            HostState::Failed(_) => "failed",
        }
    }
}

/// Where a host of a rollout stands, from its current child run (or its refusal).
pub fn host_state(h: &RolloutHost) -> HostState {
    if let Some(run) = &h.run {
        return match run.state {
            RunState::Succeeded => HostState::Done(run.id),
            s if s.is_active() => HostState::Active(run.id),
            _ => {
                let at = run
                    .failed_stage
                    .and_then(|i| run.stages.get(i).map(|s| (i, s)))
                    .map(|(i, s)| format!(" at stage {}/{} {}", i + 1, run.stages.len(), s.task))
                    .unwrap_or_default();
                let why = run
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", crate::text::one_line(e, 160)))
                    .unwrap_or_default();
                HostState::Failed(format!(
                    "{} {} #{} {}{at}{why}",
                    h.host,
                    run.kind.as_str(),
                    run.id,
                    run.state.as_str().replace('_', " ")
                ))
            }
        };
    }
    match &h.error {
        Some(e) => HostState::Failed(format!("{} was not queued: {e}", h.host)),
        None => HostState::Pending,
    }
}

/// The counts `status` shows.
struct Tally {
    total: usize,
    done: usize,
    running: usize,
    failed: Vec<String>,
}

fn tally(hosts: &[RolloutHost]) -> Tally {
    let mut t = Tally {
        total: hosts.len(),
        done: 0,
        running: 0,
        failed: Vec::new(),
    };
    for h in hosts {
        match host_state(h) {
            HostState::Done(_) => t.done += 1,
            HostState::Active(_) => t.running += 1,
            HostState::Failed(why) => t.failed.push(why),
            HostState::Pending => {}
        }
    }
    t
}

/// `rollout #7 web: 6/10 done, 2 running, 0 failed` (and how it ended or why it stopped).
pub fn rollout_line(r: &Rollout, hosts: &[RolloutHost]) -> String {
    let t = tally(hosts);
    let env = r
        .environment
        .as_deref()
        .map(|e| format!(" to {e}"))
        .unwrap_or_default();
    let head = format!(
        "rollout #{} {} ({}{env}): {}/{} done, {} running, {} failed",
        r.id,
        r.group,
        what(r.kind, r.action.as_deref()),
        t.done,
        t.total,
        t.running,
        t.failed.len()
    );
    match r.state {
        RolloutState::Running => head,
        RolloutState::Succeeded => format!("{head}; finished"),
        RolloutState::Cancelled => format!("{head}; cancelled"),
        RolloutState::Stopped => format!(
            "{head}; STOPPED: {}; say 'resume rollout #{}' once it is fixed",
            r.reason.as_deref().unwrap_or("too many failures"),
            r.id
        ),
    }
}

/// What a rollout does to each host: `redeploy`, or `run reload` for a named action.
fn what(kind: RunKind, action: Option<&str>) -> String {
    match (kind, action) {
        (RunKind::Action, Some(a)) => format!("run {a}"),
        (kind, _) => kind.as_str().to_string(),
    }
}

/// What one look at a running rollout decides.
#[derive(Debug, PartialEq)]
enum Next {
    /// `max_failures` hosts failed: stop (what runs finishes; nothing more starts).
    Stop,
    /// Every host is done or failed (fewer than `max_failures`).
    Finish,
    /// Queue these hosts (indices): the pending ones of the first batch not over. Empty
    /// while that batch's runs are under way.
    Queue(Vec<usize>),
}

/// The rule of a rollout, pure: batches of `max_parallel` in order, each starting once every
/// host of the batches before is done or failed; a stop at `max_failures` failed hosts.
fn decide(states: &[HostState], max_parallel: usize, max_failures: usize) -> Next {
    let failed = states
        .iter()
        .filter(|s| matches!(s, HostState::Failed(_)))
        .count();
    if failed >= max_failures.max(1) {
        return Next::Stop;
    }
    let over = |s: &HostState| matches!(s, HostState::Done(_) | HostState::Failed(_));
    let size = max_parallel.max(1);
    match states
        .chunks(size)
        .enumerate()
        .find(|(_, batch)| !batch.iter().all(over))
    {
        None => Next::Finish,
        Some((b, batch)) => Next::Queue(
            batch
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == HostState::Pending)
                .map(|(i, _)| b * size + i)
                .collect(),
        ),
    }
}

/// The event that tells of a rollout's end or stop, with one of its runs (events belong to
/// runs) but the rollout's requester and place; none when it queued no run at all.
fn rollout_event(
    r: &Rollout,
    subject: Option<&Run>,
    what: &'static str,
    line: String,
) -> Vec<NewEvent> {
    let Some(run) = subject else {
        return Vec::new();
    };
    let mut body = EventBody::for_run(run).text(line);
    body.requester = r.requester.clone();
    body.origin = r.origin.clone();
    vec![body.into_event(what)]
}

impl Bot {
    /// `run ACTION on group:G`: a rollout that runs the action on each host of the group,
    /// for an asker who holds the action's role or a grant of it.
    pub(super) async fn start_action_rollout(
        &self,
        msg: &Incoming,
        action: &str,
        group: &str,
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        if let Err(refusal) = self.allowed_action(msg, action)? {
            return Ok(refusal);
        }
        self.start_rollout(msg, RunKind::Action, group, None, Some(action), trigger)
            .await
    }

    /// Starts a rollout of `kind` (for `RunKind::Action`, of `action`) over a group's hosts.
    pub(super) async fn start_rollout(
        &self,
        msg: &Incoming,
        kind: RunKind,
        group: &str,
        environment: Option<&str>,
        action: Option<&str>,
        trigger: Option<&Trigger>,
    ) -> Result<Reply, BotError> {
        let Some(config) = self.settings.groups.get(group) else {
            let known = self
                .settings
                .groups
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(BotError::NotFound(if known.is_empty() {
                format!("there is no group '{group}' (no groups are configured)")
            } else {
                format!("there is no group '{group}' (groups: {known})")
            }));
        };
        if let Some(env) = environment
            && self.settings.environments.get(env).is_none()
        {
            return Err(BotError::User(
                self.settings
                    .environments
                    .choose(Some(env), &crate::clipboard::Clipboard::new())
                    .err()
                    .unwrap_or_default(),
            ));
        }
        let hosts = self.group_hosts(kind, group).await?;
        if hosts.is_empty() {
            return Err(BotError::User(format!("group '{group}' has no hosts")));
        }
        if let Some(open) = self.engine.store().last_rollout_of_group(group).await?
            && open.state.is_open()
        {
            return Ok(Reply::line(format!(
                "group {group} already has rollout #{} ({}); say 'status rollout #{}', or 'cancel rollout #{}' first",
                open.id,
                open.state.as_str(),
                open.id,
                open.id
            ))
            .with(Verdict::Conflict));
        }
        let asker = self.asker(msg);
        let new = NewRollout {
            group: group.to_string(),
            kind,
            action: action.map(str::to_string),
            trigger: trigger.and_then(|t| serde_json::to_string(t).ok()),
            environment: environment.map(str::to_string),
            max_parallel: config.max_parallel.max(1),
            max_failures: config.max_failures.max(1),
            requester: asker.who.key.clone(),
            person: asker.who.person.clone(),
            origin: asker.origin.clone(),
            hosts,
        };
        let Some(id) = self.engine.store().insert_rollout(&new).await? else {
            return Ok(Reply::line(format!(
                "group {group} already has an open rollout; say 'status group:{group}'"
            ))
            .with(Verdict::Conflict));
        };
        self.rollouts.notify_one();
        let env = environment.map(|e| format!(" to {e}")).unwrap_or_default();
        Ok(Reply::line(format!(
            "rollout #{id} of group {group} started: {} {}{env}, {} at a time, stopping after {}",
            match action {
                Some(a) => format!("run {a} on"),
                None => kind.as_str().to_string(),
            },
            render::count(new.hosts.len(), "host"),
            new.max_parallel,
            render::count(new.max_failures, "failure")
        )))
    }

    /// A group's hosts in order, each with the design it runs.
    async fn group_hosts(
        &self,
        kind: RunKind,
        group: &str,
    ) -> Result<Vec<(String, String)>, BotError> {
        let Some(config) = self.settings.groups.get(group) else {
            return Ok(Vec::new());
        };
        let mut hosts = Vec::new();
        for host in &config.hosts {
            let reference = match kind {
                RunKind::Deploy if !self.settings.ldap_designs => host.clone(),
                RunKind::Deploy => format!("cn={host}"),
                _ => self.design_of_host(host).await?,
            };
            hosts.push((host.clone(), reference));
        }
        let user = |e: jarvis_design::DesignError| BotError::User(e.to_string());
        if let Some(m) = &config.designs {
            for name in self.designs.folder_names().await.map_err(user)? {
                match self.designs.load(&name).await {
                    Ok(design) if crate::chat::groups::design_matches(&design.document, m) => {
                        hosts.push((design.hostname, name));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::info!(design = %name, error = %e, "a design of the folder does not load; left out of the group")
                    }
                }
            }
        }
        if let Some(m) = &config.ldap {
            for name in self
                .designs
                .ldap_names_where(&m.attribute, &m.value)
                .await
                .map_err(user)?
            {
                if let Ok(host) = crate::chat::command::run_ref(&name)
                    && let RunRef::Host(host) = host
                {
                    hosts.push((host, format!("cn={name}")));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        hosts.retain(|(h, _)| seen.insert(h.clone()));
        Ok(hosts)
    }

    async fn find_rollout(&self, r: &RunRef) -> Result<Rollout, BotError> {
        let store = self.engine.store();
        let found = match r {
            RunRef::Rollout(id) => store.rollout(*id).await?,
            RunRef::Group(g) => store.last_rollout_of_group(g).await?,
            other => {
                return Err(BotError::User(format!("{other} is not a rollout")));
            }
        };
        found.ok_or_else(|| {
            BotError::NotFound(match r {
                RunRef::Group(g) => format!("group {g} has no rollouts"),
                other => format!("there is no {other}"),
            })
        })
    }

    /// `status rollout #7`: its line, then each host's.
    pub(super) async fn rollout_status(&self, r: &RunRef) -> Result<Reply, BotError> {
        let rollout = self.find_rollout(r).await?;
        let hosts = self.engine.store().rollout_hosts(rollout.id).await?;
        let mut lines = vec![rollout_line(&rollout, &hosts)];
        let per_host = hosts
            .iter()
            .map(|h| match host_state(h) {
                HostState::Pending => format!("{} pending", h.host),
                HostState::Active(id) => format!("{} running #{id}", h.host),
                HostState::Done(id) => format!("{} done #{id}", h.host),
                HostState::Failed(_) => match &h.run {
                    Some(run) => format!("{} FAILED #{}", h.host, run.id),
                    None => format!("{} FAILED", h.host),
                },
            })
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(per_host);
        Ok(Reply::lines(lines))
    }

    /// The lines of the rollouts still open, for `status`.
    pub(super) async fn open_rollout_lines(&self) -> Result<Vec<String>, BotError> {
        let store = self.engine.store();
        let mut lines = Vec::new();
        for r in store.open_rollouts().await? {
            let hosts = store.rollout_hosts(r.id).await?;
            lines.push(rollout_line(&r, &hosts));
        }
        Ok(lines)
    }

    /// `cancel rollout #7`: no more batches, and its runs under way are cancelled.
    pub(super) async fn cancel_rollout(
        &self,
        msg: &Incoming,
        r: &RunRef,
    ) -> Result<Reply, BotError> {
        let rollout = self.find_rollout(r).await?;
        let store = self.engine.store();
        let moved = store
            .move_rollout(
                rollout.id,
                &[RolloutState::Running, RolloutState::Stopped],
                RolloutState::Cancelled,
                Some(&format!("cancelled by {}", self.who(msg).label())),
                &[],
            )
            .await?;
        if !moved {
            return Ok(Reply::line(format!(
                "rollout #{} is {}, so it cannot be cancelled",
                rollout.id,
                rollout.state.as_str()
            ))
            .with(Verdict::Conflict));
        }
        let by = self.who(msg).label();
        let mut cancelled = Vec::new();
        for h in store.rollout_hosts(rollout.id).await? {
            if let HostState::Active(id) = host_state(&h) {
                match self.engine.cancel(id, &by).await {
                    Ok(()) => cancelled.push(format!("#{id}")),
                    Err(e) => {
                        tracing::info!(run = id, error = %e, "a rollout's run was not cancelled")
                    }
                }
            }
        }
        self.rollouts.notify_one();
        let runs = if cancelled.is_empty() {
            String::new()
        } else {
            format!(" and its runs {}", cancelled.join(", "))
        };
        Ok(Reply::line(format!(
            "cancelling rollout #{} of {}{runs}",
            rollout.id, rollout.group
        )))
    }

    /// `resume rollout #7`: its failed hosts start afresh (with their designs as they are
    /// now) and the batches go on.
    pub(super) async fn resume_rollout(
        &self,
        msg: &Incoming,
        r: &RunRef,
    ) -> Result<Reply, BotError> {
        let rollout = self.find_rollout(r).await?;
        // Resuming an action's rollout runs the action again: the same right as starting it.
        if let Some(action) = &rollout.action
            && let Err(refusal) = self.allowed_action(msg, action)?
        {
            return Ok(refusal);
        }
        if rollout.state != RolloutState::Stopped && rollout.state != RolloutState::Cancelled {
            return Ok(Reply::line(format!(
                "rollout #{} is {}, not stopped",
                rollout.id,
                rollout.state.as_str()
            ))
            .with(Verdict::Conflict));
        }
        let store = self.engine.store();
        let hosts = store.rollout_hosts(rollout.id).await?;
        let retry: Vec<(usize, i64)> = hosts
            .iter()
            .filter(|h| matches!(host_state(h), HostState::Failed(_)))
            .map(|h| (h.position, h.run.as_ref().map_or(h.past_runs, |run| run.id)))
            .collect();
        if !store.resume_rollout(rollout.id, &retry).await? {
            return Ok(Reply::line(format!(
                "rollout #{} changed meanwhile, or group {} has another open rollout; say 'status group:{}'",
                rollout.id, rollout.group, rollout.group
            ))
            .with(Verdict::Conflict));
        }
        self.rollouts.notify_one();
        let again = retry
            .iter()
            .filter_map(|(p, _)| hosts.iter().find(|h| h.position == *p))
            .map(|h| h.host.as_str())
            .collect::<Vec<_>>();
        let again = if again.is_empty() {
            String::new()
        } else {
            format!("; again: {}", again.join(", "))
        };
        Ok(Reply::line(format!(
            "resuming rollout #{} of {}{again}",
            rollout.id, rollout.group
        )))
    }

    /// Drives every open rollout until jarvis stops: after each settled run, each rollout
    /// change, and at least every few seconds, it reads each rollout's children from the
    /// store and queues what is due.
    pub async fn drive_rollouts(self: Arc<Self>) {
        loop {
            let settled = self.engine.settled();
            let changed = self.rollouts.notified();
            tokio::pin!(settled, changed);
            settled.as_mut().enable();
            changed.as_mut().enable();
            if self.engine.is_stopping() {
                return;
            }
            match self.engine.store().open_rollouts().await {
                Ok(rollouts) => {
                    for r in rollouts {
                        if let Err(e) = self.step(&r).await {
                            tracing::warn!(rollout = r.id, error = %e, "a rollout step failed; trying again soon");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the rollouts; trying again soon"),
            }
            tokio::select! {
                _ = settled => {}
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// One look at a rollout: stop it, finish it, or queue the pending hosts of its first
    /// unfinished batch.
    async fn step(&self, r: &Rollout) -> Result<(), BotError> {
        if r.state != RolloutState::Running {
            return Ok(());
        }
        let store = self.engine.store();
        let hosts = store.rollout_hosts(r.id).await?;
        let t = tally(&hosts);
        let states: Vec<HostState> = hosts.iter().map(host_state).collect();
        let next = decide(&states, r.max_parallel, r.max_failures);
        if next == Next::Stop {
            let reason = format!(
                "{} failed (of {} allowed): {}",
                render::count(t.failed.len(), "host"),
                r.max_failures,
                t.failed.join("; ")
            );
            let stopped = Rollout {
                state: RolloutState::Stopped,
                reason: Some(reason.clone()),
                ..r.clone()
            };
            // Told with the run that failed (an event belongs to a run).
            let subject = hosts
                .iter()
                .filter(|h| matches!(host_state(h), HostState::Failed(_)))
                .find_map(|h| h.run.as_ref());
            let events = rollout_event(
                &stopped,
                subject,
                kind::ROLLOUT_STOPPED,
                rollout_line(&stopped, &hosts),
            );
            let moved = store
                .move_rollout(
                    r.id,
                    &[RolloutState::Running],
                    RolloutState::Stopped,
                    Some(&reason),
                    &events,
                )
                .await?;
            if moved {
                self.engine.events_written().notify_one();
            }
            tracing::info!(rollout = r.id, %reason, "rollout stopped");
            return Ok(());
        }
        let Next::Queue(due) = next else {
            let finished = Rollout {
                state: RolloutState::Succeeded,
                ..r.clone()
            };
            let last = hosts
                .iter()
                .filter_map(|h| h.run.as_ref())
                .max_by_key(|run| run.id);
            let events = rollout_event(
                &finished,
                last,
                kind::ROLLOUT_FINISHED,
                rollout_line(&finished, &hosts),
            );
            let moved = store
                .move_rollout(
                    r.id,
                    &[RolloutState::Running],
                    RolloutState::Succeeded,
                    None,
                    &events,
                )
                .await?;
            if moved {
                self.engine.events_written().notify_one();
            }
            tracing::info!(rollout = r.id, "rollout finished");
            return Ok(());
        };
        let asker = Asker {
            who: Who {
                key: r.requester.clone(),
                person: r.person.clone(),
            },
            origin: r.origin.clone(),
        };
        // A trigger that does not read back (written by a later jarvis) is left out.
        let trigger: Option<Trigger> = r
            .trigger
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok());
        for h in due.iter().filter_map(|&i| hosts.get(i)) {
            // Cancelled or stopped meanwhile (by a command): queue nothing more.
            if store.rollout(r.id).await?.map(|now| now.state) != Some(RolloutState::Running) {
                return Ok(());
            }
            let at = Placing::new(r.environment.as_deref(), Some(r.id)).by(trigger.as_ref());
            let queued = match (r.kind, r.action.as_deref()) {
                (RunKind::Action, Some(action)) => {
                    self.queue_action(&asker, action, &h.host, Some(r.id), trigger.as_ref())
                        .await
                }
                (RunKind::Deploy, _) => self.queue(&asker, r.kind, &h.design_ref, None, &at).await,
                // Redeploy and destroy act on the host's record, as the commands do.
                _ => self.queue_for_host(&asker, r.kind, &h.host, &at).await,
            };
            let refused = match queued {
                Ok(reply) if reply.verdict == Verdict::Done => None,
                Ok(reply) => Some(reply.public.first().cloned().unwrap_or_default()),
                Err(e @ (BotError::Store(_) | BotError::Engine(_))) => return Err(e),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = refused {
                tracing::info!(rollout = r.id, host = %h.host, %why, "a rollout's host was not queued");
                store
                    .set_rollout_host_error(r.id, h.position, Some(&why))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostState::{Active, Done, Failed, Pending};

    fn failed() -> HostState {
        Failed("web4 deploy #4 failed".into())
    }

    #[test]
    fn batches_go_in_order_and_wait_for_the_one_before() {
        let six = vec![Pending; 6];
        assert_eq!(decide(&six, 2, 1), Next::Queue(vec![0, 1]));
        let first_running = [Active(1), Done(2), Pending, Pending, Pending, Pending];
        assert_eq!(decide(&first_running, 2, 1), Next::Queue(vec![]));
        let first_done = [Done(1), Done(2), Pending, Pending, Pending, Pending];
        assert_eq!(decide(&first_done, 2, 1), Next::Queue(vec![2, 3]));
        // After a restart, a batch half queued gets its other host.
        let half = [Done(1), Done(2), Active(3), Pending, Pending, Pending];
        assert_eq!(decide(&half, 2, 1), Next::Queue(vec![3]));
        let odd = [Done(1), Done(2), Done(3)];
        assert_eq!(decide(&odd, 2, 1), Next::Finish);
        assert_eq!(
            decide(&[Pending, Pending, Pending], 2, 1),
            Next::Queue(vec![0, 1])
        );
        assert_eq!(
            decide(&[Done(1), Done(2), Pending], 2, 1),
            Next::Queue(vec![2])
        );
    }

    #[test]
    fn failures_stop_it_at_max_failures_and_are_tolerated_below() {
        let one_failed = [Done(1), Done(2), Active(3), failed(), Pending, Pending];
        assert_eq!(decide(&one_failed, 2, 1), Next::Stop);
        // With two allowed, the failed host counts as over: the batch ends when web3 does.
        assert_eq!(decide(&one_failed, 2, 2), Next::Queue(vec![]));
        let tolerated = [Done(1), Done(2), Done(3), failed(), Pending, Pending];
        assert_eq!(decide(&tolerated, 2, 2), Next::Queue(vec![4, 5]));
        let end = [Done(1), failed(), Done(3)];
        assert_eq!(decide(&end, 1, 2), Next::Finish);
        assert_eq!(decide(&[failed(), failed()], 5, 2), Next::Stop);
        // Zero is taken as one: a rollout always stops at its first failure at the latest.
        assert_eq!(decide(&[failed(), Pending], 1, 0), Next::Stop);
    }
}
