//! Retention: finished runs keep their summary and audit rows for good, and their log lines,
//! clipboards and events for a configured age; a background task prunes the rest, and
//! `jarvis prune` does it once by hand.

use std::time::Duration;

use serde::Deserialize;

use crate::store::{Pruned, Store, now_ms};

/// `retention:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a finished run keeps its log lines, clipboards and events (e.g. `90d`).
    /// Its summary (host, outcome, times, reason) and the audit log are never pruned.
    #[serde(
        default = "default_keep",
        with = "crate::config::humantime_serde_compat"
    )]
    pub keep: Duration,
    /// How often the daemon prunes (e.g. `1h`).
    #[serde(
        default = "default_every",
        with = "crate::config::humantime_serde_compat"
    )]
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: default_keep(),
            every: default_every(),
        }
    }
}

fn default_keep() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

fn default_every() -> Duration {
    Duration::from_secs(3600)
}

/// Prunes once what ended longer than `keep` ago.
pub async fn prune_once(store: &Store, keep: Duration) -> Result<Pruned, crate::store::StoreError> {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    store.prune(now_ms().saturating_sub(keep_ms)).await
}

/// The daemon's background pruning, every `config.every`.
pub async fn prune_forever(store: Store, config: RetentionConfig) {
    let every = config.every.max(Duration::from_secs(1));
    loop {
        match prune_once(&store, config.keep).await {
            Ok(p) if p.runs > 0 || p.notifications > 0 => tracing::info!(
                runs = p.runs,
                log_lines = p.log_lines,
                events = p.events,
                stage_records = p.stage_records,
                notifications = p.notifications,
                "pruned finished runs past retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot prune"),
        }
        tokio::time::sleep(every).await;
    }
}
