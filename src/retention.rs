//! Retention: finished runs keep their log lines, clipboards and events for a configured age
//! (`keep`), their summary for `forget` and the audit log for `audit` (both for good unless
//! set); a background task prunes, and `jarvis prune` does it once by hand.

use std::time::Duration;

use serde::Deserialize;

use crate::store::{Pruned, Store, now_ms};

/// `retention:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a finished run keeps its log lines, clipboards and events (e.g. `90d`).
    /// Its summary (host, outcome, times, reason) stays until `forget`.
    #[serde(
        default = "default_keep",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub keep: Duration,
    /// How often the daemon prunes (e.g. `1h`).
    #[serde(
        default = "default_every",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub every: Duration,
    /// How long a finished run's summary stays (e.g. `730d`), after which the run is gone from
    /// `history` and `status`. Unset: kept for good. Never shorter than `keep`.
    #[serde(
        default,
        deserialize_with = "jarvis_design::duration::deserialize_option"
    )]
    pub forget: Option<Duration>,
    /// How long audit rows (who asked what, and the answer) stay (e.g. `400d`). Unset: kept
    /// for good. Together with `forget`, the database stops growing under a steady load.
    #[serde(
        default,
        deserialize_with = "jarvis_design::duration::deserialize_option"
    )]
    pub audit: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: default_keep(),
            every: default_every(),
            forget: None,
            audit: None,
        }
    }
}

fn default_keep() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

fn default_every() -> Duration {
    Duration::from_secs(3600)
}

/// Prunes once what is past its age.
pub async fn prune_once(
    store: &Store,
    config: &RetentionConfig,
) -> Result<Pruned, crate::store::StoreError> {
    let before =
        |age: Duration| now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let mut pruned = store.prune(before(config.keep)).await?;
    if let Some(forget) = config.forget {
        pruned.forgotten = store.forget_runs(before(forget.max(config.keep))).await?;
    }
    if let Some(audit) = config.audit {
        pruned.audit_rows = store.forget_audit(before(audit)).await?;
    }
    Ok(pruned)
}

/// The daemon's background pruning, every `config.every`.
pub async fn prune_forever(store: Store, config: RetentionConfig) {
    let every = config.every.max(Duration::from_secs(1));
    loop {
        match prune_once(&store, &config).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                runs = p.runs,
                log_lines = p.log_lines,
                events = p.events,
                stage_records = p.stage_records,
                notifications = p.notifications,
                forgotten = p.forgotten,
                audit_rows = p.audit_rows,
                "pruned finished runs past retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot prune"),
        }
        tokio::time::sleep(every).await;
    }
}
