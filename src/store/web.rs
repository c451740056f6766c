//! What the HTTP adapter reads and keeps: personal API tokens (only their SHA-256), runs
//! filtered and paged, stage timings, events after a cursor (for live pages), and the
//! figures of `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sqlx::AssertSqlSafe;

use super::outbox::StoredEvent;
use super::{
    EventRow, RUN_COLUMNS, Result, Run, RunId, RunRow, RunState, Store, now_ms, parse_json,
};
use crate::clipboard::Clipboard;

/// A personal API token as stored: never the token, only who it is for.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ApiToken {
    pub id: i64,
    pub person: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub last_used: Option<i64>,
}

/// One attempt of one stage, with its timings, for a run's page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StageTiming {
    pub phase: String,
    #[sqlx(try_from = "i64")]
    pub stage: usize,
    #[sqlx(try_from = "i64")]
    pub attempt: u32,
    pub task: String,
    pub state: String,
    #[sqlx(rename = "s")]
    pub started_us: Option<i64>,
    #[sqlx(rename = "f")]
    pub finished_us: Option<i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub host: Option<String>,
    pub state: Option<RunState>,
    pub pipeline: Option<String>,
    /// Only runs with a smaller id (the page before).
    pub before: Option<RunId>,
    pub limit: usize,
}

/// Upper bounds of the store write latency histogram, in seconds.
pub const WRITE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// How long writes took, from the request to its durable commit: a histogram in atomics
/// (the writer notes each write; `/metrics` reads them).
#[derive(Debug, Default)]
pub struct WriteLatency {
    /// One counter per bound of [`WRITE_BUCKETS`], then one for longer.
    buckets: [AtomicU64; 10],
    sum_us: AtomicU64,
}

/// Notes a write's time when dropped.
pub struct Timing<'a> {
    latency: &'a WriteLatency,
    start: Instant,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        let took = self.start.elapsed();
        let secs = took.as_secs_f64();
        let slot = WRITE_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(WRITE_BUCKETS.len());
        self.latency.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl WriteLatency {
    pub fn timing(&self) -> Timing<'_> {
        Timing {
            latency: self,
            start: Instant::now(),
        }
    }

    /// Cumulative counts per bound of [`WRITE_BUCKETS`] (then +Inf, the total), and the sum
    /// in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (counts, self.sum_us.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

/// Finished stage attempts of one task, for the duration histogram.
#[derive(Debug, Clone)]
pub struct StageDurations {
    pub task: String,
    /// Seconds, one per finished attempt.
    pub seconds: Vec<f64>,
}

