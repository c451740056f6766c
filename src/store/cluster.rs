//! Several jarvis processes on one database. Each process is a *node* with a name of its
//! own. A node's runner holds the runs it drives by a lease (`lease_owner`, `lease_until`),
//! renewed while it drives them; a run whose lease ran out is taken over by any node exactly
//! as a restart would take it. Work that must be done by one process at a time (speaking on
//! a chat network, routing events into the outbox) is a *role*, held by a PostgreSQL session
//! advisory lock on a connection of its own: when the holder dies, its connection closes and
//! the lock is free for the next. Wake-ups travel by `NOTIFY jarvis`, sent inside the
//! transaction that has news, so they arrive only once it is committed.
//!
//! On SQLite there is one process (the data folder's lock sees to it): leases are still
//! written, roles are granted at once, and nothing is notified.

use std::time::Duration;

use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

use super::*;

/// The node name of the one process on an SQLite database (not shown anywhere).
pub const SOLE_NODE: &str = "local";

/// The channel every node listens on.
pub const CHANNEL: &str = "jarvis";

/// What a notification on [`CHANNEL`] says.
pub mod news {
    /// A run was queued, or a lease freed: a runner may claim.
    pub const WAKE: &str = "wake";
    /// Events were stored: the router may route them.
    pub const EVENTS: &str = "events";
    /// Notifications were put in the outbox: speakers may send them.
    pub const OUTBOX: &str = "outbox";
    /// Someone asked for a run to be cancelled: its runner may stop it.
    pub const CANCEL: &str = "cancel";
}

/// The lock that makes the count-then-claim of runs one step across the cluster.
const CLAIM_LOCK: i64 = 0x6a61_7276_6973_0002;

/// A node as the database knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRow {
    pub name: String,
    pub pid: i64,
    pub started_at: i64,
    pub seen_at: i64,
}

/// A role this process holds (a chat network's speaker, the router), for as long as the
/// guard lives.
pub struct Role {
    name: String,
    conn: Option<tokio::sync::Mutex<AnyConnection>>,
}

impl Role {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns when the role is lost: the connection that holds its lock failed. Never on
    /// SQLite.
    pub async fn lost(&self) {
        let Some(conn) = &self.conn else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut conn = conn.lock().await;
            let alive = tokio::time::timeout(Duration::from_secs(5), conn.ping()).await;
            if !matches!(alive, Ok(Ok(()))) {
                tracing::error!(role = %self.name, "lost the database connection that holds a role");
                return;
            }
        }
    }
}

