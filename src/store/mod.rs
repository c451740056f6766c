//! The durable state: runs and their stages, log lines, engine events, the notification
//! outbox and the audit log, in SQLite (WAL, synchronous=FULL). Every run transition is one
//! transaction, and an event that tells of it is written in that same transaction, so nothing
//! the engine did can go unannounced.
//!
//! All SQL lives here; callers see typed rows and named transitions. Queries are checked by
//! the tests rather than by sqlx's macros, so building needs no database.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqliteConnection, Transaction};

use crate::clipboard::Clipboard;
use crate::model::{RunKind, Stage};

mod batch;
pub mod lifecycle;
mod outbox;
mod retention;
mod trust;
use lifecycle as lc;
pub use lifecycle::{Phase, RunState, Transition};
pub use outbox::{EventRow, NewOutbox, OutboxRow, Undeliverable};
pub use retention::Pruned;
pub use trust::{HostKey, PinnedKey};

pub type RunId = i64;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    pub host: String,
    pub kind: RunKind,
    pub pipeline: String,
    pub stages: Vec<Stage>,
    pub on_failure: Vec<Stage>,
    pub design_ref: String,
    pub requester: String,
    pub origin: String,
    pub state: RunState,
    pub phase: Phase,
    pub next_stage: usize,
    pub attempt: u32,
    pub approved_stage: Option<usize>,
    pub approved_by: Option<String>,
    pub initial_clipboard: Clipboard,
    pub clipboard: Clipboard,
    pub undo_clipboard: Option<Clipboard>,
    pub failed_stage: Option<usize>,
    pub error: Option<String>,
    pub progress: Option<String>,
    pub retry_of: Option<RunId>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stage_started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl Run {
    /// The stages of the phase the run is in.
    pub fn phase_stages(&self) -> &[Stage] {
        match self.phase {
            Phase::Main => &self.stages,
            Phase::Undo => &self.on_failure,
        }
    }
}

/// What it takes to queue a run.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub host: String,
    pub kind: RunKind,
    pub pipeline: String,
    pub stages: Vec<Stage>,
    pub on_failure: Vec<Stage>,
    pub design_ref: String,
    pub requester: String,
    pub origin: String,
    pub clipboard: Clipboard,
    pub retry_of: Option<RunId>,
}

/// A stage to start in the same commit that finishes the one before it.
#[derive(Debug, Clone, Copy)]
pub struct NextStart<'a> {
    pub stage: usize,
    pub attempt: u32,
    pub task: &'a str,
}

