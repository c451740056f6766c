//! Everything that leaves jarvis for a chat network goes through an [`Outlet`]: masked,
//! folded to single lines without control characters, split to the protocol's length on
//! word boundaries, and paced by token buckets (one for the connection, one per target) so
//! jarvis is never thrown off for flooding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ChatNetwork, SendError, Target};
use crate::secrets::Masker;

/// The longest single message before it is split (characters); longer text is cut.
const MAX_MESSAGE_CHARS: usize = 4000;

pub struct Outlet {
    network: Arc<dyn ChatNetwork>,
    masker: Masker,
    /// Serialises senders so lines keep their order and the buckets stay honest.
    pacing: tokio::sync::Mutex<Pacing>,
}

struct Pacing {
    connection: Bucket,
    targets: HashMap<Target, Bucket>,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    fn new(burst: u32, per_second: f64) -> Bucket {
        Bucket {
            tokens: burst as f64,
            burst: burst as f64,
            per_second,
            last: Instant::now(),
        }
    }

    /// How long until a token is there (zero if one is there now).
    fn wait_needed(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second)
            .min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

impl Outlet {
    pub fn new(network: Arc<dyn ChatNetwork>, masker: Masker) -> Outlet {
        let rate = network.rate();
        Outlet {
            network,
            masker,
            pacing: tokio::sync::Mutex::new(Pacing {
                connection: Bucket::new(rate.burst, rate.per_second),
                targets: HashMap::new(),
            }),
        }
    }

    pub fn network(&self) -> &Arc<dyn ChatNetwork> {
        &self.network
    }

    /// Sends `text` (which may hold several lines) to `target`, each line prefixed with
    /// `prefix` (e.g. `alice: `). Stops at the first line the network refuses.
    pub async fn say(&self, target: &Target, prefix: &str, text: &str) -> Result<(), SendError> {
        let lines = self.prepare(target, prefix, text);
        let mut pacing = self.pacing.lock().await;
        let rate = self.network.rate();
        for line in lines {
            loop {
                let per_target = pacing
                    .targets
                    .entry(target.clone())
                    .or_insert_with(|| Bucket::new(rate.burst, rate.per_second))
                    .wait_needed();
                let wait = pacing.connection.wait_needed().max(per_target);
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            self.network.send(target, &line).await?;
            pacing.connection.take();
            if let Some(b) = pacing.targets.get_mut(target) {
                b.take();
            }
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
