//! The engine: queues runs, pushes each run's clipboard through its stages by running worker
//! processes, and records every transition in the store together with the event that tells
//! of it. It knows nothing of chat, designs or what any worker does.

pub mod events;
pub mod pipeline;
pub mod recovery;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clipboard::{self, Clipboard};
use crate::seal::{self, Sealer};
use crate::secrets::Masker;
use crate::store::{
    HostKey, NewRun, Phase, Run, RunId, RunState, Store, StoreError, lifecycle, now_ms,
};
use events::{EventBody, kind};
use pipeline::Stage;
use worker::{Ending, StderrLine, WorkerSpec};

/// How many of a worker's stderr lines may wait to be stored before reading pauses.
const STDERR_BUFFER: usize = 1024;

/// The exit status that asks for a retry (EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: i32 = 75;

/// Built-in workers: this program, run as `EXE worker MODULE TASK`.
#[derive(Debug, Clone)]
pub struct BuiltinWorkers {
    pub exe: PathBuf,
    pub modules: Vec<String>,
}

#[derive(Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub worker_folders: Vec<PathBuf>,
    pub builtin: Option<BuiltinWorkers>,
    /// Per module, the environment it is granted.
    pub grants: BTreeMap<String, BTreeMap<String, String>>,
    pub max_workers: usize,
    pub stdout_cap: usize,
    pub stderr_keep: usize,
    pub kill_grace: Duration,
    pub masker: Masker,
    /// Seals what workers hand back on their secret channel; without it a worker that makes a
    /// secret fails (it could not be kept safely).
    pub sealer: Option<Arc<Sealer>>,
}

/// What `status` shows of a stage under way, kept in memory.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub progress: Option<String>,
}

struct ActiveRun {
    cancel: CancellationToken,
    /// Who cancelled it, for the event that tells of the end.
    cancelled_by: Arc<Mutex<Option<String>>>,
    live: Arc<Mutex<Live>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no run #{0}")]
    NoSuchRun(RunId),
    #[error("run #{id} is {state}, so it cannot be {action}")]
    WrongState {
        id: RunId,
        state: &'static str,
        action: &'static str,
    },
    #[error("jarvis is stopping; say it again once it is back")]
    Stopping,
    #[error(
        "run #{0} cannot resume: its on_failure stages undid what it made; say 'retry #{0}' for a new run"
    )]
    Undone(RunId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: EngineConfig,
    wake: Notify,
    /// Rung whenever events were written, for whoever turns them into notifications.
    events_written: Arc<Notify>,
    /// Rung whenever a run reached an end or stopped to wait.
    settled: Notify,
    active: Mutex<HashMap<RunId, ActiveRun>>,
    permits: Arc<Semaphore>,
    /// A graceful stop began: no new stage starts.
    shutdown: CancellationToken,
    /// The grace is over: running workers are stopped and their stages left for recovery,
    /// exactly as after a crash.
    halt: CancellationToken,
}

