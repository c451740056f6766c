//! Group commit: the writes of many runs that arrive together share one transaction and so
//! one fsync. Each write is a job run inside its own savepoint, so a job that fails (a
//! guarded transition refused) is rolled back alone and its caller alone hears of it; a
//! caller returns only once the commit that holds its write is durable, so no promise is
//! weaker than with a transaction of its own.

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// One write: it gets the connection inside the shared transaction.
pub(super) type Job =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<()>> + Send>;

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
                let text = e.to_string();
                for request in batch {
                    let _ = request.done.send(Err(StoreError::Unavailable(format!(
                        "no database connection: {text}"
                    ))));
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

/// Runs the jobs in one transaction, each in a savepoint; returns each caller's outcome.
async fn commit_batch(
    conn: &mut AnyConnection,
    batch: Vec<Request>,
) -> Vec<(oneshot::Sender<Result<()>>, Result<()>)> {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let text = e.to_string();
            return batch
                .into_iter()
                .map(|r| {
                    let err =
                        StoreError::Unavailable(format!("cannot begin a transaction: {text}"));
                    (r.done, Err(err))
                })
                .collect();
        }
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
            let text = e.to_string();
            tracing::error!(error = %text, "a group commit failed");
            outcomes
                .into_iter()
                .map(|(done, _)| {
                    let err = StoreError::Unavailable(format!("the commit failed: {text}"));
                    (done, Err(err))
                })
                .collect()
        }
    }
}
