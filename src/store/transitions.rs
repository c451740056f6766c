//! The guarded moves of a run along [`lifecycle::TRANSITIONS`]: a stage's start and
//! finish, an attempt's end, a run's failure, finish, approval and resume. Every UPDATE
//! names the states it expects, checks that it changed the row, and writes the events that
//! tell of it in the same transaction.

use super::*;

/// A runner moves a run only while it holds it (or while nobody does: a run driven without
/// the cluster's claims, as the store's own tests do). `$7` is the node.
const HELD_HERE: &str = "(lease_owner IS NULL OR lease_owner = $7)";

impl Store {
    /// A stage attempt begins. Written before the worker is spawned, so that a crash can
    /// never hide that a stage may have run.
    pub async fn start_stage(
        &self,
        run: RunId,
        phase: Phase,
        stage: usize,
        attempt: u32,
        task: &str,
        events: &[NewEvent],
    ) -> Result<()> {
        let task = task.to_string();
        let events = events.to_vec();
        let node = self.node.clone();
        self.batch
            .run(Box::new(move |conn| {
                let (task, events, node) = (task.clone(), events.clone(), node.clone());
                Box::pin(async move {
                    start_stage_in(conn, &node, run, phase, stage, attempt, &task).await?;
                    insert_events(conn, &events).await
                })
            }))
            .await
    }