/// Microseconds since the Unix epoch: stage timings are kept at this resolution.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// An engine event to store with a transition.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub run_id: RunId,
    pub kind: &'static str,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct StageRunRow {
    pub phase: String,
    pub stage: usize,
    pub attempt: u32,
    pub task: String,
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// The verified identity key (`irc:libera:alice`), or `unverified:NICK`.
    pub identity: String,
    /// The person the identity belongs to, when the configuration names one.
    pub person: Option<String>,
    pub network: String,
    pub channel: String,
    pub command: String,
    pub outcome: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("host {host} already has an active run #{run}")]
    HostBusy { host: String, run: RunId },
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stored value is damaged: {0}")]
    Corrupt(String),
    /// The writer could not take or commit a write (no connection, a failed commit).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A transition the life cycle does not allow from the state the run is in.
    #[error("run #{run} is {state}, so jarvis cannot {transition} it")]
    Refused {
        run: RunId,
        transition: &'static str,
        state: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Store {
    /// SQLite has one writer at a time; a single connection queues writes in order instead
    /// of letting them collide on the database lock.
    writer: SqlitePool,
    reader: SqlitePool,
    /// The stage transitions and log lines of many runs, committed together.
    batch: batch::Batcher,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const RUN_COLUMNS: &str = "id, host, kind, pipeline, stages, on_failure, design_ref, requester, \
    origin, state, phase, next_stage, attempt, approved_stage, approved_by, initial_clipboard, \
    clipboard, undo_clipboard, failed_stage, error, progress, retry_of, created_at, started_at, \
    stage_started_at, finished_at";

impl Store {
    /// Opens (creating if needed) the database at `url` and applies the migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if let Some(parent) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .connect_with(options.read_only(true))
            .await?;
        let batch = batch::Batcher::start(writer.clone());
        Ok(Store {
            writer,
            reader,
            batch,
        })
    }

    /// Applies the migrations only (`jarvis migrate`); returns how many were applied.
    /// Applies the migrations only (`jarvis migrate`); returns how many this call applied
    /// and how many the database now has.
    pub async fn migrate(url: &str) -> Result<(usize, usize)> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let before = if std::path::Path::new(path).exists() {
            let options = SqliteConnectOptions::from_str(url)?.read_only(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&pool)
            .await?;
            let count = if n == 0 {
                0
            } else {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
                    .fetch_one(&pool)
                    .await?
            };
            pool.close().await;
            count as usize
        } else {
            0
        };
        let store = Store::open(url).await?;
        let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&store.reader)
            .await?;
        store.close().await;
        let after = after as usize;
        Ok((after.saturating_sub(before), after))
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin().await?)
    }

    // ---- runs ------------------------------------------------------------------------

    /// Queues a run; refused when the host already has an active one.
    pub async fn insert_run(&self, new: &NewRun) -> Result<RunId> {
        let mut tx = self.begin().await?;
        if let Some(run) = active_for_host(&mut tx, &new.host).await? {
            return Err(StoreError::HostBusy {
                host: new.host.clone(),
                run,
            });
        }
        // A new run of the host supersedes its earlier ones: secrets a failed run kept for a
        // resume are erased now.
        sqlx::query("DELETE FROM run_secrets WHERE run_id IN (SELECT id FROM runs WHERE host = ?)")
            .bind(&new.host)
            .execute(&mut *tx)
            .await?;
        let clipboard = json_text(&new.clipboard);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (host, kind, pipeline, stages, on_failure, design_ref, requester, \
             origin, state, initial_clipboard, clipboard, retry_of, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING id",
        )
        .bind(&new.host)
        .bind(new.kind.as_str())
        .bind(&new.pipeline)
        .bind(json_text(&new.stages))
        .bind(json_text(&new.on_failure))
        .bind(&new.design_ref)
        .bind(&new.requester)
        .bind(&new.origin)
        .bind(&clipboard)
        .bind(&clipboard)
        .bind(new.retry_of)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        // The run id is known only now; the clipboard's `jarvis` mapping carries it.
        sqlx::query(
            "UPDATE runs SET clipboard = json_set(clipboard, '$.jarvis.run_id', ?1), \
             initial_clipboard = json_set(initial_clipboard, '$.jarvis.run_id', ?1) WHERE id = ?1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn run(&self, id: RunId) -> Result<Option<Run>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    pub async fn active_run_for_host(&self, host: &str) -> Result<Option<Run>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE host = ? AND {} ORDER BY id DESC LIMIT 1",
            lc::active_states_sql()
        )))
        .bind(host)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// The newest run of a host, active or not.
    pub async fn last_run_for_host(&self, host: &str) -> Result<Option<Run>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE host = ? ORDER BY id DESC LIMIT 1"
        )))
        .bind(host)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    pub async fn runs_in_state(&self, state: RunState) -> Result<Vec<Run>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = ? ORDER BY id"
        )))
        .bind(state.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn active_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE {} ORDER BY id",
            lc::active_states_sql()
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn count_active(&self) -> Result<usize> {
        // Interrupted runs wait for a person, not for jarvis: they do not count as busy.
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM runs WHERE {}",
            lc::state_list(&[
                RunState::Queued,
                RunState::Running,
                RunState::WaitingApproval
            ])
        )))
        .fetch_one(&self.reader)
        .await?;
        Ok(n as usize)
    }

    /// The ids of queued runs, oldest first.
    pub async fn queued_ids(&self) -> Result<Vec<RunId>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE state = 'queued' ORDER BY id")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// The last `n` runs, newest first, of one host or all.
    pub async fn history(&self, host: Option<&str>, n: usize) -> Result<Vec<Run>> {
        let rows = match host {
            Some(h) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE host = ? ORDER BY id DESC LIMIT ?"
                )))
                .bind(h)
                .bind(n as i64)
                .fetch_all(&self.reader)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?"
                )))
                .bind(n as i64)
                .fetch_all(&self.reader)
                .await?
            }
        };
        rows.iter().map(run_from_row).collect()
    }

    pub async fn stage_runs(&self, run: RunId) -> Result<Vec<StageRunRow>> {
        let rows = sqlx::query(
            "SELECT phase, stage, attempt, task, state FROM stage_runs WHERE run_id = ? \
             ORDER BY started_at, phase, stage, attempt",
        )
        .bind(run)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StageRunRow {
                    phase: r.try_get("phase")?,
                    stage: r.try_get::<i64, _>("stage")? as usize,
                    attempt: r.try_get::<i64, _>("attempt")? as u32,
                    task: r.try_get("task")?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }

    /// The clipboard a finished stage produced.
    pub async fn stage_clipboard(&self, run: RunId, stage: usize) -> Result<Option<Clipboard>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT clipboard FROM stage_runs WHERE run_id = ? AND phase = 'main' AND stage = ? \
             AND state = 'succeeded' ORDER BY attempt DESC LIMIT 1",
        )
        .bind(run)
        .bind(stage as i64)
        .fetch_optional(&self.reader)
        .await?
        .flatten();
        text.map(|t| parse_json(&t)).transpose()
    }

    // ---- transitions -----------------------------------------------------------------

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
        self.batch
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    start_stage_in(conn, run, phase, stage, attempt, &task).await?;
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
        events: &[NewEvent],
    ) -> Result<()> {
        let text = json_text(clipboard);
        let progress = progress.map(str::to_string);
        let then = then.map(|n| (n.stage, n.attempt, n.task.to_string()));
        let events = events.to_vec();
        self.batch
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let column = match phase {
                        Phase::Main => "clipboard",
                        Phase::Undo => "undo_clipboard",
                    };
                    let t = &lc::FINISH_STAGE;
                    let done = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE runs SET next_stage = ?, attempt = 0, {column} = ?, progress = ? \
                         WHERE id = ? AND phase = ? AND next_stage = ? AND {}",
                        t.guard()
                    )))
                    .bind((stage + 1) as i64)
                    .bind(&text)
                    .bind(progress.as_deref())
                    .bind(run)
                    .bind(phase.as_str())
                    .bind(stage as i64)
                    .execute(&mut *conn)
                    .await?;
                    expect_one(conn, run, t, done.rows_affected()).await?;
                    sqlx::query(
                        "UPDATE stage_runs SET state = 'succeeded', finished_at = ?, \
                         finished_us = ?, exit_code = 0, clipboard = ? \
                         WHERE run_id = ? AND phase = ? AND stage = ? AND attempt = ?",
                    )
                    .bind(now_ms())
                    .bind(now_us())
                    .bind(&text)
                    .bind(run)
                    .bind(phase.as_str())
                    .bind(stage as i64)
                    .bind(attempt as i64)
                    .execute(&mut *conn)
                    .await?;
                    if let Some((next, next_attempt, task)) = &then {
                        start_stage_in(conn, run, phase, *next, *next_attempt, task).await?;
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
            "UPDATE stage_runs SET state = ?, finished_at = ?, finished_us = ?, exit_code = ?, \
             error = ? \
             WHERE run_id = ? AND phase = ? AND stage = ? AND attempt = ? AND state = 'running'",
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
                 undo_clipboard = clipboard, failed_stage = ?, error = ? \
                 WHERE id = ? AND phase = 'main' AND",
            )
        } else {
            (
                &lc::FAIL,
                "UPDATE runs SET state = 'failed', failed_stage = ?, error = ?, finished_at = ? \
                 WHERE id = ? AND phase = 'main' AND",
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
            "UPDATE runs SET next_stage = ?, attempt = 0 \
             WHERE id = ? AND phase = 'on_failure' AND next_stage = ? AND {}",
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
            "UPDATE runs SET state = ?, finished_at = ?, error = COALESCE(?, error) \
             WHERE id = ? AND {}",
            t.guard()
        )))
        .bind(t.to.as_str())
        .bind(now_ms())
        .bind(error)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        // A run that can no longer resume needs its secrets no more. A failed run keeps them
        // (sealed) for a resume, until the host's next run is queued.
        if matches!(t.to, RunState::Succeeded | RunState::Cancelled) {
            sqlx::query("DELETE FROM run_secrets WHERE run_id = ?")
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a run by `t` (wait for approval, queue again, mark interrupted) with its event.
    pub async fn set_state(&self, run: RunId, t: &Transition, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = ? WHERE id = ? AND {}",
            t.guard()
        )))
        .bind(t.to.as_str())
        .bind(run)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Releases an approval gate: the run is queued again, its stage approved.
    pub async fn approve(&self, run: RunId, stage: usize, by: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let t = &lc::APPROVE;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = 'queued', approved_stage = ?, approved_by = ? \
             WHERE id = ? AND next_stage = ? AND {}",
            t.guard()
        )))
        .bind(stage as i64)
        .bind(by)
        .bind(run)
        .bind(stage as i64)
        .execute(&mut *tx)
        .await?;
        expect_one(&mut tx, run, t, done.rows_affected()).await?;
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
        let keep_failure = phase == Phase::Undo;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET state = 'queued', phase = ?, next_stage = ?, attempt = ?, \
             error = CASE WHEN ? THEN error END, \
             failed_stage = CASE WHEN ? THEN failed_stage END, \
             undo_clipboard = CASE WHEN ? THEN undo_clipboard END, finished_at = NULL \
             WHERE id = ? AND state = ? AND phase = ? AND {}",
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
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_progress(&self, run: RunId, progress: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET progress = ? WHERE id = ?")
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

    // ---- log lines -------------------------------------------------------------------

    /// Stores a batch of (already masked) log lines.
    pub async fn append_log(
        &self,
        run: RunId,
        stage: Option<usize>,
        lines: &[String],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let at = now_ms();
        let lines = lines.to_vec();
        self.batch
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    for line in &lines {
                        sqlx::query(
                            "INSERT INTO log_lines (run_id, stage, at, line) VALUES (?, ?, ?, ?)",
                        )
                        .bind(run)
                        .bind(stage.map(|s| s as i64))
                        .bind(at)
                        .bind(line)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            }))
            .await
    }

    /// The last `n` log lines of a run, oldest first, with their 1-based stage.
    pub async fn log_tail(&self, run: RunId, n: usize) -> Result<Vec<(Option<usize>, String)>> {
        let rows = sqlx::query(
            "SELECT stage, line FROM (SELECT id, stage, line FROM log_lines WHERE run_id = ? \
             ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(run)
        .bind(n as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<Option<i64>, _>("stage")?.map(|s| s as usize),
                    r.try_get("line")?,
                ))
            })
            .collect()
    }

    // ---- audit -----------------------------------------------------------------------

    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, identity, person, network, channel, command, outcome) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(&entry.identity)
        .bind(&entry.person)
        .bind(&entry.network)
        .bind(&entry.channel)
        .bind(&entry.command)
        .bind(&entry.outcome)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT identity, person, network, channel, command, outcome FROM audit \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(n as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    identity: r.try_get("identity")?,
                    person: r.try_get("person")?,
                    network: r.try_get("network")?,
                    channel: r.try_get("channel")?,
                    command: r.try_get("command")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect()
    }
}

