//! What webhooks and schedules keep: the delivery ids a hook has seen, and each schedule's
//! next and last firing. A firing is claimed with one conditional UPDATE on the instant the
//! claimer saw, so it is taken once, whichever process (or restart) tries.

use super::{Result, Store, now_ms};

/// How long a webhook's delivery ids are kept.
pub const DELIVERY_MEMORY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// What a webhook delivery is known by: a repeat of any one is the same delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKeys {
    /// The forge's delivery id (an unsigned header).
    pub id: String,
    /// The digest of the signature and body, which a replay cannot change without the
    /// secret.
    pub digest: Option<String>,
    /// GitLab's `Idempotency-Key`, the same across retries of one event.
    pub idempotency_key: Option<String>,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub name: String,
    /// The cron expression and time zone `next_at` was computed from.
    pub spec: String,
    /// Unix ms of the next firing.
    pub next_at: i64,
    /// Unix ms of the last firing claimed, and what came of it.
    pub last_at: Option<i64>,
    pub last_outcome: Option<String>,
}

impl Store {
    /// Notes that hook `hook` received delivery `delivery`; false when it had before. Ids
    /// older than [`DELIVERY_MEMORY`] are forgotten (forges redeliver within hours).
    pub async fn first_delivery(&self, hook: &str, delivery: &str) -> Result<bool> {
        self.first_delivery_of(
            hook,
            &DeliveryKeys {
                id: delivery.to_string(),
                digest: None,
                idempotency_key: None,
            },
        )
        .await
    }

    /// Notes that hook `hook` received the delivery `keys` name; false when any of its id,
    /// digest or idempotency key was seen before (one INSERT: any unique index that already
    /// holds one of them makes it do nothing, on either database).
    pub async fn first_delivery_of(&self, hook: &str, keys: &DeliveryKeys) -> Result<bool> {
        sqlx::query("DELETE FROM hook_deliveries WHERE hook = $1 AND received_at < $2")
            .bind(hook)
            .bind(now_ms() - DELIVERY_MEMORY.as_millis() as i64)
            .execute(&self.writer)
            .await?;
        let done = sqlx::query(
            "INSERT INTO hook_deliveries (hook, delivery, received_at, digest, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(hook)
        .bind(&keys.id)
        .bind(now_ms())
        .bind(keys.digest.as_deref())
        .bind(keys.idempotency_key.as_deref())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every stored schedule.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(sqlx::query_as(
            "SELECT name, spec, next_at, last_at, last_outcome FROM schedules ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Sets a schedule's next firing for (a changed) `spec`, keeping its last firing. A
    /// schedule that is new, or whose spec changed, starts from `next_at` without firing
    /// for what the old spec would have done.
    pub async fn plan_schedule(&self, name: &str, spec: &str, next_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (name, spec, next_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, next_at = excluded.next_at",
        )
        .bind(name)
        .bind(spec)
        .bind(next_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Claims the firing of `name` at `due` (as read) and moves its next firing to `next`:
    /// true for the one caller whose UPDATE found `next_at = due`, false for every other.
    pub async fn claim_firing(&self, name: &str, due: i64, next: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET next_at = $1, last_at = $2, last_outcome = NULL \
             WHERE name = $3 AND next_at = $2",
        )
        .bind(next)
        .bind(due)
        .bind(name)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What came of a schedule's last firing (a run queued, a skip and why).
    pub async fn note_firing(&self, name: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE schedules SET last_outcome = $1 WHERE name = $2")
            .bind(outcome)
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
