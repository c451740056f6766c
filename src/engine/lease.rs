//! This node's part in a cluster: it renews the leases on the runs it drives, cancels the
//! ones someone asked another node to cancel, and takes over runs whose node died (their
//! lease ran out) exactly as a restart would. On SQLite the same loop runs and finds nothing
//! to take over.

use std::time::Duration;

use super::*;

impl Engine {
    pub(super) async fn keep_leases(self) {
        let every = (self.inner.config.lease / 3).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.cancels.notified() => {
                    self.apply_cancel_requests().await;
                    continue;
                }
                _ = self.inner.shutdown.cancelled() => return,
            }
            let held: Vec<RunId> = self.lock_active().keys().copied().collect();
            match self
                .inner
                .store
                .renew_leases(&held, self.inner.config.lease)
                .await
            {
                Ok(renewed) if renewed < held.len() => tracing::warn!(
                    held = held.len(),
                    renewed,
                    "another node took over runs this node still drives; their next writes are refused"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot renew this node's leases"),
            }
            self.apply_cancel_requests().await;
            self.take_over_expired().await;
        }
    }

    /// Someone asked (on another node) to cancel a run this node drives.
    pub fn check_cancels(&self) {
        self.inner.cancels.notify_one();
    }

    async fn apply_cancel_requests(&self) {
        let requests = match self.inner.store.cancel_requests().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read cancel requests");
                return;
            }
        };
        let active = self.lock_active();
        for (id, by) in requests {
            if let Some(a) = active.get(&id) {
                if let Ok(mut who) = a.cancelled_by.lock() {
                    who.get_or_insert(by);
                }
                a.cancel.cancel();
            }
        }
    }

    /// Runs whose node stopped renewing their lease: recovered here as after a restart.
    async fn take_over_expired(&self) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let expired = match self.inner.store.expired_runs().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot look for runs whose node died");
                return;
            }
        };
        for id in expired {
            if self.lock_active().contains_key(&id) {
                continue;
            }
            match recovery::take_over(self, id, false).await {
                Ok(true) => {
                    tracing::warn!(run = id, "took over a run whose node stopped renewing it");
                    self.inner.wake.notify_one();
                }
                Ok(false) => {}
                Err(e) => tracing::error!(run = id, error = %e, "cannot take over a run"),
            }
        }
    }
}
