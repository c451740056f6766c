//! Events on their way to chat, and the notification outbox: stored before they are sent,
//! marked sent once a network accepted them, or set aside as undeliverable with the reason
//! (refused for good, or failed too often) so that the others go on.

use serde_json::Value;

use super::{Result, RunId, Store, now_ms};

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub run_id: RunId,
    pub at: i64,
    pub kind: String,
    pub body: Value,
}

/// A notification waiting to be sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub network: String,
    pub target: String,
    pub text: String,
    /// Tries so far, whatever came of them.
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
    /// Tries the network failed (not counting a lost connection).
    #[sqlx(try_from = "i64")]
    pub failures: u32,
}

#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub network: String,
    pub target: String,
    pub text: String,
}

/// A notification set aside: it will not be sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Undeliverable {
    pub id: i64,
    pub network: String,
    pub target: String,
    pub text: String,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
    pub reason: String,
    pub at: i64,
}

/// An `events` row as stored (`id, run_id, at, kind, body`), its body still text: how a
/// damaged body is read is up to the reader (the router must not stall on one).
#[derive(sqlx::FromRow)]
pub(super) struct StoredEvent {
    id: i64,
    run_id: RunId,
    at: i64,
    kind: String,
    body: String,
}

impl StoredEvent {
    /// The event, its body read by `body`.
    pub(super) fn read(self, body: impl Fn(&str) -> Result<Value>) -> Result<EventRow> {
        Ok(EventRow {
            id: self.id,
            run_id: self.run_id,
            at: self.at,
            kind: self.kind,
            body: body(&self.body)?,
        })
    }
}

impl Store {
    /// The oldest events not yet routed.
    pub async fn unrouted_events(&self, limit: usize) -> Result<Vec<EventRow>> {
        self.unrouted_events_after(0, limit).await
    }

    /// The oldest events not yet routed whose id is above `after` (events the router holds
    /// back stay unrouted, and it reads on past them).
    pub async fn unrouted_events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRow>> {
        let rows: Vec<StoredEvent> = sqlx::query_as(
            "SELECT id, run_id, at, kind, body FROM events WHERE routed = 0 AND id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.writer)
        .await?;
        // The router must not stall on one damaged body: it routes it as null.
        rows.into_iter()
            .map(|r| r.read(|b| Ok(serde_json::from_str(b).unwrap_or(Value::Null))))
            .collect()
    }

    /// Marks an event routed and stores the notifications it became, in one transaction.
    pub async fn route_event(&self, event_id: i64, messages: &[NewOutbox]) -> Result<()> {
        self.route_events(&[event_id], messages).await
    }

    /// Marks events routed and stores the notifications they became together (several
    /// notices summed up in one line), in one transaction. The messages carry the last
    /// event's id.
    pub async fn route_events(&self, event_ids: &[i64], messages: &[NewOutbox]) -> Result<()> {
        let Some(&last) = event_ids.iter().max() else {
            return Ok(());
        };
        let at = now_ms();
        let mut tx = self.writer.begin().await?;
        for m in messages {
            sqlx::query(
                "INSERT INTO outbox (event_id, network, target, text, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(last)
            .bind(&m.network)
            .bind(&m.target)
            .bind(&m.text)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        for id in event_ids {
            let done = sqlx::query("UPDATE events SET routed = 1 WHERE id = $1 AND routed = 0")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                // Another process's router got there first (a hand-over of the router's
                // role): its messages stand, ours would be the same ones twice.
                tx.rollback().await?;
                return Ok(());
            }
        }
        super::cluster::notify_in(&mut tx, super::cluster::news::OUTBOX).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The pending notifications of `network`: the oldest `per_target` of each target, in
    /// the order they were written. One target's backlog never hides another's.
    pub async fn pending_outbox(&self, network: &str, per_target: usize) -> Result<Vec<OutboxRow>> {
        Ok(sqlx::query_as(
            "SELECT id, network, target, text, attempts, failures FROM ( \
               SELECT id, network, target, text, attempts, failures, \
                      ROW_NUMBER() OVER (PARTITION BY target ORDER BY id) AS n \
               FROM outbox \
               WHERE network = $1 AND sent_at IS NULL AND undeliverable_at IS NULL) AS pending \
             WHERE n <= $2 ORDER BY id",
        )
        .bind(network)
        .bind(per_target as i64)
        .fetch_all(&self.writer)
        .await?)
    }

    pub async fn mark_sent(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Counts a try that did not get through; `failed` says whether the network failed it
    /// (counted toward giving up) rather than the connection being gone. Returns the
    /// failures so far.
    pub async fn record_failure(&self, id: i64, error: &str, failed: bool) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "UPDATE outbox SET attempts = attempts + 1, failures = failures + $1, last_error = $2 \
             WHERE id = $3 RETURNING failures",
        )
        .bind(i64::from(failed))
        .bind(error)
        .bind(id)
        .fetch_one(&self.writer)
        .await?;
        Ok(n as u32)
    }

    /// Sets a notification aside as undeliverable, with the reason.
    pub async fn set_aside(&self, id: i64, reason: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET undeliverable_at = $1, last_error = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(reason)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The most recently set-aside notifications, newest first.
    pub async fn undeliverable(&self, limit: usize) -> Result<Vec<Undeliverable>> {
        Ok(sqlx::query_as(
            "SELECT id, network, target, text, attempts, COALESCE(last_error, '') AS reason, \
             undeliverable_at AS at FROM outbox \
             WHERE undeliverable_at IS NOT NULL ORDER BY undeliverable_at DESC, id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn count_undeliverable(&self) -> Result<usize> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE undeliverable_at IS NOT NULL")
                .fetch_one(&self.reader)
                .await?;
        Ok(n as usize)
    }

    /// Notifications not yet delivered to `network` (set-aside ones are done with),
    /// counting events not yet routed.
    pub async fn count_unsent(&self, network: &str) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE network = $1 AND sent_at IS NULL \
                     AND undeliverable_at IS NULL) + \
             (SELECT COUNT(*) FROM events WHERE routed = 0)",
        )
        .bind(network)
        .fetch_one(&self.writer)
        .await?;
        Ok(n as usize)
    }
}
