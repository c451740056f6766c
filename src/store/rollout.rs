//! Rollouts over a group of hosts, and what a promotion asks of past runs. A rollout's rows
//! hold its hosts in order and its state; how far it got is read from its child runs
//! (`runs.rollout_id`, written in the insert that queues each), never kept in memory, so a
//! rollout survives any stop exactly as its runs do.

use sqlx::AssertSqlSafe;

use super::{NewEvent, RUN_COLUMNS, Result, Run, RunRow, Store, StoreError, insert_events, now_ms};
use crate::model::RunKind;

/// Where a rollout stands. `Running` queues batches; `Stopped` (too many failures) queues
/// nothing until `resume`; `Cancelled` and `Succeeded` are ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    Running,
    Stopped,
    Cancelled,
    Succeeded,
}

impl RolloutState {
    /// Every state, for SQL that lists them.
    pub const ALL: [RolloutState; 4] = [
        RolloutState::Running,
        RolloutState::Stopped,
        RolloutState::Cancelled,
        RolloutState::Succeeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Stopped => "stopped",
            RolloutState::Cancelled => "cancelled",
            RolloutState::Succeeded => "succeeded",
        }
    }

    pub fn parse(text: &str) -> Option<RolloutState> {
        RolloutState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Running or stopped: it may still queue runs.
    pub fn is_open(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Stopped)
    }
}

/// `state IN ('running', 'stopped')`: the open states, as SQL.
fn open_states_sql() -> String {
    let names: Vec<String> = RolloutState::ALL
        .into_iter()
        .filter(|s| s.is_open())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("state IN ({})", names.join(", "))
}

/// What it takes to start a rollout: its hosts in order, each with the design it runs.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub group: String,
    pub kind: RunKind,
    /// The named action each host runs (`run ACTION on group:G`), for `RunKind::Action`.
    pub action: Option<String>,
    /// The webhook or schedule that started it, as JSON, for each child run to record.
    pub trigger: Option<String>,
    pub environment: Option<String>,
    pub max_parallel: usize,
    pub max_failures: usize,
    pub requester: String,
    pub person: Option<String>,
    pub origin: String,
    pub hosts: Vec<(String, String)>,
}

/// A rollout as stored.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub id: i64,
    pub group: String,
    pub kind: RunKind,
    /// The named action each host runs, for `RunKind::Action`.
    pub action: Option<String>,
    /// The webhook or schedule that started it, as JSON.
    pub trigger: Option<String>,
    pub environment: Option<String>,
    pub max_parallel: usize,
    pub max_failures: usize,
    pub state: RolloutState,
    pub reason: Option<String>,
    pub requester: String,
    pub person: Option<String>,
    pub origin: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// One host of a rollout, with its current child run (the newest after `past_runs`).
#[derive(Debug, Clone)]
pub struct RolloutHost {
    pub position: usize,
    pub host: String,
    pub design_ref: String,
    pub past_runs: i64,
    pub error: Option<String>,
    pub run: Option<Run>,
}

const ROLLOUT_COLUMNS: &str = "id, grp, kind, action, trigger_json, environment, max_parallel, max_failures, state, \
    reason, requester, person, origin, created_at, finished_at";

/// A `rollouts` row as stored ([`ROLLOUT_COLUMNS`]); [`Rollout`] is what it means.
#[derive(sqlx::FromRow)]
struct RolloutRow {
    id: i64,
    grp: String,
    kind: String,
    action: Option<String>,
    trigger_json: Option<String>,
    environment: Option<String>,
    max_parallel: i64,
    max_failures: i64,
    state: String,
    reason: Option<String>,
    requester: String,
    person: Option<String>,
    origin: String,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<RolloutRow> for Rollout {
    type Error = StoreError;

    fn try_from(r: RolloutRow) -> Result<Rollout> {
        Ok(Rollout {
            id: r.id,
            group: r.grp,
            kind: RunKind::parse(&r.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("rollout kind '{}'", r.kind)))?,
            action: r.action,
            trigger: r.trigger_json,
            environment: r.environment,
            max_parallel: r.max_parallel.max(1) as usize,
            max_failures: r.max_failures.max(1) as usize,
            state: RolloutState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("rollout state '{}'", r.state)))?,
            reason: r.reason,
            requester: r.requester,
            person: r.person,
            origin: r.origin,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
    }
}

