//! The durable state: runs and their stages, log lines, engine events, the notification
//! outbox and the audit log, in SQLite (WAL, synchronous=FULL) or PostgreSQL. Every run
//! transition is one transaction, and an event that tells of it is written in that same
//! transaction, so nothing the engine did can go unannounced.
//!
//! All SQL lives here; callers see typed rows and named transitions. One text per query
//! serves both databases (sqlx's `Any` driver; `$N` parameters, which SQLite reads too, and
//! no function only one of them has); each has its own migrations. Queries are checked by
//! the tests, against both, rather than by sqlx's macros, so building needs no database.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Executor, Transaction};

use crate::clipboard::Clipboard;
use crate::model::{RunKind, Stage};

mod batch;
pub mod cluster;
mod hosts;
mod journal;
pub mod lifecycle;
mod outbox;
mod retention;
mod rollout;
mod transitions;
mod triggers;
mod trust;
mod web;
pub use cluster::{NodeRow, Role};
pub use hosts::{HostChange, HostRecord, HostState};
use lifecycle as lc;
pub use lifecycle::{Phase, RunState, Transition};
pub use outbox::{EventRow, NewOutbox, OutboxRow, Undeliverable};
pub use retention::Pruned;
pub use rollout::{NewRollout, Rollout, RolloutHost, RolloutState};
pub use triggers::{DeliveryKeys, ScheduleRow};
pub use trust::{HostKey, PinnedKey};
pub use web::{ApiToken, RunFilter, StageDurations, StageTiming, WRITE_BUCKETS};

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
    /// The node whose runner holds the run (on a cluster: which process runs it).
    pub lease_owner: Option<String>,
    /// The environment it ran in, when environments are configured.
    pub environment: Option<String>,
    /// The digest of its design's content (see `chat::environments::digest`).
    pub design_digest: Option<String>,
    /// The rollout it is a child run of.
    pub rollout_id: Option<i64>,
}