impl Engine {
    pub fn new(store: Store, config: EngineConfig) -> Engine {
        let permits = Arc::new(Semaphore::new(config.max_workers.max(1)));
        Engine {
            inner: Arc::new(Inner {
                store,
                config,
                wake: Notify::new(),
                events_written: Arc::new(Notify::new()),
                settled: Notify::new(),
                active: Mutex::new(HashMap::new()),
                permits,
                shutdown: CancellationToken::new(),
                halt: CancellationToken::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Rung whenever events were stored.
    pub fn events_written(&self) -> Arc<Notify> {
        self.inner.events_written.clone()
    }

    /// Makes the state of a previous process safe to continue from (see `recovery`), then
    /// starts the scheduler.
    pub async fn start(&self) -> Result<(), EngineError> {
        recovery::recover(self).await?;
        let engine = self.clone();
        tokio::spawn(async move { engine.schedule().await });
        self.inner.wake.notify_one();
        self.inner.events_written.notify_one();
        Ok(())
    }

    /// Stops starting new stages; running workers are left to the recovery of the next start.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// A graceful stop: no new stage starts, running stages get `grace` to finish; what still
    /// runs then is stopped (SIGTERM, SIGKILL after the kill grace) and left in the store
    /// exactly as a crash would leave it, for the next start to recover. No run is stored as
    /// cancelled by a stop.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown();
        self.inner.wake.notify_waiters();
        if tokio::time::timeout(grace, self.wait_no_active())
            .await
            .is_err()
        {
            let left = self.lock_active().len();
            tracing::warn!(
                runs = left,
                ?grace,
                "stages still running after the stop grace; stopping their workers for recovery at the next start"
            );
            self.inner.halt.cancel();
            let limit = self.inner.config.kill_grace + Duration::from_secs(5);
            let _ = tokio::time::timeout(limit, self.wait_no_active()).await;
        }
    }

    fn refuse_when_stopping(&self) -> Result<(), EngineError> {
        if self.inner.shutdown.is_cancelled() {
            Err(EngineError::Stopping)
        } else {
            Ok(())
        }
    }

    /// Waits until no run is being driven by this process.
    async fn wait_no_active(&self) {
        loop {
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.lock_active().is_empty() {
                return;
            }
            settled.await;
        }
    }

    /// Queues a run.
    pub async fn submit(&self, new: NewRun) -> Result<RunId, EngineError> {
        self.refuse_when_stopping()?;
        let id = self.inner.store.insert_run(&new).await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// What `status` may show live of a run under way.
    pub fn live(&self, id: RunId) -> Option<Live> {
        let active = self.inner.active.lock().ok()?;
        active
            .get(&id)
            .and_then(|a| a.live.lock().ok().map(|l| l.clone()))
    }

    /// Stops a run: a queued, waiting or interrupted run ends at once; a running one has its
    /// worker stopped (SIGTERM, SIGKILL after the grace) and then ends.
    pub async fn cancel(&self, id: RunId, by: &str) -> Result<(), EngineError> {
        // Twice at most: the scheduler may take the run between the look and the update.
        for _ in 0..2 {
            let run = self.run(id).await?;
            {
                let active = self.lock_active();
                if let Some(a) = active.get(&id) {
                    if let Ok(mut who) = a.cancelled_by.lock() {
                        who.get_or_insert_with(|| by.to_string());
                    }
                    a.cancel.cancel();
                    return Ok(());
                }
            }
            if !run.state.is_active() {
                return Err(EngineError::WrongState {
                    id,
                    state: run.state.as_str(),
                    action: "cancelled",
                });
            }
            let body = EventBody::for_run(&run)
                .duration_ms(run_duration(&run))
                .text(format!("cancelled by {by}"));
            match self
                .inner
                .store
                .finish_run(
                    id,
                    &lifecycle::CANCEL_WAITING,
                    None,
                    &[body.into_event(kind::CANCELLED)],
                )
                .await
            {
                Ok(()) => {
                    self.after_events();
                    self.inner.settled.notify_waiters();
                    return Ok(());
                }
                Err(StoreError::Refused { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let run = self.run(id).await?;
        Err(EngineError::WrongState {
            id,
            state: run.state.as_str(),
            action: "cancelled",
        })
    }

    /// Continues a failed or interrupted run from its failed stage, with the stored clipboard.
    pub async fn resume(&self, id: RunId) -> Result<Run, EngineError> {
        self.refuse_when_stopping()?;
        let run = self.run(id).await?;
        if run.state == RunState::Failed && run.phase == Phase::Undo {
            return Err(EngineError::Undone(id));
        }
        if !matches!(run.state, RunState::Failed | RunState::Interrupted) {
            return Err(EngineError::WrongState {
                id,
                state: run.state.as_str(),
                action: "resumed",
            });
        }
        self.inner.store.resume(&run).await?;
        self.inner.wake.notify_one();
        Ok(run)
    }

    /// Releases the approval gate a run waits at.
    pub async fn approve(&self, id: RunId, by: &str) -> Result<Run, EngineError> {
        self.refuse_when_stopping()?;
        let run = self.run(id).await?;
        if run.state != RunState::WaitingApproval {
            return Err(EngineError::WrongState {
                id,
                state: run.state.as_str(),
                action: "approved",
            });
        }
        self.inner.store.approve(id, run.next_stage, by).await?;
        self.inner.wake.notify_one();
        Ok(run)
    }

    async fn run(&self, id: RunId) -> Result<Run, EngineError> {
        self.inner
            .store
            .run(id)
            .await?
            .ok_or(EngineError::NoSuchRun(id))
    }

    /// How many runs are queued, running or waiting for approval in this process's view.
    pub async fn busy_runs(&self) -> Result<usize, EngineError> {
        Ok(self.inner.store.count_active().await?)
    }

    /// Waits until no run is queued or running (runs waiting for approval or interrupted do
    /// not count: they wait for a person).
    pub async fn wait_idle(&self) {
        loop {
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let busy = match self.inner.store.active_runs().await {
                Ok(runs) => runs
                    .iter()
                    .any(|r| matches!(r.state, RunState::Queued | RunState::Running)),
                Err(_) => false,
            };
            if !busy {
                return;
            }
            settled.await;
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, ActiveRun>> {
        match self.inner.active.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn after_events(&self) {
        self.inner.events_written.notify_one();
    }

    async fn schedule(self) {
        loop {
            match self.inner.store.queued_ids().await {
                Ok(ids) => {
                    for id in ids {
                        let token = {
                            let mut active = self.lock_active();
                            if active.contains_key(&id) {
                                continue;
                            }
                            // A run's cancel is its own: a graceful stop of jarvis cancels nothing.
                            let cancel = CancellationToken::new();
                            active.insert(
                                id,
                                ActiveRun {
                                    cancel: cancel.clone(),
                                    cancelled_by: Arc::new(Mutex::new(None)),
                                    live: Arc::new(Mutex::new(Live::default())),
                                },
                            );
                            cancel
                        };
                        let engine = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = engine.drive(id, token).await {
                                tracing::error!(run = id, error = %e, "run stopped on an internal error");
                            }
                            engine.lock_active().remove(&id);
                            engine.inner.settled.notify_waiters();
                            // A run that ended may have freed its host for another.
                            engine.inner.wake.notify_one();
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the queue"),
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Pushes one run through its stages until it ends or has to wait.
    async fn drive(&self, id: RunId, cancel: CancellationToken) -> Result<(), EngineError> {
        // A stage started in the same commit that finished the one before it: its worker
        // slot and attempt, carried over so that nothing runs between the two.
        let mut carried: Option<(tokio::sync::OwnedSemaphorePermit, u32, Run)> = None;
        let mut context = RunContext::default();
        loop {
            // A folded start knows the run as it was just written; anything else reads it.
            let (run, carried_now) = match carried.take() {
                Some((permit, attempt, run)) => (run, Some((permit, attempt))),
                None => (self.run(id).await?, None),
            };
            let stages = run.phase_stages();
            let (index, stage, attempt, permit) = match carried_now {
                Some((permit, attempt)) => {
                    // Already started (and recorded as running): it runs, whatever comes.
                    let index = run.next_stage;
                    let Some(stage) = stages.get(index).cloned() else {
                        return Ok(());
                    };
                    (index, stage, attempt, permit)
                }
                None => {
                    if !matches!(run.state, RunState::Queued | RunState::Running) {
                        return Ok(());
                    }
                    if self.inner.shutdown.is_cancelled() {
                        // No stage is in flight here: the run waits in the queue for the
                        // next start.
                        if run.state == RunState::Running {
                            self.inner
                                .store
                                .set_state(id, &lifecycle::REQUEUE, &[])
                                .await?;
                        }
                        return Ok(());
                    }
                    if run.next_stage >= stages.len() {
                        self.finish(&run).await?;
                        return Ok(());
                    }
                    let index = run.next_stage;
                    let stage = stages[index].clone();

                    if run.phase == Phase::Main && needs_approval(&stage, &run) {
                        let body = EventBody::for_run(&run).stage(index, &stage.task);
                        self.inner
                            .store
                            .set_state(
                                id,
                                &lifecycle::WAIT_FOR_APPROVAL,
                                &[body.into_event(kind::APPROVAL_NEEDED)],
                            )
                            .await?;
                        self.after_events();
                        return Ok(());
                    }

                    let permit = tokio::select! {
                        p = self.inner.permits.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return Ok(()),
                        },
                        _ = cancel.cancelled() => {
                            return self.end_cancelled(&run, None).await;
                        }
                    };

                    let attempt = run.attempt + 1;
                    let started = self.start_events(&run, index, &stage, run.started_at.is_none());
                    match self
                        .inner
                        .store
                        .start_stage(id, run.phase, index, attempt, &stage.task, &started)
                        .await
                    {
                        Ok(()) => {}
                        Err(StoreError::Refused { state, .. }) => {
                            // Cancelled (or moved) between the look and the start: nothing
                            // to run.
                            tracing::info!(run = id, %state, "the run changed before its stage started");
                            return Ok(());
                        }
                        Err(e) => return Err(e.into()),
                    }
                    if !started.is_empty() {
                        self.after_events();
                    }
                    (index, stage, attempt, permit)
                }
            };

            let outcome = self
                .execute(&run, index, &stage, attempt, &cancel, &mut context)
                .await;

            match outcome {
                Outcome::Done {
                    clipboard,
                    progress,
                } => {
                    let clipboard = clipboard.unwrap_or_else(|| current_clipboard(&run).clone());
                    // The next stage starts in the same commit when nothing stands between:
                    // no gate, no stop, no cancel. One fsync instead of two.
                    let next = index + 1;
                    let fold = stages.get(next).filter(|next_stage| {
                        let stopping = self.inner.shutdown.is_cancelled() || cancel.is_cancelled();
                        let waits = run.phase == Phase::Main
                            && gated(next_stage, next, &clipboard, run.approved_stage);
                        !(stopping || waits)
                    });
                    let (then, started) = match fold {
                        Some(next_stage) => (
                            Some(crate::store::NextStart {
                                stage: next,
                                attempt: 1,
                                task: &next_stage.task,
                            }),
                            // The run started with the stage that just finished.
                            self.start_events(&run, next, next_stage, false),
                        ),
                        None => (None, Vec::new()),
                    };
                    let folded = then.is_some();
                    self.inner
                        .store
                        .finish_stage(
                            id,
                            run.phase,
                            index,
                            attempt,
                            &clipboard,
                            progress.as_deref(),
                            then,
                            &started,
                        )
                        .await?;
                    if !started.is_empty() {
                        self.after_events();
                    }
                    if folded {
                        // The run as the commit above left it, so the next stage needs no read.
                        let mut next_run = run.clone();
                        match run.phase {
                            Phase::Main => next_run.clipboard = clipboard,
                            Phase::Undo => next_run.undo_clipboard = Some(clipboard),
                        }
                        let at = now_ms();
                        next_run.next_stage = next;
                        next_run.attempt = 1;
                        next_run.state = RunState::Running;
                        next_run.progress = None;
                        next_run.stage_started_at = Some(at);
                        next_run.started_at = next_run.started_at.or(Some(at));
                        carried = Some((permit, 1, next_run));
                    }
                }
                Outcome::Halted => return Ok(()),
                Outcome::Cancelled => {
                    drop(permit);
                    self.inner
                        .store
                        .end_attempt(
                            id,
                            run.phase,
                            index,
                            attempt,
                            "cancelled",
                            None,
                            "cancelled",
                        )
                        .await?;
                    return self.end_cancelled(&run, Some((index, &stage.task))).await;
                }
                Outcome::Failed {
                    reason,
                    retry,
                    exit_code,
                } => {
                    drop(permit);
                    let state = if retry { "tempfailed" } else { "failed" };
                    self.inner
                        .store
                        .end_attempt(id, run.phase, index, attempt, state, exit_code, &reason)
                        .await?;
                    if retry && attempt <= stage.retries {
                        let pause = backoff(stage.backoff_ms, attempt);
                        tracing::info!(run = id, stage = index + 1, attempt, ?pause, %reason, "retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = cancel.cancelled() => return self.end_cancelled(&run, Some((index, &stage.task))).await,
                        }
                        continue;
                    }
                    self.fail(&run, index, &stage, &reason).await?;
                }
            }
        }
    }

    /// The events a stage's start tells of: the run's start (when `first`), and the stage's
    /// when the pipeline asks for it.
    fn start_events(
        &self,
        run: &Run,
        index: usize,
        stage: &Stage,
        first: bool,
    ) -> Vec<crate::store::NewEvent> {
        let mut started = Vec::new();
        if first {
            started.push(EventBody::for_run(run).into_event(kind::RUN_STARTED));
        }
        if stage.notify && run.phase == Phase::Main {
            started.push(
                EventBody::for_run(run)
                    .stage(index, &stage.task)
                    .into_event(kind::STAGE_STARTED),
            );
        }
        started
    }

    async fn finish(&self, run: &Run) -> Result<(), EngineError> {
        let body = EventBody::for_run(run).duration_ms(run_duration(run));
        match run.phase {
            Phase::Main => {
                self.inner
                    .store
                    .finish_run(
                        run.id,
                        &lifecycle::SUCCEED,
                        None,
                        &[body.into_event(kind::SUCCEEDED)],
                    )
                    .await?
            }
            Phase::Undo => {
                let mut body = body;
                body.undo_stages = Some(run.on_failure.len());
                self.inner
                    .store
                    .finish_run(
                        run.id,
                        &lifecycle::FAIL,
                        None,
                        &[body.into_event(kind::UNDONE)],
                    )
                    .await?
            }
        }
        self.after_events();
        Ok(())
    }

    async fn fail(
        &self,
        run: &Run,
        index: usize,
        stage: &Stage,
        reason: &str,
    ) -> Result<(), EngineError> {
        let mut body = EventBody::for_run(run)
            .stage(index, &stage.task)
            .duration_ms(run_duration(run))
            .text(reason);
        match run.phase {
            Phase::Main => {
                let undo = !run.on_failure.is_empty();
                if undo {
                    body.undo_stages = Some(run.on_failure.len());
                }
                self.inner
                    .store
                    .fail_run(
                        run.id,
                        index,
                        reason,
                        undo,
                        &[body.into_event(kind::FAILED)],
                    )
                    .await?;
            }
            Phase::Undo => {
                body.stages = run.on_failure.len();
                self.inner
                    .store
                    .skip_undo_stage(run.id, index, &[body.into_event(kind::UNDO_STAGE_FAILED)])
                    .await?;
            }
        }
        self.after_events();
        Ok(())
    }

    async fn end_cancelled(
        &self,
        run: &Run,
        stage: Option<(usize, &str)>,
    ) -> Result<(), EngineError> {
        let by = self
            .lock_active()
            .get(&run.id)
            .and_then(|a| a.cancelled_by.lock().ok().and_then(|w| w.clone()));
        let mut text = match by {
            Some(by) => format!("cancelled by {by}"),
            None => "cancelled".to_string(),
        };
        if let Some(made) = clipboard::made_summary(&run.clipboard) {
            text.push_str(&format!(
                "; it leaves behind what it made: {made} (say 'destroy {}' to remove it)",
                run.host
            ));
        }
        let mut body = EventBody::for_run(run)
            .duration_ms(run_duration(run))
            .text(text);
        if let Some((index, task)) = stage {
            body = body.stage(index, task);
        }
        self.inner
            .store
            .finish_run(
                run.id,
                &lifecycle::CANCEL_RUNNING,
                None,
                &[body.into_event(kind::CANCELLED)],
            )
            .await?;
        self.after_events();
        Ok(())
    }

    /// Runs the worker for one stage attempt and judges its outcome.
    async fn execute(
        &self,
        run: &Run,
        index: usize,
        stage: &Stage,
        attempt: u32,
        cancel: &CancellationToken,
        context: &mut RunContext,
    ) -> Outcome {
        let config = &self.inner.config;
        let (module, task) = stage.module_task();
        let (program, args) = match resolve_worker(config, module, task) {
            Ok(found) => found,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    retry: false,
                    exit_code: None,
                };
            }
        };
        let pins = match &context.pins {
            Some(pins) => pins.clone(),
            None => match self.inner.store.host_keys(&run.host).await {
                Ok(pins) => {
                    let keys: Vec<&HostKey> = pins.iter().map(|p| &p.key).collect();
                    let value = serde_json::to_value(&keys).unwrap_or_default();
                    context.pins = Some(value.clone());
                    value
                }
                Err(e) => {
                    tracing::error!(run = run.id, error = %e, "cannot read the host's pinned keys");
                    return Outcome::failed("cannot read the host's pinned keys", true);
                }
            },
        };
        let input = clipboard::worker_input(current_clipboard(run), stage.with.as_ref(), pins);
        let run_secrets = match &context.secrets {
            Some(secrets) => secrets.clone(),
            None => match self.open_secrets(run.id).await {
                Ok(secrets) => {
                    context.secrets = Some(secrets.clone());
                    secrets
                }
                Err(reason) => return Outcome::failed(reason, false),
            },
        };
        let masker = config
            .masker
            .with_clipboard(&input)
            .with_values(run_secrets.iter().map(|(_, v)| v.as_str()));
        let workdir = config.data_dir.join("work").join(format!(
            "{}-{}{}-{}",
            run.id,
            phase_letter(run.phase),
            index + 1,
            attempt
        ));
        let _ = std::fs::remove_dir_all(&workdir);
        if let Err(e) = make_private_folder(&workdir) {
            return Outcome::failed(format!("cannot make the working folder: {e}"), true);
        }
        let secret_channel = workdir.join("secrets.fifo");
        let secrets_rx = match open_secret_channel(&secret_channel) {
            Ok(rx) => rx,
            Err(e) => {
                return Outcome::failed(format!("cannot make the secret channel: {e}"), true);
            }
        };
        let stages_total = run.phase_stages().len();
        let mut env: Vec<(String, String)> = vec![
            ("JARVIS_RUN_ID".into(), run.id.to_string()),
            ("JARVIS_STAGE".into(), (index + 1).to_string()),
            ("JARVIS_STAGES".into(), stages_total.to_string()),
            ("JARVIS_TASK".into(), stage.task.clone()),
            ("JARVIS_HOST".into(), run.host.clone()),
            ("JARVIS_ATTEMPT".into(), attempt.to_string()),
            ("JARVIS_PHASE".into(), run.phase.as_str().into()),
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            ),
            ("HOME".into(), workdir.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            (
                "JARVIS_SECRETS".into(),
                secret_channel.display().to_string(),
            ),
        ];
        for (name, value) in &run_secrets {
            env.push((seal::variable_for(name), value.clone()));
        }
        if let Some(grant) = config.grants.get(module) {
            for (k, v) in grant {
                env.retain(|(name, _)| name != k);
                env.push((k.clone(), v.clone()));
            }
        }
        let spec = WorkerSpec {
            program,
            args,
            env,
            workdir: workdir.clone(),
            stdin: clipboard::to_yaml(&input).into_bytes(),
            timeout: Duration::from_millis(stage.timeout_ms),
            grace: config.kill_grace,
            stdout_cap: config.stdout_cap,
            stderr_keep: config.stderr_keep,
        };

        let (tx, rx) = mpsc::channel(STDERR_BUFFER);
        let live = self
            .lock_active()
            .get(&run.id)
            .map(|a| a.live.clone())
            .unwrap_or_default();
        if let Ok(mut l) = live.lock() {
            l.progress = None;
        }
        let consumer = tokio::spawn(consume_stderr(
            self.clone(),
            run.clone(),
            index,
            stage.task.clone(),
            masker.clone(),
            live.clone(),
            rx,
            secrets_rx,
        ));
        let marker = recovery::running_marker(&config.data_dir, run.id);
        let finished = worker::run(spec, tx, cancel.clone(), self.inner.halt.clone(), |pgid| {
            recovery::write_marker(&marker, pgid);
        })
        .await;
        recovery::remove_marker(&marker);
        let made_secrets = consumer.await.unwrap_or_default();
        let _ = std::fs::remove_dir_all(&workdir);
        let masker = masker.with_values(made_secrets.iter().map(|(_, v)| v.as_str()));
        if let Err(reason) = self.keep_secrets(run.id, &made_secrets).await {
            return Outcome::failed(reason, false);
        }
        if !made_secrets.is_empty() {
            context.secrets = None;
        }
        let progress = live.lock().ok().and_then(|l| l.progress.clone());

        let reason_from_worker = |fallback: String| -> String {
            let text = finished
                .error_line
                .clone()
                .or_else(|| finished.last_stderr().map(str::to_string))
                .unwrap_or(fallback);
            masker.mask(&crate::text::one_line(&text, 300))
        };
        match finished.ending {
            Ending::Exited(0) => match clipboard::parse_worker_output(&finished.stdout) {
                Ok(mut clipboard) => {
                    let learned = clipboard.as_mut().and_then(clipboard::take_stage_extras);
                    if let Some(learned) = learned {
                        // Whatever was pinned, the next stage reads the pins afresh.
                        context.pins = None;
                        if let Err(reason) = self.pin_learned(run, index, stage, learned).await {
                            return Outcome::failed(reason, false);
                        }
                    }
                    Outcome::Done {
                        clipboard,
                        progress,
                    }
                }
                Err(e) => Outcome::Failed {
                    reason: masker.mask(&e.to_string()),
                    retry: false,
                    exit_code: Some(0),
                },
            },
            Ending::Exited(code) => Outcome::Failed {
                reason: reason_from_worker(format!("worker exited with status {code}")),
                retry: code == EXIT_TEMPFAIL,
                exit_code: Some(code),
            },
            Ending::Signalled(sig) => Outcome::Failed {
                reason: format!("worker was killed by signal {}", signal_name(sig)),
                retry: false,
                exit_code: None,
            },
            Ending::TimedOut(limit) => Outcome::Failed {
                reason: format!(
                    "timed out after {}",
                    crate::text::duration(limit.as_millis() as u64)
                ),
                retry: true,
                exit_code: None,
            },
            Ending::StdoutOverflow(cap) => Outcome::Failed {
                reason: format!(
                    "worker printed more than {} on stdout, the limit for a clipboard",
                    crate::text::bytes(cap as u64)
                ),
                retry: false,
                exit_code: None,
            },
            Ending::Cancelled => Outcome::Cancelled,
            Ending::Halted => Outcome::Halted,
            Ending::SpawnFailed(reason) => Outcome::Failed {
                reason,
                retry: false,
                exit_code: None,
            },
        }
    }
}

impl Engine {
    /// The run's secrets, opened, by name.
    async fn open_secrets(&self, run: RunId) -> Result<Vec<(String, String)>, String> {
        let sealed = self.inner.store.sealed_secrets(run).await.map_err(|e| {
            tracing::error!(run, error = %e, "cannot read the run's secrets");
            "cannot read the run's secrets".to_string()
        })?;
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        let Some(sealer) = &self.inner.config.sealer else {
            return Err("the run has secrets, but jarvis has no key to open them".into());
        };
        sealed
            .into_iter()
            .map(|(name, bytes)| {
                let plain = sealer
                    .open(&secret_context(run, &name), &bytes)
                    .map_err(|e| format!("secret {name} of run #{run}: {e}"))?;
                let text = String::from_utf8(plain)
                    .map_err(|_| format!("secret {name} of run #{run} is not text"))?;
                Ok((name, text))
            })
            .collect()
    }

    /// Seals and stores what a worker handed back on its secret channel.
    async fn keep_secrets(&self, run: RunId, made: &[(String, String)]) -> Result<(), String> {
        if made.is_empty() {
            return Ok(());
        }
        let Some(sealer) = &self.inner.config.sealer else {
            return Err("the worker made a secret, but jarvis has no key to keep it sealed".into());
        };
        let mut sealed = Vec::with_capacity(made.len());
        for (name, value) in made {
            let bytes = sealer
                .seal(&secret_context(run, name), value.as_bytes())
                .map_err(|e| format!("cannot seal secret {name}: {e}"))?;
            sealed.push((name.clone(), bytes));
        }
        self.inner
            .store
            .put_sealed_secrets(run, &sealed)
            .await
            .map_err(|e| {
                tracing::error!(run, error = %e, "cannot store the run's secrets");
                "cannot store the secrets the worker made".to_string()
            })
    }

    /// Pins the host keys a stage reports having learned, when its configuration lets it.
    async fn pin_learned(
        &self,
        run: &Run,
        index: usize,
        stage: &Stage,
        learned: serde_json::Value,
    ) -> Result<(), String> {
        let keys: Vec<HostKey> = serde_json::from_value(learned).map_err(|_| {
            format!(
                "{} reported learned host keys that are not a list of {{algorithm, fingerprint}}",
                stage.task
            )
        })?;
        if keys.is_empty() {
            return Ok(());
        }
        let (log_stage, by) = match run.phase {
            Phase::Main => (
                Some(index + 1),
                format!("run #{} stage {} {}", run.id, index + 1, stage.task),
            ),
            Phase::Undo => (
                None,
                format!("run #{} on_failure {} {}", run.id, index + 1, stage.task),
            ),
        };
        if !stage.learns_host_keys() {
            tracing::warn!(run = run.id, task = %stage.task, "a stage not configured to learn host keys reported some; ignored");
            let line = format!(
                "ignored the host keys {} reported: its configuration does not say 'with: {{host_key: learn}}'",
                stage.task
            );
            let _ = self
                .inner
                .store
                .append_log(run.id, log_stage, &[line])
                .await;
            return Ok(());
        }
        if let Some(bad) = keys.iter().find(|k| !is_host_key(k)) {
            return Err(format!(
                "{} reported a host key that is no algorithm and SHA256 fingerprint ({})",
                stage.task,
                crate::text::one_line(&bad.algorithm, 40)
            ));
        }
        self.inner
            .store
            .learn_host_keys(run.id, &run.host, &keys, &by, log_stage)
            .await
            .map_err(|e| {
                tracing::error!(run = run.id, error = %e, "cannot pin host keys");
                "cannot pin the host keys the stage learned".to_string()
            })
    }
}

/// What a secret's seal is bound to: its run and its name.
fn secret_context(run: RunId, name: &str) -> String {
    format!("run {run} secret {name}")
}

/// Whether a reported host key looks like one: a known algorithm name and a SHA-256
/// fingerprint as `ssh-keygen -lf` prints it.
pub fn is_host_key(key: &HostKey) -> bool {
    let algorithm_ok = !key.algorithm.is_empty()
        && key.algorithm.len() <= 64
        && key
            .algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-@.".contains(c));
    let fingerprint_ok = key.fingerprint.strip_prefix("SHA256:").is_some_and(|b64| {
        b64.len() == 43
            && b64
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    });
    algorithm_ok && fingerprint_ok
}

/// A working folder only jarvis's user can enter.
fn make_private_folder(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// The secret channel: a named pipe the worker appends `NAME=VALUE` lines to. Held open for
/// reading and writing, so it never reads as ended while the worker has yet to open it.
fn open_secret_channel(path: &Path) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(std::io::Error::from)?;
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
}

/// What a run's stages need from the store besides the run itself: read once while this
/// process drives the run, and read again after a stage pinned keys or made secrets.
#[derive(Default)]
struct RunContext {
    pins: Option<serde_json::Value>,
    secrets: Option<Vec<(String, String)>>,
}

enum Outcome {
    Done {
        clipboard: Option<Clipboard>,
        progress: Option<String>,
    },
    Failed {
        reason: String,
        retry: bool,
        exit_code: Option<i32>,
    },
    Cancelled,
    /// jarvis is stopping: the stage is left in flight for the next start to recover.
    Halted,
}

impl Outcome {
    fn failed(reason: impl Into<String>, retry: bool) -> Outcome {
        Outcome::Failed {
            reason: reason.into(),
            retry,
            exit_code: None,
        }
    }
}

fn phase_letter(phase: Phase) -> &'static str {
    match phase {
        Phase::Main => "s",
        Phase::Undo => "u",
    }
}

fn current_clipboard(run: &Run) -> &Clipboard {
    match (run.phase, &run.undo_clipboard) {
        (Phase::Undo, Some(c)) => c,
        _ => &run.clipboard,
    }
}

fn needs_approval(stage: &Stage, run: &Run) -> bool {
    gated(stage, run.next_stage, &run.clipboard, run.approved_stage)
}

/// Whether stage `index` must wait for an approver, judged on the clipboard before it.
fn gated(stage: &Stage, index: usize, clipboard: &Clipboard, approved: Option<usize>) -> bool {
    let gate = stage.approval
        || stage
            .approval_if
            .as_deref()
            .is_some_and(|path| clipboard::is_truthy(clipboard::get_path(clipboard, path)));
    gate && approved != Some(index)
}

fn backoff(first_ms: u64, attempt: u32) -> Duration {
    let factor = 1u64 << (attempt.saturating_sub(1)).min(10);
    Duration::from_millis(first_ms.saturating_mul(factor).min(10 * 60 * 1000))
}

/// How long a run has taken so far.
pub fn run_duration(run: &Run) -> u64 {
    let start = run.started_at.unwrap_or(run.created_at);
    let end = run.finished_at.unwrap_or_else(now_ms);
    (end - start).max(0) as u64
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

/// Finds the program for `MODULE`: the configured folders first, then the built-in workers.
pub fn resolve_worker(
    config: &EngineConfig,
    module: &str,
    task: &str,
) -> Result<(PathBuf, Vec<String>), String> {
    use std::os::unix::fs::PermissionsExt;
    for folder in &config.worker_folders {
        let path = folder.join(module);
        if let Ok(meta) = std::fs::metadata(&path) {
            if !meta.is_file() {
                return Err(format!(
                    "worker {module} in {} is not a file",
                    folder.display()
                ));
            }
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(format!(
                    "worker {module} in {} is not executable",
                    folder.display()
                ));
            }
            return Ok((path, vec![task.to_string()]));
        }
    }
    if let Some(builtin) = &config.builtin
        && builtin.modules.iter().any(|m| m == module)
    {
        return Ok((
            builtin.exe.clone(),
            vec!["worker".into(), module.into(), task.into()],
        ));
    }
    Err(format!(
        "no worker named '{module}' in the worker folders{}",
        if config.builtin.is_some() {
            " or among the built-in ones"
        } else {
            ""
        }
    ))
}

/// Whether a module resolves to some worker (for `check-config`).
pub fn worker_exists(config: &EngineConfig, module: &str) -> Result<(), String> {
    resolve_worker(config, module, "check").map(|_| ())
}

/// Reads a worker's stderr lines as they come: progress for `status`, notices as events,
/// everything masked into the run's log, flushed in batches.
#[allow(clippy::too_many_arguments)]
async fn consume_stderr(
    engine: Engine,
    run: Run,
    index: usize,
    task: String,
    mut masker: Masker,
    live: Arc<Mutex<Live>>,
    mut rx: mpsc::Receiver<StderrLine>,
    secrets: tokio::net::unix::pipe::Receiver,
) -> Vec<(String, String)> {
    let store = engine.store().clone();
    let mut channel = SecretChannel::new(secrets);
    let mut batch: Vec<String> = Vec::new();
    let mut last_flush = Instant::now();
    // Undo stages log without a stage number, marked instead, so `log` never confuses them
    // with the main stages.
    let (stage, mark) = match run.phase {
        Phase::Main => (Some(index + 1), String::new()),
        Phase::Undo => (None, format!("[on_failure {}] ", index + 1)),
    };
    loop {
        let line = tokio::select! {
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
            _ = channel.readable() => {
                masker = channel.drain(&masker, &mut batch);
                continue;
            }
        };
        // A worker writes its secret before it prints it: whatever is in the channel now is
        // known before this line is masked.
        masker = channel.drain(&masker, &mut batch);
        let shown = match &line {
            StderrLine::Progress(t) => {
                let masked = masker.mask(&crate::text::one_line(t, 300));
                if let Ok(mut l) = live.lock() {
                    l.progress = Some(masked.clone());
                }
                format!("progress: {masked}")
            }
            StderrLine::Notice(t) => {
                let masked = masker.mask(&crate::text::one_line(t, 300));
                let body = EventBody::for_run(&run)
                    .stage(index, &task)
                    .text(masked.clone());
                if let Err(e) = store.add_events(&[body.into_event(kind::NOTICE)]).await {
                    tracing::error!(run = run.id, error = %e, "cannot store a notice");
                }
                engine.after_events();
                format!("notice: {masked}")
            }
            StderrLine::Error(t) => format!("error: {}", masker.mask(t)),
            StderrLine::Log(t) => masker.mask(t),
        };
        batch.push(format!("{mark}{shown}"));
        if batch.len() >= 200 || last_flush.elapsed() > Duration::from_millis(500) {
            flush_log(&store, run.id, stage, &mut batch).await;
            last_flush = Instant::now();
        }
    }
    channel.finish(&masker, &mut batch);
    flush_log(&store, run.id, stage, &mut batch).await;
    channel.made
}

/// The reading end of a worker's secret channel.
struct SecretChannel {
    rx: Option<tokio::net::unix::pipe::Receiver>,
    partial: Vec<u8>,
    made: Vec<(String, String)>,
    bytes: usize,
}

/// Reads what the pipe holds right now. A plain read comes first: tokio's `try_read` trusts
/// readiness its reactor may not have seen yet, and a secret written just before a stderr
/// line must be read before that line is masked. When the pipe is empty, `try_read` lets tokio
/// see it so, and `readable` waits for new data instead of spinning.
fn read_now(rx: &tokio::net::unix::pipe::Receiver, buf: &mut [u8]) -> std::io::Result<usize> {
    match nix::unistd::read(rx, buf) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN) => rx.try_read(buf),
        Err(e) => Err(e.into()),
    }
}

/// More than this on the secret channel is no secret but a runaway worker.
const SECRET_CHANNEL_LIMIT: usize = 64 * 1024;

impl SecretChannel {
    fn new(rx: tokio::net::unix::pipe::Receiver) -> SecretChannel {
        SecretChannel {
            rx: Some(rx),
            partial: Vec::new(),
            made: Vec::new(),
            bytes: 0,
        }
    }

    async fn readable(&self) {
        match &self.rx {
            Some(rx) => {
                if rx.readable().await.is_err() {
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// The last read, once the worker is gone: a last line without its newline counts too.
    fn finish(&mut self, masker: &Masker, log: &mut Vec<String>) {
        self.drain(masker, log);
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            self.rx = None;
            self.drain(masker, log);
        }
    }

    /// Reads what is waiting, learns the secrets in it, and returns a masker that knows them.
    /// Refused lines go to the log by their reason only, never with their value.
    fn drain(&mut self, masker: &Masker, log: &mut Vec<String>) -> Masker {
        let mut buf = [0u8; 4096];
        while let Some(rx) = &self.rx {
            match read_now(rx, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.bytes += n;
                    self.partial.extend_from_slice(&buf[..n]);
                    if self.bytes > SECRET_CHANNEL_LIMIT {
                        log.push(
                            "the secret channel carried more than 64 KiB; the rest is ignored"
                                .into(),
                        );
                        self.rx = None;
                        self.partial.clear();
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.rx = None;
                    break;
                }
            }
        }
        let mut fresh = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if text.trim().is_empty() {
                continue;
            }
            match seal::parse_secret_line(&text) {
                Ok((name, value)) => {
                    log.push(format!("secret {name} received (sealed)"));
                    fresh.push(value.clone());
                    self.made.retain(|(n, _)| *n != name);
                    self.made.push((name, value));
                }
                Err(reason) => log.push(format!("ignored a line on the secret channel: {reason}")),
            }
        }
        masker.with_values(fresh.iter().map(String::as_str))
    }
}

async fn flush_log(store: &Store, run: RunId, stage: Option<usize>, batch: &mut Vec<String>) {
    if let Err(e) = store.append_log(run, stage, batch).await {
        tracing::error!(run, error = %e, "cannot store log lines");
    }
    batch.clear();
}

/// Where the working folders of workers live.
pub fn work_root(data_dir: &Path) -> PathBuf {
    data_dir.join("work")
}

/// Every stage's module must resolve to a worker under `config`; returns what does not (for
/// `check-config`).
pub fn check_workers(
    config: &EngineConfig,
    pipelines: &BTreeMap<String, pipeline::PipelineConfig>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, p) in pipelines {
        for (list, stages) in [("stages", &p.stages), ("on_failure", &p.on_failure)] {
            for (i, s) in stages.iter().enumerate() {
                let (module, _) = s.module_task();
                if let Err(e) = worker_exists(config, module) {
                    problems.push(format!("pipelines.{name}.{list}[{i}].task: {e}"));
                }
            }
        }
    }
    problems
}
