//! Pruning what finished runs no longer need: their log lines, stage records, clipboards and
//! events. The run's summary (host, outcome, times, error) and the audit log are kept for good.

use sqlx::AssertSqlSafe;

use super::{Result, Store, lifecycle};

/// What one prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub log_lines: u64,
    pub events: u64,
    pub stage_records: u64,
    pub notifications: u64,
    /// Runs whose summaries went (`retention.forget`).
    pub forgotten: u64,
    pub audit_rows: u64,
}

impl Store {
    /// Prunes the runs that ended before `before_ms` (unix ms): a run that can no longer go
    /// on (succeeded, cancelled, failed) keeps its summary; its log lines, clipboards, events,
    /// sent notifications and sealed secrets go. A run whose events are not all routed yet
    /// waits for the next prune, so no notification is lost to retention. Batched, so a large backlog never
    /// holds the writer for long.
    pub async fn prune(&self, before_ms: i64) -> Result<Pruned> {
        let mut total = Pruned::default();
        let ended = lifecycle::state_list(&[
            lifecycle::RunState::Succeeded,
            lifecycle::RunState::Cancelled,
            lifecycle::RunState::Failed,
        ]);
        loop {
            let mut tx = self.begin().await?;
            let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT id FROM runs WHERE {ended} AND finished_at < $1 AND pruned_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id AND e.routed = 0) \
                 ORDER BY id LIMIT 500"
            )))
            .bind(before_ms)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                tx.commit().await?;
                break;
            }
            let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            let run = |sql: &str| sqlx::query(AssertSqlSafe(sql.replace("{ids}", &list)));
            total.runs += ids.len() as u64;
            total.log_lines += run("DELETE FROM log_lines WHERE run_id IN ({ids})")
                .execute(&mut *tx)
                .await?
                .rows_affected();
            total.events += run("DELETE FROM events WHERE run_id IN ({ids}) AND routed = 1")
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Stage records (attempts, their clipboards) serve recovery and `log`; the run's
            // own row is its summary.
            total.stage_records += run("DELETE FROM stage_runs WHERE run_id IN ({ids})")
                .execute(&mut *tx)
                .await?
                .rows_affected();
            run("DELETE FROM run_secrets WHERE run_id IN ({ids})")
                .execute(&mut *tx)
                .await?;
            run(
                "UPDATE runs SET initial_clipboard = '{}', clipboard = '{}', undo_clipboard = NULL, \
                 progress = NULL, pruned_at = $1 WHERE id IN ({ids})",
            )
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        total.notifications =
            sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
                .bind(before_ms)
                .execute(&self.writer)
                .await?
                .rows_affected();
        Ok(total)
    }

    /// Deletes the summaries of pruned runs that ended before `before_ms`, in batches. Only
    /// runs already pruned go, so nothing unrouted or unsent is lost; run numbers are never
    /// reused (the table counts with AUTOINCREMENT).
    pub async fn forget_runs(&self, before_ms: i64) -> Result<u64> {
        self.delete_in_batches(
            "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE pruned_at IS NOT NULL \
             AND finished_at < $1 ORDER BY id LIMIT 500)",
            before_ms,
        )
        .await
    }

    /// Deletes audit rows written before `before_ms`, in batches.
    pub async fn forget_audit(&self, before_ms: i64) -> Result<u64> {
        self.delete_in_batches(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 ORDER BY id LIMIT 500)",
            before_ms,
        )
        .await
    }

    /// Runs a batch-limited DELETE with one time bound again until it deletes nothing, so a
    /// large backlog never holds the writer for long.
    async fn delete_in_batches(&self, sql: &'static str, before_ms: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let gone = sqlx::query(sql)
                .bind(before_ms)
                .execute(&self.writer)
                .await?
                .rows_affected();
            total += gone;
            if gone == 0 {
                return Ok(total);
            }
        }
    }
}