impl Run {
    /// The stages of the phase the run is in.
    pub fn phase_stages(&self) -> &[Stage] {
        match self.phase {
            Phase::Main => &self.stages,
            Phase::OnFailure => &self.on_failure,
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
    /// Where the run stands among environments and rollouts.
    pub placement: Placement,
}

/// A run's environment, its design's digest and its rollout, stored with it in the insert
/// that queues it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub environment: Option<String>,
    pub design_digest: Option<String>,
    pub rollout: Option<i64>,
}

/// The stage after the one that finished, to start in the same commit.
#[derive(Debug, Clone, Copy)]
pub struct NextStart<'a> {
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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StageRunRow {
    pub phase: String,
    #[sqlx(try_from = "i64")]
    pub stage: usize,
    #[sqlx(try_from = "i64")]
    pub attempt: u32,
    pub task: String,
    pub state: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
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
    /// of letting them collide on the database lock. PostgreSQL gets a few.
    writer: AnyPool,
    reader: AnyPool,
    /// The stage transitions and log lines of many runs, committed together.
    batch: batch::Batcher,
    backend: Backend,
    /// The node this process is in a cluster (see `cluster`): the name its leases carry.
    node: std::sync::Arc<str>,
}

pub use crate::model::Backend;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const RUN_COLUMNS: &str = "id, host, kind, pipeline, stages, on_failure, design_ref, requester, \
    origin, state, phase, next_stage, attempt, approved_stage, approved_by, initial_clipboard, \
    clipboard, undo_clipboard, failed_stage, error, progress, retry_of, created_at, started_at, \
    stage_started_at, finished_at, lease_owner, environment, design_digest, rollout_id";

impl Store {
    /// Opens (creating if needed) the database at `url` and applies the migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let backend = Backend::of(url).map_err(StoreError::Unavailable)?;
        sqlx::any::install_default_drivers();
        let (writer, reader) = match backend {
            Backend::Sqlite => {
                let path = url.strip_prefix("sqlite://").unwrap_or(url);
                if let Some(parent) = std::path::Path::new(path).parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let sqlite = SqliteConnectOptions::from_str(url)?;
                let writable = AnyConnectOptions::from_url(
                    &sqlite.clone().create_if_missing(true).to_url_lossy(),
                )?;
                // No ping before each acquire (sqlx's default): a SQLite connection is a file
                // in this process and cannot drop, and the ping is one more round trip to the
                // connection's thread before every read and every group commit.
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(60))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // One statement each: every one must take effect.
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA busy_timeout = 10000",
                                "PRAGMA foreign_keys = ON",
                            ] {
                                conn.execute(pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(writable)
                    .await?;
                SQLITE_MIGRATIONS.run(&writer).await?;
                let readable = AnyConnectOptions::from_url(
                    &sqlite
                        .create_if_missing(false)
                        .read_only(true)
                        .to_url_lossy(),
                )?;
                let reader = AnyPoolOptions::new()
                    .max_connections(4)
                    .min_connections(0)
                    .test_before_acquire(false)
                    .idle_timeout(Duration::from_secs(60))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA busy_timeout = 10000;").await?;
                            Ok(())
                        })
                    })
                    .connect_with(readable)
                    .await?;
                (writer, reader)
            }
            Backend::Postgres => {
                let options = AnyConnectOptions::from_str(url)?;
                let writer = AnyPoolOptions::new()
                    .max_connections(4)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect_with(options.clone())
                    .await?;
                POSTGRES_MIGRATIONS.run(&writer).await?;
                let reader = AnyPoolOptions::new()
                    .max_connections(4)
                    .min_connections(0)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_with(options)
                    .await?;
                (writer, reader)
            }
        };
        let batch = batch::Batcher::start(writer.clone());
        let store = Store {
            writer,
            reader,
            batch,
            backend,
            node: std::sync::Arc::from(cluster::SOLE_NODE),
        };
        // Hosts deployed before the inventory existed get their record on the first start
        // after the upgrade; afterwards this finds nothing to do.
        let rebuilt = store.reconstruct_hosts().await?;
        if rebuilt > 0 {
            tracing::info!(hosts = rebuilt, "host records rebuilt from stored runs");
        }
        Ok(store)
    }

    /// The database this store is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations only (`jarvis migrate`); returns how many this call applied
    /// and how many the database now has.
    pub async fn migrate(url: &str) -> Result<(usize, usize)> {
        let backend = Backend::of(url).map_err(StoreError::Unavailable)?;
        sqlx::any::install_default_drivers();
        let before = match backend {
            Backend::Sqlite => {
                let path = url.strip_prefix("sqlite://").unwrap_or(url);
                if std::path::Path::new(path).exists() {
                    let options = AnyConnectOptions::from_url(
                        &SqliteConnectOptions::from_str(url)?
                            .read_only(true)
                            .to_url_lossy(),
                    )?;
                    applied_migrations(&options, backend).await?
                } else {
                    0
                }
            }
            Backend::Postgres => {
                applied_migrations(&AnyConnectOptions::from_str(url)?, backend).await?
            }
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

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.writer.begin().await?)
    }

    // ---- runs ------------------------------------------------------------------------

    /// Queues a run; refused when the host already has an active one.
    pub async fn insert_run(&self, new: &NewRun) -> Result<RunId> {
        match self.try_insert_run(new).await {
            // Another process queued one for the host between our look and our insert: the
            // unique index caught it.
            Err(StoreError::Database(e))
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                match self.active_run_for_host(&new.host).await? {
                    Some(run) => Err(StoreError::HostBusy {
                        host: new.host.clone(),
                        run: run.id,
                    }),
                    None => Err(StoreError::Database(e)),
                }
            }
            other => other,
        }
    }

    async fn try_insert_run(&self, new: &NewRun) -> Result<RunId> {
        let mut tx = self.begin().await?;
        if let Some(run) = active_for_host(&mut tx, &new.host).await? {
            return Err(StoreError::HostBusy {
                host: new.host.clone(),
                run,
            });
        }
        // A new run of the host supersedes its earlier ones: secrets a failed run kept for a
        // resume are erased now.
        sqlx::query(
            "DELETE FROM run_secrets WHERE run_id IN (SELECT id FROM runs WHERE host = $1)",
        )
        .bind(&new.host)
        .execute(&mut *tx)
        .await?;
        let clipboard = json_text(&new.clipboard);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (host, kind, pipeline, stages, on_failure, design_ref, requester, \
             origin, state, initial_clipboard, clipboard, retry_of, created_at, environment, \
             design_digest, rollout_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, $12, $13, $14, $15) \
             RETURNING id",
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
        .bind(&new.placement.environment)
        .bind(&new.placement.design_digest)
        .bind(new.placement.rollout)
        .fetch_one(&mut *tx)
        .await?;
        // The run id is known only now; the clipboard's `jarvis` mapping carries it.
        let mut clipboard = new.clipboard.clone();
        if let Some(Value::Object(jarvis)) = clipboard.get_mut("jarvis") {
            jarvis.insert("run_id".into(), Value::from(id));
        }
        let clipboard = json_text(&clipboard);
        sqlx::query("UPDATE runs SET clipboard = $1, initial_clipboard = $1 WHERE id = $2")
            .bind(&clipboard)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        cluster::notify_in(&mut tx, cluster::news::WAKE).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn run(&self, id: RunId) -> Result<Option<Run>> {
        let row = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Run::try_from).transpose()
    }

    pub async fn active_run_for_host(&self, host: &str) -> Result<Option<Run>> {
        let row = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE host = $1 AND {} ORDER BY id DESC LIMIT 1",
            lc::active_states_sql()
        )))
        .bind(host)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Run::try_from).transpose()
    }

    /// The newest run of a host, active or not.
    pub async fn last_run_for_host(&self, host: &str) -> Result<Option<Run>> {
        let row = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE host = $1 ORDER BY id DESC LIMIT 1"
        )))
        .bind(host)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Run::try_from).transpose()
    }

    pub async fn runs_in_state(&self, state: RunState) -> Result<Vec<Run>> {
        let rows = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = $1 ORDER BY id"
        )))
        .bind(state.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Run::try_from).collect()
    }

    pub async fn active_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE {} ORDER BY id",
            lc::active_states_sql()
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Run::try_from).collect()
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
                sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE host = $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(h)
                .bind(n as i64)
                .fetch_all(&self.reader)
                .await?
            }
            None => {
                sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1"
                )))
                .bind(n as i64)
                .fetch_all(&self.reader)
                .await?
            }
        };
        rows.into_iter().map(Run::try_from).collect()
    }

    pub async fn stage_runs(&self, run: RunId) -> Result<Vec<StageRunRow>> {
        Ok(sqlx::query_as(
            "SELECT phase, stage, attempt, task, state FROM stage_runs WHERE run_id = $1 \
             ORDER BY started_at, phase, stage, attempt",
        )
        .bind(run)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The clipboard a finished stage produced.
    pub async fn stage_clipboard(&self, run: RunId, stage: usize) -> Result<Option<Clipboard>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT clipboard FROM stage_runs WHERE run_id = $1 AND phase = 'main' AND stage = $2 \
             AND state = 'succeeded' ORDER BY attempt DESC LIMIT 1",
        )
        .bind(run)
        .bind(stage as i64)
        .fetch_optional(&self.reader)
        .await?
        .flatten();
        text.map(|t| parse_json(&t)).transpose()
    }
}