async fn active_for_host(tx: &mut SqliteConnection, host: &str) -> Result<Option<RunId>> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM runs WHERE host = ? AND {} LIMIT 1",
        lc::active_states_sql()
    )))
    .bind(host)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Starts stage `stage` of `run` inside a transaction: the run must be at that stage, in a
/// state the table lets start, and the attempt is written before any worker is spawned.
async fn start_stage_in(
    tx: &mut SqliteConnection,
    run: RunId,
    phase: Phase,
    stage: usize,
    attempt: u32,
    task: &str,
) -> Result<()> {
    let at = now_ms();
    let t = &lc::START_STAGE;
    let done = sqlx::query(AssertSqlSafe(format!(
        "UPDATE runs SET state = 'running', attempt = ?, stage_started_at = ?, \
         progress = NULL, started_at = COALESCE(started_at, ?) \
         WHERE id = ? AND phase = ? AND next_stage = ? AND {}",
        t.guard()
    )))
    .bind(attempt as i64)
    .bind(at)
    .bind(at)
    .bind(run)
    .bind(phase.as_str())
    .bind(stage as i64)
    .execute(&mut *tx)
    .await?;
    expect_one(tx, run, t, done.rows_affected()).await?;
    sqlx::query(
        "INSERT OR REPLACE INTO stage_runs \
         (run_id, phase, stage, attempt, task, state, started_at, started_us) \
         VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
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
fn describe(state: RunState, phase: Phase) -> String {
    match (state, phase) {
        (RunState::Failed, Phase::Undo) => "failed and undone".into(),
        (RunState::Interrupted, Phase::Undo) => "interrupted while undoing".into(),
        _ => state.as_str().replace('_', " "),
    }
}

/// Checks that a guarded update moved exactly the run; if not, says why in the table's terms.
async fn expect_one(
    tx: &mut SqliteConnection,
    run: RunId,
    t: &Transition,
    rows: u64,
) -> Result<()> {
    if rows == 1 {
        return Ok(());
    }
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT state, phase FROM runs WHERE id = ?")
            .bind(run)
            .fetch_optional(&mut *tx)
            .await?;
    let state = match row {
        Some((state, phase)) => match (RunState::parse(&state), Phase::parse(&phase)) {
            (Some(s), Some(p)) if t.allows(s) => format!("{} at another stage", describe(s, p)),
            (Some(s), Some(p)) => describe(s, p),
            _ => state,
        },
        None => "unknown".into(),
    };
    Err(StoreError::Refused {
        run,
        transition: t.name,
        state,
    })
}

async fn insert_events(tx: &mut SqliteConnection, events: &[NewEvent]) -> Result<()> {
    for e in events {
        sqlx::query("INSERT INTO events (run_id, at, kind, body) VALUES (?, ?, ?, ?)")
            .bind(e.run_id)
            .bind(now_ms())
            .bind(e.kind)
            .bind(e.body.to_string())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn run_from_row(r: &SqliteRow) -> Result<Run> {
    let kind: String = r.try_get("kind")?;
    let state: String = r.try_get("state")?;
    let phase: String = r.try_get("phase")?;
    let undo: Option<String> = r.try_get("undo_clipboard")?;
    Ok(Run {
        id: r.try_get("id")?,
        host: r.try_get("host")?,
        kind: RunKind::parse(&kind).unwrap_or_default(),
        pipeline: r.try_get("pipeline")?,
        stages: parse_json(&r.try_get::<String, _>("stages")?)?,
        on_failure: parse_json(&r.try_get::<String, _>("on_failure")?)?,
        design_ref: r.try_get("design_ref")?,
        requester: r.try_get("requester")?,
        origin: r.try_get("origin")?,
        state: RunState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("run state '{state}'")))?,
        phase: Phase::parse(&phase)
            .ok_or_else(|| StoreError::Corrupt(format!("run phase '{phase}'")))?,
        next_stage: r.try_get::<i64, _>("next_stage")? as usize,
        attempt: r.try_get::<i64, _>("attempt")? as u32,
        approved_stage: r
            .try_get::<Option<i64>, _>("approved_stage")?
            .map(|s| s as usize),
        approved_by: r.try_get("approved_by")?,
        initial_clipboard: parse_json(&r.try_get::<String, _>("initial_clipboard")?)?,
        clipboard: parse_json(&r.try_get::<String, _>("clipboard")?)?,
        undo_clipboard: undo.map(|t| parse_json(&t)).transpose()?,
        failed_stage: r
            .try_get::<Option<i64>, _>("failed_stage")?
            .map(|s| s as usize),
        error: r.try_get("error")?,
        progress: r.try_get("progress")?,
        retry_of: r.try_get("retry_of")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        stage_started_at: r.try_get("stage_started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}