impl Store {
    /// Stores a new token's hash for `person`; returns its id.
    pub async fn add_api_token(&self, person: &str, hash: &[u8], by: &str) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (person, hash, created_at, created_by) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(person)
        .bind(hash)
        .bind(now_ms())
        .bind(by)
        .fetch_one(&self.writer)
        .await?;
        Ok(id)
    }

    /// The person a token hash belongs to, if the token is known and not revoked.
    pub async fn api_token_person(&self, hash: &[u8]) -> Result<Option<(i64, String)>> {
        /// The part of an `api_tokens` row a request needs.
        #[derive(sqlx::FromRow)]
        struct TokenOwner {
            id: i64,
            person: String,
        }
        let row: Option<TokenOwner> = sqlx::query_as(
            "SELECT id, person FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| (r.id, r.person)))
    }

    /// Notes that a token was used now.
    pub async fn touch_api_token(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Revokes one token by id, or every live token of a person; returns how many.
    pub async fn revoke_api_tokens(
        &self,
        id: Option<i64>,
        person: Option<&str>,
        by: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE revoked_at IS NULL \
             AND (id = $3 OR person = $4)",
        )
        .bind(now_ms())
        .bind(by)
        .bind(id)
        .bind(person)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Every token, newest first, revoked ones included.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(sqlx::query_as(
            "SELECT id, person, created_at, created_by, revoked_at, last_used FROM api_tokens \
             ORDER BY id DESC",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Runs, newest first, by filter.
    pub async fn runs_filtered(&self, f: &RunFilter) -> Result<Vec<Run>> {
        let rows = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR host = $1) \
             AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR pipeline = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        )))
        .bind(f.host.as_deref())
        .bind(f.state.map(RunState::as_str))
        .bind(f.pipeline.as_deref())
        .bind(f.before)
        .bind(f.limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Run::try_from).collect()
    }

    /// Every stage attempt of a run with its timings, in the order they ran.
    pub async fn stage_timings(&self, run: RunId) -> Result<Vec<StageTiming>> {
        Ok(sqlx::query_as(
            "SELECT phase, stage, attempt, task, state, \
             COALESCE(started_us, started_at * 1000) AS s, \
             COALESCE(finished_us, finished_at * 1000) AS f, exit_code, error \
             FROM stage_runs WHERE run_id = $1 ORDER BY s, phase, stage, attempt",
        )
        .bind(run)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The clipboard each stage of a run left, by phase (`main`, `on_failure`) and stage:
    /// its last succeeded attempt's (stage records keep them; retention prunes them).
    pub async fn stage_clipboards(&self, run: RunId) -> Result<Vec<(String, usize, Clipboard)>> {
        /// A succeeded attempt's clipboard as stored.
        #[derive(sqlx::FromRow)]
        struct StageClipboard {
            phase: String,
            stage: i64,
            clipboard: String,
        }
        let rows: Vec<StageClipboard> = sqlx::query_as(
            "SELECT phase, stage, clipboard FROM stage_runs WHERE run_id = $1 \
             AND state = 'succeeded' AND clipboard IS NOT NULL ORDER BY phase, stage, attempt",
        )
        .bind(run)
        .fetch_all(&self.reader)
        .await?;
        let mut out: Vec<(String, usize, Clipboard)> = Vec::new();
        for r in rows {
            let (phase, stage) = (r.phase, r.stage as usize);
            let clipboard: Clipboard = parse_json(&r.clipboard)?;
            match out.last_mut() {
                // A later attempt of the same stage: its clipboard is the one that counts.
                Some(last) if last.0 == phase && last.1 == stage => last.2 = clipboard,
                _ => out.push((phase, stage, clipboard)),
            }
        }
        Ok(out)
    }

    /// Stored events with an id above `after`, oldest first (routed or not).
    pub async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRow>> {
        let rows: Vec<StoredEvent> = sqlx::query_as(
            "SELECT id, run_id, at, kind, body FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(|r| r.read(parse_json)).collect()
    }

    /// The id of the newest stored event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// How many runs are in each state, by pipeline.
    pub async fn run_counts(&self) -> Result<Vec<(String, String, i64)>> {
        /// How many runs of a pipeline are in a state.
        #[derive(sqlx::FromRow)]
        struct RunCount {
            pipeline: String,
            state: String,
            n: i64,
        }
        let rows: Vec<RunCount> = sqlx::query_as(
            "SELECT pipeline, state, COUNT(*) AS n FROM runs GROUP BY pipeline, state \
             ORDER BY pipeline, state",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.pipeline, r.state, r.n))
            .collect())
    }

    /// The durations of finished stage attempts, by task.
    pub async fn stage_durations(&self) -> Result<Vec<StageDurations>> {
        /// How long one finished attempt of a task took.
        #[derive(sqlx::FromRow)]
        struct AttemptDuration {
            task: String,
            us: Option<i64>,
        }
        let rows: Vec<AttemptDuration> = sqlx::query_as(
            "SELECT task, (COALESCE(finished_us, finished_at * 1000) - \
             COALESCE(started_us, started_at * 1000)) AS us FROM stage_runs \
             WHERE finished_at IS NOT NULL ORDER BY task",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut out: Vec<StageDurations> = Vec::new();
        for AttemptDuration { task, us } in rows {
            let seconds = us.unwrap_or(0).max(0) as f64 / 1e6;
            match out.last_mut() {
                Some(last) if last.task == task => last.seconds.push(seconds),
                _ => out.push(StageDurations {
                    task,
                    seconds: vec![seconds],
                }),
            }
        }
        Ok(out)
    }

    /// Stage attempts under way: worker processes running now.
    pub async fn running_attempts(&self) -> Result<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stage_runs WHERE state = 'running'")
            .fetch_one(&self.reader)
            .await?;
        Ok(n)
    }

    /// How long the store's writes took: the histogram's cumulative counts and sum.
    pub fn write_latency(&self) -> (Vec<u64>, f64) {
        self.batch.latency.snapshot()
    }

    /// By network: the age in milliseconds of the oldest notification not yet sent nor set
    /// aside, and how many were set aside as undeliverable. Both look only at the rows the
    /// outbox's partial indexes hold (pending, undeliverable), not at the sent ones.
    pub async fn outbox_health(&self) -> Result<Vec<(String, Option<i64>, i64)>> {
        /// The oldest pending notification of a network.
        #[derive(sqlx::FromRow)]
        struct Oldest {
            network: String,
            oldest: Option<i64>,
        }
        let pending: Vec<Oldest> = sqlx::query_as(
            "SELECT network, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL \
             AND undeliverable_at IS NULL GROUP BY network",
        )
        .fetch_all(&self.reader)
        .await?;
        let dead: Vec<NetworkCount> = sqlx::query_as(
            "SELECT network, COUNT(*) AS n FROM outbox WHERE undeliverable_at IS NOT NULL \
             GROUP BY network",
        )
        .fetch_all(&self.reader)
        .await?;
        let now = now_ms();
        let mut out: std::collections::BTreeMap<String, (Option<i64>, i64)> = Default::default();
        for r in pending {
            out.entry(r.network).or_default().0 = r.oldest.map(|t| (now - t).max(0));
        }
        for r in dead {
            out.entry(r.network).or_default().1 = r.n;
        }
        Ok(out.into_iter().map(|(n, (a, d))| (n, a, d)).collect())
    }

    /// Notifications not yet sent nor set aside, by network.
    pub async fn outbox_backlog(&self) -> Result<Vec<(String, i64)>> {
        let rows: Vec<NetworkCount> = sqlx::query_as(
            "SELECT network, COUNT(*) AS n FROM outbox WHERE sent_at IS NULL \
             AND undeliverable_at IS NULL GROUP BY network ORDER BY network",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|r| (r.network, r.n)).collect())
    }
}

/// How many outbox rows of a network a count found.
#[derive(sqlx::FromRow)]
struct NetworkCount {
    network: String,
    n: i64,
}