/// A `rollout_hosts` row as stored.
#[derive(sqlx::FromRow)]
struct RolloutHostRow {
    position: i64,
    host: String,
    design_ref: String,
    past_runs: i64,
    error: Option<String>,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Store {
    /// Stores a new rollout, running, with its hosts; `None` when its group already has an
    /// open one (the unique index decides, also between racing commands).
    pub async fn insert_rollout(&self, new: &NewRollout) -> Result<Option<i64>> {
        match self.try_insert_rollout(new).await {
            Err(StoreError::Database(e)) if is_unique_violation(&e) => Ok(None),
            other => other.map(Some),
        }
    }

    async fn try_insert_rollout(&self, new: &NewRollout) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rollouts (grp, kind, environment, max_parallel, max_failures, state, \
             requester, person, origin, created_at, action, trigger_json) \
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(&new.group)
        .bind(new.kind.as_str())
        .bind(&new.environment)
        .bind(new.max_parallel as i64)
        .bind(new.max_failures as i64)
        .bind(&new.requester)
        .bind(&new.person)
        .bind(&new.origin)
        .bind(now_ms())
        .bind(&new.action)
        .bind(&new.trigger)
        .fetch_one(&mut *tx)
        .await?;
        for (position, (host, design_ref)) in new.hosts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO rollout_hosts (rollout_id, position, host, design_ref) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(host)
            .bind(design_ref)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn rollout(&self, id: i64) -> Result<Option<Rollout>> {
        let row = sqlx::query_as::<_, RolloutRow>(AssertSqlSafe(format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Rollout::try_from).transpose()
    }

    /// The newest rollout of a group.
    pub async fn last_rollout_of_group(&self, group: &str) -> Result<Option<Rollout>> {
        let row = sqlx::query_as::<_, RolloutRow>(AssertSqlSafe(format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE grp = $1 ORDER BY id DESC LIMIT 1"
        )))
        .bind(group)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Rollout::try_from).transpose()
    }

    /// Rollouts that may still queue runs (running or stopped), oldest first.
    pub async fn open_rollouts(&self) -> Result<Vec<Rollout>> {
        let rows = sqlx::query_as::<_, RolloutRow>(AssertSqlSafe(format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE {} ORDER BY id",
            open_states_sql()
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Rollout::try_from).collect()
    }

    /// The last `n` rollouts, newest first.
    pub async fn recent_rollouts(&self, n: usize) -> Result<Vec<Rollout>> {
        let rows = sqlx::query_as::<_, RolloutRow>(AssertSqlSafe(format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY id DESC LIMIT $1"
        )))
        .bind(n as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Rollout::try_from).collect()
    }