    /// A stage finished well: its clipboard and the run's progress are committed together,
    /// and the run moves past it (only if it was still at that stage: no stage ends twice).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_stage(
        &self,
        run: RunId,
        phase: Phase,
        stage: usize,
        attempt: u32,
        clipboard: &Clipboard,
        progress: Option<&str>,
        then: Option<NextStart<'_>>,
        host: Option<&HostChange>,
        events: &[NewEvent],
    ) -> Result<()> {
        let text = json_text(clipboard);
        let host = host.cloned();
        let progress = progress.map(str::to_string);
        let then = then.map(|n| (n.attempt, n.task.to_string()));
        let events = events.to_vec();
        let node = self.node.clone();
        self.batch
            .run(Box::new(move |conn| {
                let (text, progress, then) = (text.clone(), progress.clone(), then.clone());
                let (events, node, host) = (events.clone(), node.clone(), host.clone());
                Box::pin(async move {
                    let column = match phase {
                        Phase::Main => "clipboard",
                        Phase::OnFailure => "undo_clipboard",
                    };
                    let t = &lc::FINISH_STAGE;
                    // When the next stage starts in the same commit, this one UPDATE of the
                    // run makes both moves (finish, then start; the finish's guard is the
                    // narrower), which saves a round trip per stage.
                    let at = now_ms();
                    let (attempt_now, progress_now, started) = match &then {
                        Some((next_attempt, _)) => (*next_attempt as i64, None, Some(at)),
                        None => (0, progress.as_deref(), None),
                    };
                    let done = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE runs SET next_stage = $1, attempt = $2, {column} = $3, \
                         progress = $4, stage_started_at = COALESCE($5, stage_started_at), \
                         started_at = COALESCE(started_at, $6) \
                         WHERE id = $8 AND phase = $9 AND next_stage = $10 AND {} AND {HELD_HERE}",
                        t.guard()
                    )))
                    .bind((stage + 1) as i64)
                    .bind(attempt_now)
                    .bind(&text)
                    .bind(progress_now)
                    .bind(started)
                    .bind(started)
                    .bind(node.as_ref())
                    .bind(run)
                    .bind(phase.as_str())
                    .bind(stage as i64)
                    .execute(&mut *conn)
                    .await?;
                    expect_one(conn, run, t, done.rows_affected()).await?;
                    end_stage_attempt_well(conn, run, phase, stage, attempt, &text).await?;
                    // What the stage made or removed is recorded in the commit that keeps
                    // its clipboard: no crash can separate the two.
                    if let Some(change) = &host {
                        hosts::apply_in(conn, change).await?;
                    }
                    if let Some((next_attempt, task)) = &then {
                        insert_stage_attempt(conn, run, phase, stage + 1, *next_attempt, task, at)
                            .await?;
                    }
                    insert_events(conn, &events).await
                })
            }))
            .await
    }

    /// A stage attempt ended without success; `state` is `failed`, `tempfailed`,
    /// `cancelled` or `interrupted`. The run itself does not move.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_attempt(
        &self,
        run: RunId,
        phase: Phase,
        stage: usize,
        attempt: u32,
        state: &str,
        exit_code: Option<i32>,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE stage_runs SET state = $1, finished_at = $2, finished_us = $3, exit_code = $4, \
             error = $5 \
             WHERE run_id = $6 AND phase = $7 AND stage = $8 AND attempt = $9 AND state = 'running'",
        )
        .bind(state)
        .bind(now_ms())
        .bind(now_us())
        .bind(exit_code)
        .bind(error)
        .bind(run)
        .bind(phase.as_str())
        .bind(stage as i64)
        .bind(attempt as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The main phase failed at `stage`: either the undo stages begin, or the run is over.
    pub async fn fail_run(
        &self,
        run: RunId,
        stage: usize,
        error: &str,
        undo: bool,
        events: &[NewEvent],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let (t, sql) = if undo {
            (
                &lc::BEGIN_UNDO,
                "UPDATE runs SET phase = 'on_failure', next_stage = 0, attempt = 0, \
                 undo_clipboard = clipboard, failed_stage = $1, error = $2 \
                 WHERE id = $3 AND phase = 'main' AND",
            )
        } else {
            (
                &lc::FAIL,
                "UPDATE runs SET state = 'failed', failed_stage = $1, error = $2, finished_at = $3, \
                 lease_owner = NULL, lease_until = NULL, cancel_by = NULL \
                 WHERE id = $4 AND phase = 'main' AND",
            )
        };
        let mut query = sqlx::query(AssertSqlSafe(format!("{sql} {}", t.guard())))
            .bind(stage as i64)
            .bind(error);
        if !undo {
            query = query.bind(now_ms());
        }
        let done = query.bind(run).execute(&mut *tx).await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        if !undo {
            cluster::notify_in(&mut tx, cluster::news::WAKE).await?;
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves past an undo stage that failed, so the remaining ones still run.
    pub async fn skip_undo_stage(
        &self,
        run: RunId,
        stage: usize,
        events: &[NewEvent],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let t = &lc::FINISH_STAGE;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET next_stage = $1, attempt = 0 \
             WHERE id = $2 AND phase = 'on_failure' AND next_stage = $3 AND {}",
            t.guard()
        )))
        .bind((stage + 1) as i64)
        .bind(run)
        .bind(stage as i64)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a run by `t` (succeed, fail, or one of the cancels).
    pub async fn finish_run(
        &self,
        run: RunId,
        t: &Transition,
        error: Option<&str>,
        events: &[NewEvent],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = $1, finished_at = $2, error = COALESCE($3, error), \
             lease_owner = NULL, lease_until = NULL, cancel_by = NULL WHERE id = $4 AND {}",
            t.guard()
        )))
        .bind(t.to.as_str())
        .bind(now_ms())
        .bind(error)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        if t.to == RunState::Succeeded {
            hosts::settle_in(&mut tx, run, false).await?;
        }
        // A run that can no longer resume needs its secrets no more. A failed run keeps them
        // (sealed) for a resume, until the host's next run is queued.
        if matches!(t.to, RunState::Succeeded | RunState::Cancelled) {
            sqlx::query("DELETE FROM run_secrets WHERE run_id = $1")
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        cluster::notify_in(&mut tx, cluster::news::WAKE).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a run by `t` (wait for approval, queue again, mark interrupted) with its event.
    pub async fn set_state(&self, run: RunId, t: &Transition, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = $1, lease_owner = NULL, lease_until = NULL, cancel_by = NULL \
             WHERE id = $2 AND {}",
            t.guard()
        )))
        .bind(t.to.as_str())
        .bind(run)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        cluster::notify_in(&mut tx, cluster::news::WAKE).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Releases an approval gate: the run is queued again, its stage approved.
    pub async fn approve(&self, run: RunId, stage: usize, by: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let t = &lc::APPROVE;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = 'queued', approved_stage = $1, approved_by = $2, \
             lease_owner = NULL, lease_until = NULL, cancel_by = NULL \
             WHERE id = $3 AND next_stage = $4 AND {}",
            t.guard()
        )))
        .bind(stage as i64)
        .bind(by)
        .bind(run)
        .bind(stage as i64)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        cluster::notify_in(&mut tx, cluster::news::WAKE).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a failed or interrupted run again: an interrupted run where it stopped (in its
    /// undo, if it was undoing), a failed one at the main stage that failed. A run whose undo
    /// ran cannot resume: what it made is gone.
    pub async fn resume(&self, run: &Run) -> Result<()> {
        let (phase, next, attempt) = match (run.state, run.phase, run.failed_stage) {
            (RunState::Interrupted, phase, _) => (phase, run.next_stage, run.attempt),
            (RunState::Failed, Phase::Main, failed) => {
                (Phase::Main, failed.unwrap_or(run.next_stage), 0)
            }
            _ => {
                return Err(StoreError::Refused {
                    run: run.id,
                    transition: lc::RESUME.name,
                    state: describe(run.state, run.phase),
                });
            }
        };
        let mut tx = self.begin().await?;
        if let Some(other) = active_for_host(&mut tx, &run.host).await?
            && other != run.id
        {
            return Err(StoreError::HostBusy {
                host: run.host.clone(),
                run: other,
            });
        }
        let t = &lc::RESUME;
        // Resuming the undo keeps the failure it undoes; resuming the main stages forgets it.
        let keep_failure = phase == Phase::OnFailure;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = 'queued', phase = $1, next_stage = $2, attempt = $3, \
             error = CASE WHEN $4 THEN error END, \
             failed_stage = CASE WHEN $5 THEN failed_stage END, \
             undo_clipboard = CASE WHEN $6 THEN undo_clipboard END, finished_at = NULL, \
             lease_owner = NULL, lease_until = NULL, cancel_by = NULL \
             WHERE id = $7 AND state = $8 AND phase = $9 AND {}",
            t.guard()
        )))
        .bind(phase.as_str())
        .bind(next as i64)
        .bind(attempt as i64)
        .bind(keep_failure)
        .bind(keep_failure)
        .bind(keep_failure)
        .bind(run.id)
        .bind(run.state.as_str())
        .bind(run.phase.as_str())
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run.id, t, done.rows_affected()).await?;
        cluster::notify_in(&mut tx, cluster::news::WAKE).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_progress(&self, run: RunId, progress: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET progress = $1 WHERE id = $2")
            .bind(progress)
            .bind(run)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn add_events(&self, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Starts stage `stage` of `run` inside a transaction: the run must be at that stage, in a
/// state the table lets start, and the attempt is written before any worker is spawned.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_stage_in(
    tx: &mut AnyConnection,
    node: &str,
    run: RunId,
    phase: Phase,
    stage: usize,
    attempt: u32,
    task: &str,
) -> Result<()> {
    let at = now_ms();
    let t = &lc::START_STAGE;
    let done = sqlx::query(AssertSqlSafe(format!(
        "UPDATE runs SET state = 'running', attempt = $1, stage_started_at = $2, \
         progress = NULL, started_at = COALESCE(started_at, $3) \
         WHERE id = $4 AND phase = $5 AND next_stage = $6 AND {} AND {HELD_HERE}",
        t.guard()
    )))
    .bind(attempt as i64)
    .bind(at)
    .bind(at)
    .bind(run)
    .bind(phase.as_str())
    .bind(stage as i64)
    .bind(node)
    .execute(&mut *tx)
    .await?;
    expect_one(tx, run, t, done.rows_affected()).await?;
    insert_stage_attempt(tx, run, phase, stage, attempt, task, at).await
}

/// A stage attempt that succeeded, with the clipboard it left.
async fn end_stage_attempt_well(
    tx: &mut AnyConnection,
    run: RunId,
    phase: Phase,
    stage: usize,
    attempt: u32,
    clipboard: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE stage_runs SET state = 'succeeded', finished_at = $1, \
         finished_us = $2, exit_code = 0, clipboard = $3 \
         WHERE run_id = $4 AND phase = $5 AND stage = $6 AND attempt = $7",
    )
    .bind(now_ms())
    .bind(now_us())
    .bind(clipboard)
    .bind(run)
    .bind(phase.as_str())
    .bind(stage as i64)
    .bind(attempt as i64)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The row of a stage attempt that begins (again, after an interrupted one, in place).
async fn insert_stage_attempt(
    tx: &mut AnyConnection,
    run: RunId,
    phase: Phase,
    stage: usize,
    attempt: u32,
    task: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO stage_runs \
         (run_id, phase, stage, attempt, task, state, started_at, started_us) \
         VALUES ($1, $2, $3, $4, $5, 'running', $6, $7) \
         ON CONFLICT (run_id, phase, stage, attempt) DO UPDATE SET task = excluded.task, \
         state = excluded.state, started_at = excluded.started_at, \
         started_us = excluded.started_us, finished_at = NULL, finished_us = NULL, \
         exit_code = NULL, error = NULL, clipboard = NULL",
    )
    .bind(run)
    .bind(phase.as_str())
    .bind(stage as i64)
    .bind(attempt as i64)
    .bind(task)
    .bind(at)
    .bind(now_us())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How a run's state reads in a refusal: a failed run whose undo ran says so.
pub(super) fn describe(state: RunState, phase: Phase) -> String {
    match (state, phase) {
        (RunState::Failed, Phase::OnFailure) => "failed and undone".into(),
        (RunState::Interrupted, Phase::OnFailure) => "interrupted while undoing".into(),
        _ => state.as_str().replace('_', " "),
    }
}

/// A run's state and phase as stored, to say why a guarded transition was refused.
#[derive(sqlx::FromRow)]
struct WhereRunIs {
    state: String,
    phase: String,
}

/// Checks that a guarded update moved exactly the run; if not, says why in the table's terms.
pub(super) async fn expect_one(
    tx: &mut AnyConnection,
    run: RunId,
    t: &Transition,
    rows: u64,
) -> Result<()> {
    if rows == 1 {
        return Ok(());
    }
    let row: Option<WhereRunIs> = sqlx::query_as("SELECT state, phase FROM runs WHERE id = $1")
        .bind(run)
        .fetch_optional(&mut *tx)
        .await?;
    let state = match row {
        Some(WhereRunIs { state, phase }) => {
            match (RunState::parse(&state), Phase::parse(&phase)) {
                (Some(s), Some(p)) if t.allows(s) => format!("{} at another stage", describe(s, p)),
                (Some(s), Some(p)) => describe(s, p),
                _ => state,
            }
        }
        None => "unknown".into(),
    };
    Err(StoreError::Refused {
        run,
        transition: t.name,
        state,
    })
}
