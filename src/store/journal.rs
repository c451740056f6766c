//! What is written down beside the runs: a run's log lines (masked before they get here)
//! and the audit log of commands.

use super::*;

impl Store {
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
        let lines = std::sync::Arc::new(lines.to_vec());
        self.batch
            .run(Box::new(move |conn| {
                let lines = lines.clone();
                Box::pin(async move {
                    for line in lines.iter() {
                        sqlx::query(
                            "INSERT INTO log_lines (run_id, stage, at, line) VALUES ($1, $2, $3, $4)",
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
        /// A `log_lines` row as stored.
        #[derive(sqlx::FromRow)]
        struct LogLine {
            stage: Option<i64>,
            line: String,
        }
        let rows: Vec<LogLine> = sqlx::query_as(
            "SELECT stage, line FROM (SELECT id, stage, line FROM log_lines WHERE run_id = $1 \
             ORDER BY id DESC LIMIT $2) AS tail ORDER BY id",
        )
        .bind(run)
        .bind(n as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.stage.map(|s| s as usize), r.line))
            .collect())
    }

    // ---- audit -----------------------------------------------------------------------

    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, identity, person, network, channel, command, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        Ok(sqlx::query_as(
            "SELECT identity, person, network, channel, command, outcome FROM audit \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(n as i64)
        .fetch_all(&self.reader)
        .await?)
    }
}