/// A stable 64-bit key for an advisory lock named `name` (FNV-1a: the key must be the same
/// in every process and every version, which `std`'s hasher does not promise).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"jarvis:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Sends `what` on [`CHANNEL`] from inside a transaction: delivered at its commit, and not at
/// all if it rolls back. Nothing on SQLite.
pub(super) async fn notify_in(conn: &mut AnyConnection, what: &str) -> Result<()> {
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// This store, acting for the node `name`: the leases it takes carry that name.
    pub fn for_node(mut self, name: &str) -> Store {
        self.node = std::sync::Arc::from(name);
        self
    }

    /// The node this store acts for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Makes sure no other process runs as this node on the database, for as long as the
    /// returned role lives: two processes with one name would take each other's runs for
    /// their own. SQLite is guarded by the data folder's lock instead.
    pub async fn hold_node(&self, url: &str) -> Result<Role> {
        match self.hold_role(url, &format!("node:{}", self.node)).await? {
            Some(role) => Ok(role),
            None => Err(StoreError::Unavailable(format!(
                "another jarvis already runs as node '{}' on this database; give each process \
                 its own cluster.node",
                self.node
            ))),
        }
    }

    /// Takes the role `name` if no other process holds it; `None` when one does.
    pub async fn hold_role(&self, url: &str, name: &str) -> Result<Option<Role>> {
        if self.backend != Backend::Postgres {
            return Ok(Some(Role {
                name: name.to_string(),
                conn: None,
            }));
        }
        let mut conn = <AnyConnection as Connection>::connect(url).await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(name))
            .fetch_one(&mut conn)
            .await?;
        if !held {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Role {
            name: name.to_string(),
            conn: Some(tokio::sync::Mutex::new(conn)),
        }))
    }

    /// Records this node as started (or started again).
    pub async fn register_node(&self) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO nodes (name, pid, started_at, seen_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, \
             started_at = excluded.started_at, seen_at = excluded.seen_at",
        )
        .bind(self.node.as_ref())
        .bind(i64::from(std::process::id()))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The nodes that share the database, most recently seen first.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        Ok(sqlx::query_as(
            "SELECT name, pid, started_at, seen_at FROM nodes ORDER BY seen_at DESC, name",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Claims up to `room` of the oldest queued runs nobody holds, as long as fewer than
    /// `limit` runs are held across the cluster (the global worker limit). The count and
    /// the claim are one step: on PostgreSQL under a transaction-level advisory lock, with
    /// the rows picked `FOR UPDATE SKIP LOCKED`; on SQLite under its one writer.
    pub async fn claim_runs(
        &self,
        room: usize,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<RunId>> {
        if room == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut tx = self.begin().await?;
        let postgres = self.backend == Backend::Postgres;
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let held: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM runs WHERE lease_owner IS NOT NULL AND lease_until > $1 \
             AND {}",
            super::lc::state_list(&[RunState::Queued, RunState::Running])
        )))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let free = limit.saturating_sub(held.max(0) as usize).min(room);
        if free == 0 {
            return Ok(Vec::new());
        }
        let lock = if postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM runs WHERE state = 'queued' AND \
             (lease_owner IS NULL OR lease_until <= $1) ORDER BY id LIMIT $2{lock}"
        )))
        .bind(now)
        .bind(free as i64)
        .fetch_all(&mut *tx)
        .await?;
        let until = now + lease.as_millis() as i64;
        for id in &ids {
            sqlx::query("UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3")
                .bind(self.node.as_ref())
                .bind(until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Renews this node's leases on `runs` (the ones it drives) and its own record. Returns
    /// how many leases were renewed: one missing was taken over by another node.
    pub async fn renew_leases(&self, runs: &[RunId], lease: Duration) -> Result<usize> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let mut tx = self.begin().await?;
        let mut renewed = 0;
        if !runs.is_empty() {
            let list: Vec<String> = runs.iter().map(|id| id.to_string()).collect();
            renewed = tx
                .execute(
                    sqlx::query(AssertSqlSafe(format!(
                        "UPDATE runs SET lease_until = $1 WHERE lease_owner = $2 AND id IN ({})",
                        list.join(", ")
                    )))
                    .bind(until)
                    .bind(self.node.as_ref()),
                )
                .await?
                .rows_affected() as usize;
        }
        sqlx::query("UPDATE nodes SET seen_at = $1 WHERE name = $2")
            .bind(now)
            .bind(self.node.as_ref())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(renewed)
    }

    /// Lets go of the queued runs this node held (claimed, not yet started), so any node may
    /// claim them; used at start, for what the last process of this node left.
    pub async fn release_queued(&self) -> Result<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND state = 'queued'",
        )
        .bind(self.node.as_ref())
        .execute(&mut *tx)
        .await?;
        notify_in(&mut tx, news::WAKE).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Lets go of one run this node held but no longer drives (it stopped on an internal
    /// error, or a stop left it queued).
    pub async fn release(&self, run: RunId) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND state = 'queued'",
        )
        .bind(run)
        .bind(self.node.as_ref())
        .execute(&mut *tx)
        .await?;
        notify_in(&mut tx, news::WAKE).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The running runs whose lease ran out: their node died or lost the database. Any node
    /// may take them over.
    pub async fn expired_runs(&self) -> Result<Vec<RunId>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE state = 'running' AND \
             (lease_owner IS NULL OR lease_until <= $1) ORDER BY id",
        )
        .bind(now_ms())
        .fetch_all(&self.reader)
        .await?)
    }

    /// Makes a running run this node's, to recover it: only if nobody else holds a live
    /// lease on it (or `force`, when this process is the only one there can be). False when
    /// another node got there first.
    pub async fn seize(&self, run: RunId, lease: Duration, force: bool) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND state = 'running' AND \
             ($4 OR lease_owner IS NULL OR lease_owner = $1 OR lease_until <= $5)",
        )
        .bind(self.node.as_ref())
        .bind(now + lease.as_millis() as i64)
        .bind(run)
        .bind(force)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks the node that runs `run` to cancel it. False when the run is not running.
    pub async fn request_cancel(&self, run: RunId, by: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET cancel_by = COALESCE(cancel_by, $1) \
             WHERE id = $2 AND state = 'running'",
        )
        .bind(by)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        notify_in(&mut tx, news::CANCEL).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Who asked to cancel `run`, if anyone did while it ran.
    pub async fn cancel_request(&self, run: RunId) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT cancel_by FROM runs WHERE id = $1")
                .bind(run)
                .fetch_optional(&self.reader)
                .await?
                .flatten(),
        )
    }

    /// The runs this node holds that someone asked to cancel, with who asked.
    pub async fn cancel_requests(&self) -> Result<Vec<(RunId, String)>> {
        /// A run someone asked to cancel, and who.
        #[derive(sqlx::FromRow)]
        struct CancelRequest {
            id: RunId,
            cancel_by: String,
        }
        let rows: Vec<CancelRequest> = sqlx::query_as(
            "SELECT id, cancel_by FROM runs WHERE lease_owner = $1 AND cancel_by IS NOT NULL \
             AND state = 'running'",
        )
        .bind(self.node.as_ref())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.cancel_by)).collect())
    }

    /// Sends `what` to every node listening (nothing on SQLite).
    pub async fn announce(&self, what: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(what)
                .execute(&self.writer)
                .await?;
        }
        Ok(())
    }
}

/// Listens on [`CHANNEL`] and calls `on_news` with what each notification says, until the
/// process ends; reconnects when the connection drops. Every `poll` it also calls `on_news`
/// with every kind of news, so a lost notification delays work by `poll` at most.
pub async fn listen(url: String, poll: Duration, on_news: impl Fn(&str) + Send + 'static) {
    let all = [news::WAKE, news::EVENTS, news::OUTBOX, news::CANCEL];
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    loop {
        if listener.is_none() {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => {
                        listener = Some(l);
                        // What was said while nobody listened is not lost: look now.
                        all.iter().for_each(|n| on_news(n));
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for wake-ups"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot connect to listen for wake-ups"),
            }
        }
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    got = l.try_recv() => match got {
                        Ok(Some(n)) => on_news(n.payload()),
                        // The connection dropped: look for what was missed, then listen anew.
                        Ok(None) => all.iter().for_each(|n| on_news(n)),
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for wake-ups failed");
                            listener = None;
                        }
                    },
                    _ = tick.tick() => all.iter().for_each(|n| on_news(n)),
                }
            }
            None => {
                tick.tick().await;
                all.iter().for_each(|n| on_news(n));
            }
        }
    }
}
