//! Group commit: the writes of many runs that arrive together share one transaction and so
//! one fsync. A job that fails (a guarded transition refused) fails alone: the batch is
//! rolled back and run again with each job in a savepoint of its own, so only that caller
//! hears of it; a caller returns only once the commit that holds its write is durable, so no
//! promise is weaker than with a transaction of its own.

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// One write: it gets the connection inside the shared transaction. It may be called again
/// after a rollback (see [`commit_batch`]), so it owns nothing it gives away.
pub(super) type Job =
    Box<dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<()>> + Send + Sync>;

struct Request {
    job: Job,
    done: oneshot::Sender<Result<()>>,
}

/// How many writes one commit takes at most.
const MOST_PER_COMMIT: usize = 256;

#[derive(Clone)]
pub(super) struct Batcher {
    requests: mpsc::Sender<Request>,
    /// How long writes waited for their commit, for `/metrics`.
    pub(super) latency: std::sync::Arc<super::web::WriteLatency>,
}

impl Batcher {
    pub(super) fn start(writer: AnyPool) -> Batcher {
        let (requests, rx) = mpsc::channel(4096);
        tokio::spawn(commit_loop(writer, rx));
        Batcher {
            requests,
            latency: Default::default(),
        }
    }

    /// Runs `job` in the next group commit and waits until that commit is durable.
    pub(super) async fn run(&self, job: Job) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let _timing = self.latency.timing();
        self.requests
            .send(Request { job, done })
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
    }
}

async fn commit_loop(writer: AnyPool, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_COMMIT {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut conn = match writer.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                for (done, outcome) in every_one(batch, &format!("no database connection: {e}")) {
                    let _ = done.send(outcome);
                }
                continue;
            }
        };
        let outcomes = commit_batch(&mut conn, batch).await;
        for (done, outcome) in outcomes {
            let _ = done.send(outcome);
        }
    }
}

type Outcomes = Vec<(oneshot::Sender<Result<()>>, Result<()>)>;

/// Runs the jobs in one transaction and returns each caller's outcome.
///
/// Every statement is a round trip to the database's thread, and on a busy machine each one
/// waits for a core; so the usual case, where every write goes through, runs the jobs one
/// after the other with nothing between them. Only when one of them fails (a guarded
/// transition refused) is the transaction rolled back and the batch run again, each job in
/// a savepoint of its own, so that the failure is that caller's alone. Jobs are pure
/// functions of the connection, so running one again after a rollback is safe.
async fn commit_batch(conn: &mut AnyConnection, batch: Vec<Request>) -> Outcomes {
    match all_or_nothing(conn, &batch).await {
        Pass::Committed => batch.into_iter().map(|r| (r.done, Ok(()))).collect(),
        Pass::Unavailable(text) => every_one(batch, &text),
        // Alone, its failure was the whole transaction's, rolled back already.
        Pass::OneFailed(e) if batch.len() == 1 => batch
            .into_iter()
            .zip(std::iter::once(Err(e)))
            .map(|(r, outcome)| (r.done, outcome))
            .collect(),
        Pass::OneFailed(_) => each_in_a_savepoint(conn, batch).await,
    }
}

enum Pass {
    Committed,
    /// A job failed; the transaction was rolled back.
    OneFailed(StoreError),
    /// The database could not begin or commit; nothing is known to be written.
    Unavailable(String),
}

async fn all_or_nothing(conn: &mut AnyConnection, batch: &[Request]) -> Pass {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return Pass::Unavailable(format!("cannot begin a transaction: {e}")),
    };
    for request in batch {
        if let Err(e) = (request.job)(&mut tx).await {
            // Dropping the transaction rolls back what the batch wrote.
            return Pass::OneFailed(e);
        }
    }
    match tx.commit().await {
        Ok(()) => Pass::Committed,
        Err(e) => {
            tracing::error!(error = %e, "a group commit failed");
            Pass::Unavailable(format!("the commit failed: {e}"))
        }
    }
}

fn every_one(batch: Vec<Request>, text: &str) -> Outcomes {
    batch
        .into_iter()
        .map(|r| (r.done, Err(StoreError::Unavailable(text.to_string()))))
        .collect()
}

/// The slow way, after a failure: each job in its own savepoint, one transaction for all.
async fn each_in_a_savepoint(conn: &mut AnyConnection, batch: Vec<Request>) -> Outcomes {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return every_one(batch, &format!("cannot begin a transaction: {e}")),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let outcome = match tx.begin().await {
            Ok(mut savepoint) => match (request.job)(&mut savepoint).await {
                Ok(()) => savepoint.commit().await.map_err(StoreError::from),
                // Dropping the savepoint rolls back this job's writes only.
                Err(e) => Err(e),
            },
            Err(e) => Err(StoreError::from(e)),
        };
        outcomes.push((request.done, outcome));
    }
    match tx.commit().await {
        Ok(()) => outcomes,
        Err(e) => {
            tracing::error!(error = %e, "a group commit failed");
            let text = format!("the commit failed: {e}");
            outcomes
                .into_iter()
                .map(|(done, _)| (done, Err(StoreError::Unavailable(text.clone()))))
                .collect()
        }
    }
}
