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
    /// Adds a network's outlet; refused when another network has its name, since
    /// notifications, grants and replies find a network by name alone.
    pub fn add(&self, outlet: Outlet) -> Result<Arc<Outlet>, String> {
        let name = outlet.network.name().to_string();
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.contains_key(&name) {
            return Err(format!(
                "two chat networks are named '{name}'; every network needs its own name"
            ));
        }
        let outlet = Arc::new(outlet);
        map.insert(name, outlet.clone());
        Ok(outlet)
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

#[cfg(test)]
mod outlets_tests {
    use futures_util::future::BoxFuture;
    use tokio::sync::watch;

    use super::*;
    use crate::chat::{ChatNetwork, Rate, SendError, Target};

    struct Named(&'static str);

    impl ChatNetwork for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn max_line_bytes(&self, _: &Target) -> usize {
            400
        }
        fn rate(&self) -> Rate {
            Rate {
                burst: 1,
                per_second: 1.0,
            }
        }
        fn send<'a>(&'a self, _: &'a Target, _: &'a str) -> BoxFuture<'a, Result<(), SendError>> {
            Box::pin(async { Ok(()) })
        }
        fn online(&self) -> watch::Receiver<bool> {
            watch::channel(true).1
        }
    }

    #[test]
    fn a_second_network_of_the_same_name_is_refused() {
        let outlets = Outlets::default();
        let masker = Masker::new(vec![], vec![]);
        let first = outlets
            .add(Outlet::new(Arc::new(Named("libera")), masker.clone()))
            .expect("the first");
        let again = outlets.add(Outlet::new(Arc::new(Named("libera")), masker.clone()));
        assert!(matches!(again, Err(e) if e.contains("'libera'")));
        // The first keeps its place.
        let kept = outlets.get("libera").expect("kept");
        assert!(Arc::ptr_eq(&kept, &first));
        assert!(
            outlets
                .add(Outlet::new(Arc::new(Named("jabber")), masker))
                .is_ok()
        );
    }
}