    /// A rollout's hosts in order, each with its current child run.
    pub async fn rollout_hosts(&self, id: i64) -> Result<Vec<RolloutHost>> {
        let rows: Vec<RolloutHostRow> = sqlx::query_as(
            "SELECT position, host, design_ref, past_runs, error FROM rollout_hosts \
             WHERE rollout_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        let runs = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE rollout_id = $1 ORDER BY id"
        )))
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        let runs: Vec<Run> = runs.into_iter().map(Run::try_from).collect::<Result<_>>()?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let run = runs
                    .iter()
                    .rev()
                    .find(|run| run.host == r.host && run.id > r.past_runs)
                    .cloned();
                RolloutHost {
                    position: r.position as usize,
                    host: r.host,
                    design_ref: r.design_ref,
                    past_runs: r.past_runs,
                    error: r.error,
                    run,
                }
            })
            .collect())
    }

    /// Moves a rollout from one of `from` to `to`, with the reason and the events that tell
    /// of it, in one transaction; false when it was in none of `from` (someone else moved it
    /// first), and then no event is written.
    pub async fn move_rollout(
        &self,
        id: i64,
        from: &[RolloutState],
        to: RolloutState,
        reason: Option<&str>,
        events: &[NewEvent],
    ) -> Result<bool> {
        let states = from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let finished = (!to.is_open()).then(now_ms);
        let mut tx = self.begin().await?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE rollouts SET state = $1, reason = $2, finished_at = $3 \
             WHERE id = $4 AND state IN ({states})"
        )))
        .bind(to.as_str())
        .bind(reason)
        .bind(finished)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records why a host of a rollout could not be queued (or clears it).
    pub async fn set_rollout_host_error(
        &self,
        id: i64,
        position: usize,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE rollout_hosts SET error = $1 WHERE rollout_id = $2 AND position = $3")
            .bind(error)
            .bind(id)
            .bind(position as i64)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Continues a stopped rollout: the hosts in `retry` (position, newest run id) start
    /// afresh, and it runs again. False when it was not stopped.
    pub async fn resume_rollout(&self, id: i64, retry: &[(usize, i64)]) -> Result<bool> {
        match self.try_resume_rollout(id, retry).await {
            // Its group has another open rollout meanwhile.
            Err(StoreError::Database(e)) if is_unique_violation(&e) => Ok(false),
            other => other,
        }
    }

    async fn try_resume_rollout(&self, id: i64, retry: &[(usize, i64)]) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE rollouts SET state = 'running', reason = NULL, finished_at = NULL \
             WHERE id = $1 AND state IN ('stopped', 'cancelled')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for (position, past) in retry {
            sqlx::query(
                "UPDATE rollout_hosts SET past_runs = $1, error = NULL \
                 WHERE rollout_id = $2 AND position = $3",
            )
            .bind(*past)
            .bind(id)
            .bind(*position as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The newest run in `environment` whose design had `digest`, succeeded and finished at or
    /// after `since_ms`.
    pub async fn succeeded_in_environment(
        &self,
        environment: &str,
        digest: &str,
        since_ms: i64,
    ) -> Result<Option<Run>> {
        let row = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE environment = $1 AND design_digest = $2 \
             AND state = 'succeeded' AND finished_at >= $3 ORDER BY id DESC LIMIT 1"
        )))
        .bind(environment)
        .bind(digest)
        .bind(since_ms)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Run::try_from).transpose()
    }

    /// The newest run in `environment` of this design content, else of this host, in any state:
    /// what a refused promotion names.
    pub async fn last_in_environment(
        &self,
        environment: &str,
        digest: &str,
        host: &str,
    ) -> Result<Option<Run>> {
        let row = sqlx::query_as::<_, RunRow>(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE environment = $1 \
             AND (design_digest = $2 OR host = $3) \
             ORDER BY CASE WHEN design_digest = $2 THEN 0 ELSE 1 END, id DESC LIMIT 1"
        )))
        .bind(environment)
        .bind(digest)
        .bind(host)
        .fetch_optional(&self.reader)
        .await?;
        row.map(Run::try_from).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Migrations are frozen once applied, so the index that keeps one open rollout per
    /// group spells the open states out; it must say what `RolloutState::is_open` says.
    #[test]
    fn the_one_open_rollout_index_lists_the_open_states() {
        let index = format!("ON rollouts (grp)\n    WHERE {};", open_states_sql());
        for (name, migration) in [
            (
                "sqlite",
                include_str!("../../migrations/sqlite/0009_rollouts.sql"),
            ),
            (
                "postgres",
                include_str!("../../migrations/postgres/0004_rollouts.sql"),
            ),
        ] {
            assert!(migration.contains(&index), "{name}: {index}");
        }
        for s in RolloutState::ALL {
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
        }
    }
}
