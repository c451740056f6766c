//! The scheduler and the per-run loop: which run goes next, each stage started (or held for
//! approval), retried with backoff, finished, failed into the `on_failure` stages, or
//! cancelled; every transition stored with the events that tell of it.

use super::stage::{RunContext, StageVerdict};
use super::*;

impl Engine {
    pub(super) async fn schedule(self) {
        loop {
            // This process drives at most `max_workers` runs; the cluster as a whole too
            // (the claim counts every node's).
            let limit = self.inner.config.max_workers.max(1);
            let room = limit.saturating_sub(self.lock_active().len());
            match self
                .inner
                .store
                .claim_runs(room, limit, self.inner.config.lease)
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        self.spawn_drive(id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot claim queued runs"),
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Drives a run this node holds, in a task of its own.
    fn spawn_drive(&self, id: RunId) {
        let token = {
            let mut active = self.lock_active();
            if active.contains_key(&id) {
                return;
            }
            // A run's cancel is its own: a graceful stop of jarvis cancels nothing.
            let cancel = CancellationToken::new();
            active.insert(
                id,
                ActiveRun {
                    cancel: cancel.clone(),
                    cancelled_by: Arc::new(Mutex::new(None)),
                    live: Arc::new(Mutex::new(StageProgress::default())),
                },
            );
            cancel
        };
        let engine = self.clone();
        tokio::spawn(async move {
            match engine.drive(id, token).await {
                Ok(()) => {}
                // A guarded write refused: the run moved on without this process, as after
                // a freeze that outlived the lease. Fencing did its work; nothing is wrong
                // inside jarvis.
                Err(EngineError::Store(StoreError::Refused { state, .. })) => {
                    let holder = match engine.inner.store.run(id).await {
                        Ok(Some(run)) => run.lease_owner,
                        _ => None,
                    };
                    match holder.filter(|n| n != engine.inner.store.node()) {
                        Some(node) => tracing::warn!(
                            run = id,
                            "lost run #{id} to node {node} while frozen; its result discarded"
                        ),
                        None => tracing::warn!(
                            run = id,
                            "run #{id} moved on without this node (it is {state} now); its result discarded"
                        ),
                    }
                }
                Err(e) => {
                    tracing::error!(run = id, error = %e, "run stopped on an internal error")
                }
            }
            // A run left queued (a stop, a refused start) is free for any node to claim.
            if let Err(e) = engine.inner.store.release(id).await {
                tracing::warn!(run = id, error = %e, "cannot let go of a run");
            }
            engine.lock_active().remove(&id);
            engine.inner.settled.notify_waiters();
            // A run that ended may have freed its host, or a place, for another.
            engine.inner.wake.notify_one();
        });
    }

    /// Pushes one run through its stages until it ends or has to wait.
    pub(super) async fn drive(
        &self,
        id: RunId,
        cancel: CancellationToken,
    ) -> Result<(), EngineError> {
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
                StageVerdict::Done {
                    clipboard,
                    progress,
                } => {
                    let clipboard = clipboard.unwrap_or_else(|| current_clipboard(&run).clone());
                    let host = super::hosts::change_of(&run, current_clipboard(&run), &clipboard);
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
                            host.as_ref(),
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
                            Phase::OnFailure => next_run.undo_clipboard = Some(clipboard),
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
                StageVerdict::Halted => return Ok(()),
                StageVerdict::Cancelled => {
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
                StageVerdict::Failed {
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
    pub(super) fn start_events(
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

    pub(super) async fn finish(&self, run: &Run) -> Result<(), EngineError> {
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
            Phase::OnFailure => {
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

    pub(super) async fn fail(
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
            Phase::OnFailure => {
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

    pub(super) async fn end_cancelled(
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
}

pub(super) fn current_clipboard(run: &Run) -> &Clipboard {
    match (run.phase, &run.undo_clipboard) {
        (Phase::OnFailure, Some(c)) => c,
        _ => &run.clipboard,
    }
}

pub(super) fn needs_approval(stage: &Stage, run: &Run) -> bool {
    gated(stage, run.next_stage, &run.clipboard, run.approved_stage)
}

/// Whether stage `index` must wait for an approver, judged on the clipboard before it.
pub(super) fn gated(
    stage: &Stage,
    index: usize,
    clipboard: &Clipboard,
    approved: Option<usize>,
) -> bool {
    let gate = stage.approval
        || stage
            .approval_if
            .as_deref()
            .is_some_and(|path| clipboard::is_truthy(clipboard::get_path(clipboard, path)));
    gate && approved != Some(index)
}

pub(super) fn backoff(first_ms: u64, attempt: u32) -> Duration {
    let factor = 1u64 << (attempt.saturating_sub(1)).min(10);
    Duration::from_millis(first_ms.saturating_mul(factor).min(10 * 60 * 1000))
}
