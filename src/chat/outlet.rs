//! Everything that leaves jarvis for a chat network goes through an [`Outlet`]: masked,
//! folded to single lines without control characters, split to the protocol's length on
//! word boundaries, and paced by token buckets (one for the connection, one per target) so
//! jarvis is never thrown off for flooding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::pace::{Bucket, Pacer};
use super::{ChatNetwork, SendError, Target};
use crate::secrets::Masker;

/// The longest single message before it is split (characters); longer text is cut.
const MAX_MESSAGE_CHARS: usize = 4000;

pub struct Outlet {
    network: Arc<dyn ChatNetwork>,
    masker: Masker,
    /// The connection's bucket, shared with the adapter's own lines where it has some.
    connection: Pacer,
    /// Serialises senders so lines keep their order; holds the per-target buckets.
    targets: tokio::sync::Mutex<HashMap<Target, Bucket>>,
}

impl Outlet {
    pub fn new(network: Arc<dyn ChatNetwork>, masker: Masker) -> Outlet {
        let connection = network
            .pacer()
            .unwrap_or_else(|| Pacer::new(network.rate()));
        Outlet {
            network,
            masker,
            connection,
            targets: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn network(&self) -> &Arc<dyn ChatNetwork> {
        &self.network
    }

    /// Sends `text` (which may hold several lines) to `target`, each line prefixed with
    /// `prefix` (e.g. `alice: `). Stops at the first line the network refuses.
    pub async fn say(&self, target: &Target, prefix: &str, text: &str) -> Result<(), SendError> {
        let lines = self.prepare(target, prefix, text);
        let mut targets = self.targets.lock().await;
        let rate = self.network.rate();
        for line in lines {
            let now = Instant::now();
            let per_target = targets
                .entry(target.clone())
                .or_insert_with(|| Bucket::new(rate, now))
                .reserve(now);
            if !per_target.is_zero() {
                tokio::time::sleep(per_target).await;
            }
            self.connection.acquire().await;
            self.network.send(target, &line).await?;
        }
        Ok(())
    }

    /// The protocol lines `text` becomes. Pure apart from the network's length limit.
    pub fn prepare(&self, target: &Target, prefix: &str, text: &str) -> Vec<String> {
        let max = self
            .network
            .max_line_bytes(target)
            .saturating_sub(prefix.len())
            .max(16);
        let masked = self.masker.mask(text);
        let mut out = Vec::new();
        for raw in masked.lines() {
            let line = crate::text::one_line(raw, MAX_MESSAGE_CHARS);
            if line.is_empty() {
                continue;
            }
            for piece in crate::text::split_to_fit(&line, max) {
                out.push(format!("{prefix}{piece}"));
            }
        }
        out
    }
}

/// Outlets by network name.
#[derive(Clone, Default)]
pub struct Outlets {
    inner: Arc<Mutex<HashMap<String, Arc<Outlet>>>>,
}

impl Outlets {
    pub fn add(&self, outlet: Outlet) -> Arc<Outlet> {
        let outlet = Arc::new(outlet);
        if let Ok(mut map) = self.inner.lock() {
            map.insert(outlet.network.name().to_string(), outlet.clone());
        }
        outlet
    }

    pub fn get(&self, network: &str) -> Option<Arc<Outlet>> {
        self.inner.lock().ok()?.get(network).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Outlet>> {
        self.inner
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