/// How many migrations a database has already applied (0 when it has none yet).
async fn applied_migrations(options: &AnyConnectOptions, backend: Backend) -> Result<usize> {
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    let exists = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => "SELECT COUNT(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'",
    };
    let n: i64 = sqlx::query_scalar(exists).fetch_one(&pool).await?;
    let count = if n == 0 {
        0
    } else {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await?
    };
    pool.close().await;
    Ok(count as usize)
}

async fn active_for_host(tx: &mut AnyConnection, host: &str) -> Result<Option<RunId>> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM runs WHERE host = $1 AND {} LIMIT 1",
        lc::active_states_sql()
    )))
    .bind(host)
    .fetch_optional(&mut *tx)
    .await?)
}

async fn insert_events(tx: &mut AnyConnection, events: &[NewEvent]) -> Result<()> {
    if !events.is_empty() {
        cluster::notify_in(tx, cluster::news::EVENTS).await?;
    }
    for e in events {
        sqlx::query("INSERT INTO events (run_id, at, kind, body) VALUES ($1, $2, $3, $4)")
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

/// A `runs` row as stored ([`RUN_COLUMNS`]); [`Run`] is what it means.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    host: String,
    kind: String,
    pipeline: String,
    stages: String,
    on_failure: String,
    design_ref: String,
    requester: String,
    origin: String,
    state: String,
    phase: String,
    next_stage: i64,
    attempt: i64,
    approved_stage: Option<i64>,
    approved_by: Option<String>,
    initial_clipboard: String,
    clipboard: String,
    undo_clipboard: Option<String>,
    failed_stage: Option<i64>,
    error: Option<String>,
    progress: Option<String>,
    retry_of: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    stage_started_at: Option<i64>,
    finished_at: Option<i64>,
    lease_owner: Option<String>,
    environment: Option<String>,
    design_digest: Option<String>,
    rollout_id: Option<i64>,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;

    fn try_from(r: RunRow) -> Result<Run> {
        Ok(Run {
            id: r.id,
            host: r.host,
            kind: RunKind::parse(&r.kind).unwrap_or_default(),
            pipeline: r.pipeline,
            stages: parse_json(&r.stages)?,
            on_failure: parse_json(&r.on_failure)?,
            design_ref: r.design_ref,
            requester: r.requester,
            origin: r.origin,
            state: RunState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("run state '{}'", r.state)))?,
            phase: Phase::parse(&r.phase)
                .ok_or_else(|| StoreError::Corrupt(format!("run phase '{}'", r.phase)))?,
            next_stage: r.next_stage as usize,
            attempt: r.attempt as u32,
            approved_stage: r.approved_stage.map(|s| s as usize),
            approved_by: r.approved_by,
            initial_clipboard: parse_json(&r.initial_clipboard)?,
            clipboard: parse_json(&r.clipboard)?,
            undo_clipboard: r.undo_clipboard.map(|t| parse_json(&t)).transpose()?,
            failed_stage: r.failed_stage.map(|s| s as usize),
            error: r.error,
            progress: r.progress,
            retry_of: r.retry_of,
            created_at: r.created_at,
            started_at: r.started_at,
            stage_started_at: r.stage_started_at,
            finished_at: r.finished_at,
            lease_owner: r.lease_owner,
            environment: r.environment,
            design_digest: r.design_digest,
            rollout_id: r.rollout_id,
        })
    }
}
