//! Host keys pinned per host, and the sealed secrets of runs. The store sees only opaque pins
//! and sealed bytes: what an SSH key is, or how a secret is sealed, it does not know.

use super::{Result, RunId, Store, now_ms};

/// One pinned host key: its algorithm and its SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct HostKey {
    pub algorithm: String,
    pub fingerprint: String,
}

/// A pin with where it came from, for `jarvis` to show.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PinnedKey {
    #[sqlx(flatten)]
    pub key: HostKey,
    pub pinned_by: String,
    pub pinned_at: i64,
}

impl Store {
    /// The keys pinned for `host`.
    pub async fn host_keys(&self, host: &str) -> Result<Vec<PinnedKey>> {
        Ok(sqlx::query_as(
            "SELECT algorithm, fingerprint, pinned_by, pinned_at FROM host_keys \
             WHERE host = $1 ORDER BY algorithm",
        )
        .bind(host)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Pins the keys a stage of `run` learned. The first keys a run learns replace every pin
    /// of the host made before it (a new instance has new keys); later ones join them. Each
    /// pin is written to the audit log and the run's log, in the same transaction.
    ///
    /// An admin's `trust` outranks learning by any run queued before it (a resumed stale run
    /// among them): such a run's keys are not pinned, and `false` says so. The next run that
    /// creates the host, queued after the trust, learns as usual.
    pub async fn learn_host_keys(
        &self,
        run: RunId,
        host: &str,
        keys: &[HostKey],
        learned_by: &str,
        log_stage: Option<usize>,
    ) -> Result<bool> {
        let at = now_ms();
        let mut tx = self.begin().await?;
        let outranked: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM host_keys k, runs r WHERE k.host = $1 AND k.run_id IS NULL \
             AND r.id = $2 AND k.pinned_at >= r.created_at",
        )
        .bind(host)
        .bind(run)
        .fetch_one(&mut *tx)
        .await?;
        if outranked > 0 {
            sqlx::query("INSERT INTO log_lines (run_id, stage, at, line) VALUES ($1, $2, $3, $4)")
                .bind(run)
                .bind(log_stage.map(|s| s as i64))
                .bind(at)
                .bind(format!(
                    "kept {host}'s pin an admin trusted after this run was queued; the keys {learned_by} learned are not pinned"
                ))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM host_keys WHERE host = $1 AND (run_id IS NULL OR run_id != $2)")
            .bind(host)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO host_keys \
                 (host, algorithm, fingerprint, run_id, pinned_by, pinned_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (host, algorithm) DO UPDATE SET fingerprint = excluded.fingerprint, \
                 run_id = excluded.run_id, pinned_by = excluded.pinned_by, \
                 pinned_at = excluded.pinned_at",
            )
            .bind(host)
            .bind(&key.algorithm)
            .bind(&key.fingerprint)
            .bind(run)
            .bind(learned_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let what = format!("pin {host} {} {}", key.algorithm, key.fingerprint);
            sqlx::query(
                "INSERT INTO audit (at, identity, network, channel, command, outcome) \
                 VALUES ($1, 'jarvis', '', $2, $3, $4)",
            )
            .bind(at)
            .bind(format!("run #{run}"))
            .bind(&what)
            .bind(format!("learned by {learned_by}"))
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO log_lines (run_id, stage, at, line) VALUES ($1, $2, $3, $4)")
                .bind(run)
                .bind(log_stage.map(|s| s as i64))
                .bind(at)
                .bind(format!(
                    "pinned {host}'s host key {} {} (learned by {learned_by})",
                    key.algorithm, key.fingerprint
                ))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// An admin's word: `host` is pinned to exactly this key, every other pin of it is gone.
    pub async fn trust_host_key(&self, host: &str, key: &HostKey, by: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM host_keys WHERE host = $1")
            .bind(host)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO host_keys (host, algorithm, fingerprint, run_id, pinned_by, pinned_at) \
             VALUES ($1, $2, $3, NULL, $4, $5)",
        )
        .bind(host)
        .bind(&key.algorithm)
        .bind(&key.fingerprint)
        .bind(by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps sealed secrets of a run (a later value of the same name replaces the earlier).
    pub async fn put_sealed_secrets(
        &self,
        run: RunId,
        secrets: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for (name, sealed) in secrets {
            sqlx::query(
                "INSERT INTO run_secrets (run_id, name, sealed) VALUES ($1, $2, $3) \
                 ON CONFLICT (run_id, name) DO UPDATE SET sealed = excluded.sealed",
            )
            .bind(run)
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The sealed secrets of a run, by name.
    pub async fn sealed_secrets(&self, run: RunId) -> Result<Vec<(String, Vec<u8>)>> {
        /// A `run_secrets` row as stored.
        #[derive(sqlx::FromRow)]
        struct SealedSecret {
            name: String,
            sealed: Vec<u8>,
        }
        let rows: Vec<SealedSecret> =
            sqlx::query_as("SELECT name, sealed FROM run_secrets WHERE run_id = $1 ORDER BY name")
                .bind(run)
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|r| (r.name, r.sealed)).collect())
    }
}
