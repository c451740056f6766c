//! The engine: queues runs, pushes each run's clipboard through its stages by running worker
//! processes, and records every transition in the store together with the event that tells
//! of it. It knows nothing of chat, designs or what any worker does.

pub mod events;
mod hosts;
mod lease;
pub mod pipeline;
pub mod recovery;
mod resolve;
mod schedule;
pub mod scratch;
mod stage;
mod stderr;
mod trust;
pub mod worker;

pub use resolve::{check_folders, check_workers, resolve_worker, worker_exists};
pub use trust::is_host_key;

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
use worker::WorkerSpec;

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
    /// Where the stages' working folders and the workers' markers live
    /// ([`scratch::choose`]).
    pub scratch_dir: PathBuf,
    /// Where an older jarvis kept them (`DATA/work`, `DATA/running`): read once at start,
    /// for the workers it may have left.
    pub data_dir: PathBuf,
    pub worker_folders: Vec<PathBuf>,
    pub builtin: Option<BuiltinWorkers>,
    /// Per module, the environment it is granted.
    pub grants: BTreeMap<String, BTreeMap<String, String>>,
    pub max_workers: usize,
    pub stdout_cap: usize,
    pub stderr_keep: usize,
    /// What one stage may leave in the store.
    pub stage_caps: StageCaps,
    /// Per module, the other modules whose run secrets its stages are handed; a module's
    /// stages always get the secrets its own stages made, and no others unless listed here.
    pub secrets_from: BTreeMap<String, Vec<String>>,
    pub kill_grace: Duration,
    pub masker: Masker,
    /// Seals what workers hand back on their secret channel; without it a worker that makes a
    /// secret fails (it could not be kept safely).
    pub sealer: Option<Arc<Sealer>>,
    /// How long this node's hold on a run lasts without renewal (see `lease`).
    pub lease: Duration,
    /// This process is the only one on its database (SQLite): at start it recovers every
    /// run left running, whoever's lease it carries.
    pub sole: bool,
}

/// Caps on what one stage may leave in the store; past one the stage fails.
#[derive(Debug, Clone, Copy)]
pub struct StageCaps {
    /// Stderr lines stored as the run's log.
    pub log_lines: usize,
    /// Bytes of stderr stored as the run's log.
    pub log_bytes: usize,
    /// The parsed clipboard's size (about its JSON length) after YAML aliases are expanded.
    pub clipboard_bytes: usize,
}

impl Default for StageCaps {
    fn default() -> Self {
        StageCaps {
            log_lines: 10_000,
            log_bytes: 1024 * 1024,
            clipboard_bytes: clipboard::DEFAULT_PARSED_CAP,
        }
    }
}

/// What `status` shows of a stage under way, kept in memory: progress lines change too often
/// to be worth a write each.
#[derive(Debug, Clone, Default)]
pub struct StageProgress {
    pub progress: Option<String>,
}

struct ActiveRun {
    cancel: CancellationToken,
    /// Who cancelled it, for the event that tells of the end.
    cancelled_by: Arc<Mutex<Option<String>>>,
    live: Arc<Mutex<StageProgress>>,
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
    /// Rung when another node may have asked to cancel a run this one drives.
    cancels: Notify,
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
                cancels: Notify::new(),
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
        self.inner.store.register_node().await?;
        recovery::recover(self).await?;
        let engine = self.clone();
        tokio::spawn(async move { engine.schedule().await });
        let engine = self.clone();
        tokio::spawn(async move { engine.keep_leases().await });
        self.inner.wake.notify_one();
        self.inner.events_written.notify_one();
        Ok(())
    }

    /// Looks for queued runs to claim: a run was queued or a lease freed somewhere.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Resolves when a run next reaches an end or stops to wait (what a rollout's driver
    /// waits for); `enable` it before looking at the store, so no settling is missed.
    pub fn settled(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.settled.notified()
    }

    /// Whether a stop began.
    pub fn is_stopping(&self) -> bool {
        self.inner.shutdown.is_cancelled()
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
        self.tidy_scratch();
    }

    /// Removes what is left of the scratch folder, when no run is driven here any more.
    pub fn tidy_scratch(&self) {
        if self.lock_active().is_empty() {
            scratch::tidy(&self.inner.config.scratch_dir);
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
    pub fn live(&self, id: RunId) -> Option<StageProgress> {
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
            // Running on another node: its runner stops it, as if asked there.
            if run.state == RunState::Running
                && run
                    .lease_owner
                    .as_deref()
                    .is_some_and(|owner| owner != self.inner.store.node())
                && self.inner.store.request_cancel(id, by).await?
            {
                return Ok(());
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
        if run.state == RunState::Failed && run.phase == Phase::OnFailure {
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

    /// Waits until run `id` is neither queued nor running, or `limit` has passed; the run
    /// as it stands then.
    pub async fn wait_for_end(&self, id: RunId, limit: Duration) -> Result<Run, EngineError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let run = self.run(id).await?;
            if !matches!(run.state, RunState::Queued | RunState::Running) {
                return Ok(run);
            }
            // `settled` rings for runs this node drives; a run another node of a cluster took
            // is looked at again each second.
            tokio::select! {
                _ = &mut settled => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::time::sleep_until(deadline) => return self.run(id).await,
            }
        }
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
            // Another node on the same database may end the last run, and that never
            // notifies this process: look again now and then as well.
            tokio::select! {
                _ = settled => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
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
}

/// How long a run has taken so far.
pub fn run_duration(run: &Run) -> u64 {
    let start = run.started_at.unwrap_or(run.created_at);
    let end = run.finished_at.unwrap_or_else(now_ms);
    (end - start).max(0) as u64
}
