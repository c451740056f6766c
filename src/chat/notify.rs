//! Notifications that are never lost. The engine stores events with its transitions; the
//! router turns each event into outbox messages (one transaction: the event is marked routed
//! with its messages written); each network's courier sends its pending messages in order
//! and marks one sent only after the network accepted it. A courier whose network is offline
//! waits for it to come back, then carries on from the first unsent message.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::outlet::Outlet;
use super::render::{event_text, pings_requester};
use super::{Origin, Target, TargetKind};
use crate::engine::events::EventBody;
use crate::store::{NewOutbox, Store};

/// Routes stored events into the outbox, forever.
pub async fn route_events(
    store: Store,
    events_written: Arc<Notify>,
    outbox_written: Arc<Notify>,
    extra_targets: Vec<Target>,
) {
    loop {
        let woken = events_written.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match store.unrouted_events(200).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    let messages = messages_for(&event.kind, &event.body, &extra_targets);
                    if let Err(e) = store.route_event(event.id, &messages).await {
                        tracing::error!(error = %e, "cannot route an event");
                        break;
                    }
                }
                outbox_written.notify_waiters();
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read events");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        woken.await;
    }
}

/// The outbox messages one event becomes: its run's origin, plus the configured extra
/// targets, each once.
pub fn messages_for(kind: &str, body: &serde_json::Value, extra: &[Target]) -> Vec<NewOutbox> {
    let Some(event) = EventBody::from_value(body) else {
        return Vec::new();
    };
    let Some(text) = event_text(kind, &event) else {
        return Vec::new();
    };
    let origin = Origin::decode(&event.origin);
    let mut targets: Vec<(Target, Option<String>)> = Vec::new();
    if let Some(o) = &origin {
        let ping =
            (o.target.kind == TargetKind::Room && pings_requester(kind)).then(|| o.nick.clone());
        targets.push((o.target.clone(), ping));
    }
    for t in extra {
        if !targets.iter().any(|(have, _)| have == t) {
            targets.push((t.clone(), None));
        }
    }
    targets
        .into_iter()
        .map(|(target, ping)| NewOutbox {
            network: target.network.clone(),
            target: target.outbox_key(),
            text: match ping {
                Some(nick) => format!("{nick}: {text}"),
                None => text.clone(),
            },
        })
        .collect()
}

/// Delivers one network's pending outbox messages, forever.
pub async fn courier(store: Store, outlet: Arc<Outlet>, outbox_written: Arc<Notify>) {
    let network = outlet.network().name().to_string();
    let mut online = outlet.network().online();
    loop {
        // Wait to be connected.
        while !*online.borrow_and_update() {
            if online.changed().await.is_err() {
                return;
            }
        }
        let woken = outbox_written.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let pending = match store.pending_outbox(&network, 100).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if pending.is_empty() {
            tokio::select! {
                _ = &mut woken => {}
                _ = online.changed() => {}
            }
            continue;
        }
        for row in pending {
            let target = Target::from_outbox(&network, &row.target);
            match outlet.say(&target, "", &row.text).await {
                Ok(()) => {
                    if let Err(e) = store.mark_sent(row.id).await {
                        tracing::error!(error = %e, "cannot mark a notification sent");
                    }
                }
                Err(e) => {
                    tracing::warn!(network, error = %e, "notification not delivered; will retry");
                    // Wait for the connection to change (or a short while) before trying again.
                    let _ = tokio::time::timeout(Duration::from_secs(5), online.changed()).await;
                    break;
                }
            }
        }
    }
}
