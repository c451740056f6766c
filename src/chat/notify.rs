//! Notifications that are never lost, and never stuck. The engine stores events with its
//! transitions; the router turns each event into outbox messages (one transaction: the
//! event is marked routed with its messages written); each network's courier sends its
//! pending messages and marks one sent only after the network accepted it.
//!
//! The router sums up a run's worker notices that come faster than `chat.notice_rate` in
//! one line ("… and 37 more notices from stage 3 — say 'log #12'"); the notices it holds
//! back stay unrouted until the line that sums them up is written with them, so a crash
//! loses none. The run's log has every line regardless.
//!
//! The courier keeps order per target, not per network: a target whose last try failed
//! waits (doubling from `retry_min` to `retry_max`) while the other targets go on. A
//! message the network refuses for good, or that failed `max_failures` times, is set aside
//! as undeliverable with its reason; admins see it in `status`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use super::outlet::Outlet;
use super::pace::Bucket;
use super::render::{event_text, pings_requester, run_name};
use super::{Origin, Rate, SendError, Target, TargetKind};
use crate::engine::events::{EventBody, kind};
use crate::store::{EventRow, NewOutbox, RunId, Store};

/// Notification delivery (`chat.delivery`). A notification the network refuses for good (a
/// channel that will not have jarvis, a target that is no valid name) is set aside at once;
/// one that fails `max_failures` times is set aside too. Set-aside notifications are logged
/// and shown to admins in `status`. Between failed tries a target waits, doubling from
/// `retry_min` up to `retry_max`; other targets on the network go on meanwhile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Failed tries before a notification is set aside. Default 5.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// The first wait after a failed try. Default 2s.
    #[serde(
        default = "default_retry_min",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub retry_min: Duration,
    /// The longest wait between tries. Default 5m.
    #[serde(
        default = "default_retry_max",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub retry_max: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_failures: default_max_failures(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
        }
    }
}

fn default_max_failures() -> u32 {
    5
}
fn default_retry_min() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}

/// `notices` lines per `per`, per run (`chat.notice_rate`), as a bucket: up to `notices` at
/// once, then one each `per / notices`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeRate {
    pub notices: u32,
    #[serde(deserialize_with = "jarvis_design::duration::deserialize")]
    pub per: Duration,
}

impl Default for NoticeRate {
    fn default() -> Self {
        NoticeRate {
            notices: 3,
            per: Duration::from_secs(10),
        }
    }
}

/// Routes stored events into the outbox, forever.
pub async fn route_events(
    store: Store,
    events_written: Arc<Notify>,
    outbox_written: Arc<Notify>,
    extra_targets: Vec<Target>,
    notice_rate: NoticeRate,
) {
    let mut cursor = 0i64;
    let mut notices = Coalescer::new(notice_rate);
    loop {
        let woken = events_written.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let mut wrote = false;
        for held in notices.due(Instant::now()) {
            if !route_summary(&store, &held, &extra_targets).await {
                notices.put_back(held);
            } else {
                wrote = true;
            }
        }
        match store.unrouted_events_after(cursor, 200).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    if !route_one(&store, &mut notices, &event, &extra_targets).await {
                        break;
                    }
                    cursor = event.id;
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
        if wrote {
            outbox_written.notify_waiters();
        }
        match notices.next_due(Instant::now()) {
            Some(at) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => woken.await,
        }
    }
}

/// Routes (or holds back) one event; false when the store failed and it must be tried again.
async fn route_one(
    store: &Store,
    notices: &mut Coalescer,
    event: &EventRow,
    extra: &[Target],
) -> bool {
    let body = EventBody::from_value(&event.body);
    let step = match &body {
        Some(b) => notices.on_event(event.id, &event.kind, b, Instant::now()),
        None => Step::Route { flush: None },
    };
    let flush = match step {
        Step::Hold => return true,
        Step::Route { flush } => flush,
    };
    if let Some(held) = flush
        && !route_summary(store, &held, extra).await
    {
        notices.put_back(*held);
        return false;
    }
    let messages = messages_for(&event.kind, &event.body, extra);
    if let Err(e) = store.route_event(event.id, &messages).await {
        tracing::error!(error = %e, "cannot route an event");
        tokio::time::sleep(Duration::from_secs(1)).await;
        return false;
    }
    true
}

async fn route_summary(store: &Store, held: &HeldNotices, extra: &[Target]) -> bool {
    let text = held.text();
    let messages = messages_with_text(kind::NOTICE, &held.last, &text, extra);
    match store.route_events(&held.ids, &messages).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot route summed-up notices");
            tokio::time::sleep(Duration::from_secs(1)).await;
            false
        }
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
    messages_with_text(kind, &event, &text, extra)
}

fn messages_with_text(
    kind: &str,
    event: &EventBody,
    text: &str,
    extra: &[Target],
) -> Vec<NewOutbox> {
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
                None => text.to_string(),
            },
        })
        .collect()
}

/// What the router does with an event.
#[derive(Debug)]
pub enum Step {
    /// Route it now, after the summary of the notices held back before it, if any.
    Route { flush: Option<Box<HeldNotices>> },
    /// A notice over the rate: held back, to be summed up.
    Hold,
}

/// Notices of one run held back over the notice rate, to go out as one summary line, so
/// that a chatty worker cannot flood a channel.
#[derive(Debug)]
pub struct HeldNotices {
    pub run: RunId,
    pub ids: Vec<i64>,
    stages: (Option<usize>, Option<usize>),
    /// The last notice held, for its run, origin and (if it is alone) its text.
    last: EventBody,
}

impl HeldNotices {
    /// The line that sums the held notices up (one held notice reads as itself).
    pub fn text(&self) -> String {
        if self.ids.len() == 1
            && let Some(text) = event_text(kind::NOTICE, &self.last)
        {
            return text;
        }
        let e = &self.last;
        let stages = match self.stages {
            (Some(a), Some(b)) if a == b => format!(" from stage {a}/{}", e.stages),
            (Some(a), Some(b)) => format!(" from stages {a}–{b}"),
            _ => String::new(),
        };
        format!(
            "{}: … and {} more notices{stages} — say 'log #{}'",
            run_name(&e.host, &e.kind, e.run),
            self.ids.len(),
            e.run
        )
    }
}

struct RunNotices {
    bucket: Bucket,
    held: Option<HeldNotices>,
}

/// The notice rate per run, pure: events in, what to route out.
pub struct Coalescer {
    rate: Rate,
    runs: HashMap<RunId, RunNotices>,
}

impl Coalescer {
    pub fn new(rate: NoticeRate) -> Coalescer {
        let per_second = rate.notices as f64 / rate.per.as_secs_f64().max(0.001);
        Coalescer {
            rate: Rate {
                burst: rate.notices.max(1),
                per_second,
            },
            runs: HashMap::new(),
        }
    }

    pub fn on_event(&mut self, id: i64, event_kind: &str, body: &EventBody, now: Instant) -> Step {
        let rate = self.rate;
        if event_kind != kind::NOTICE {
            let flush = self
                .runs
                .get_mut(&body.run)
                .and_then(|r| r.held.take())
                .map(Box::new);
            if ends_run(event_kind) {
                self.runs.remove(&body.run);
            }
            return Step::Route { flush };
        }
        if self.runs.len() > 10_000 {
            // Runs that ended without a final event (cannot happen, but memory is finite).
            self.runs.retain(|_, r| r.held.is_some());
        }
        let run = self.runs.entry(body.run).or_insert_with(|| RunNotices {
            bucket: Bucket::new(rate, now),
            held: None,
        });
        if run.held.is_none() && run.bucket.wait_needed(now).is_zero() {
            run.bucket.reserve(now);
            return Step::Route { flush: None };
        }
        let held = run.held.get_or_insert_with(|| HeldNotices {
            run: body.run,
            ids: Vec::new(),
            stages: (body.stage, body.stage),
            last: body.clone(),
        });
        held.ids.push(id);
        held.stages.1 = body.stage;
        held.last = body.clone();
        Step::Hold
    }

    /// Summaries whose run has a token again (each takes one).
    pub fn due(&mut self, now: Instant) -> Vec<HeldNotices> {
        let mut out = Vec::new();
        for run in self.runs.values_mut() {
            if run.held.is_some() && run.bucket.wait_needed(now).is_zero() {
                run.bucket.reserve(now);
                out.extend(run.held.take());
            }
        }
        out
    }

    /// When the next summary is due, if any is held.
    pub fn next_due(&mut self, now: Instant) -> Option<Instant> {
        self.runs
            .values_mut()
            .filter(|r| r.held.is_some())
            .map(|r| now + r.bucket.wait_needed(now))
            .min()
    }

    /// A summary that could not be stored: held again (before anything held since).
    pub fn put_back(&mut self, mut held: HeldNotices) {
        let rate = self.rate;
        let run = self.runs.entry(held.run).or_insert_with(|| RunNotices {
            bucket: Bucket::new(rate, Instant::now()),
            held: None,
        });
        if let Some(later) = run.held.take() {
            held.ids.extend(later.ids);
            held.stages.1 = later.stages.1;
            held.last = later.last;
        }
        run.held = Some(held);
    }
}

fn ends_run(event_kind: &str) -> bool {
    matches!(
        event_kind,
        kind::SUCCEEDED | kind::FAILED | kind::UNDONE | kind::CANCELLED | kind::INTERRUPTED
    )
}

/// Delivers one network's pending outbox messages, forever.
pub async fn courier(
    store: Store,
    outlet: Arc<Outlet>,
    outbox_written: Arc<Notify>,
    delivery: DeliveryConfig,
) {
    let network = outlet.network().name().to_string();
    let mut online = outlet.network().online();
    let mut backoff = Backoff::new(delivery.retry_min, delivery.retry_max);
    'outer: loop {
        // Wait to be connected.
        while !*online.borrow_and_update() {
            if online.changed().await.is_err() {
                return;
            }
        }
        let woken = outbox_written.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let pending = match store.pending_outbox(&network, 20).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut progressed = false;
        // Targets that failed in this round keep their order: their later rows wait.
        let mut blocked: HashSet<String> = HashSet::new();
        for row in pending {
            if blocked.contains(&row.target) || backoff.waiting(&row.target, Instant::now()) {
                continue;
            }
            let target = Target::from_outbox(&network, &row.target);
            let result = outlet.say(&target, "", &row.text).await;
            match result {
                Ok(()) => {
                    backoff.succeeded(&row.target);
                    if let Err(e) = store.mark_sent(row.id).await {
                        tracing::error!(error = %e, "cannot mark a notification sent");
                    }
                    progressed = true;
                }
                Err(SendError::Offline) => {
                    let _ = store.record_failure(row.id, "not connected", false).await;
                    // Wait for the connection to change (or a short while) before going on.
                    let _ = tokio::time::timeout(Duration::from_secs(1), online.changed()).await;
                    continue 'outer;
                }
                Err(e) => {
                    let reason = e.to_string();
                    let failures = match store.record_failure(row.id, &reason, true).await {
                        Ok(n) => n,
                        Err(err) => {
                            tracing::error!(error = %err, "cannot record a failed try");
                            row.failures + 1
                        }
                    };
                    let give_up = e.is_permanent() || failures >= delivery.max_failures;
                    if give_up {
                        tracing::warn!(
                            network,
                            target = %target.name,
                            outbox = row.id,
                            tries = row.attempts + 1,
                            reason = %reason,
                            "notification set aside as undeliverable"
                        );
                        if let Err(err) = store.set_aside(row.id, &reason).await {
                            tracing::error!(error = %err, "cannot set a notification aside");
                        }
                        progressed = true;
                    }
                    if !e.is_permanent() {
                        let wait = backoff.failed(&row.target, Instant::now());
                        tracing::info!(
                            network,
                            target = %target.name,
                            error = %reason,
                            retry_in_ms = wait.as_millis() as u64,
                            "notification not delivered; will retry"
                        );
                        blocked.insert(row.target.clone());
                    }
                }
            }
        }
        if progressed {
            continue;
        }
        match backoff.next_end(Instant::now()) {
            Some(at) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = online.changed() => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = online.changed() => {}
                }
            }
        }
    }
}

/// Per-target waits after failed tries: doubling from `min` up to `max`, reset by a success.
pub struct Backoff {
    min: Duration,
    max: Duration,
    targets: HashMap<String, (Instant, Duration)>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            targets: HashMap::new(),
        }
    }

    /// Whether `target` is still waiting at `now`.
    pub fn waiting(&self, target: &str, now: Instant) -> bool {
        self.targets
            .get(target)
            .is_some_and(|(until, _)| *until > now)
    }

    /// Records a failure; returns how long the target now waits.
    pub fn failed(&mut self, target: &str, now: Instant) -> Duration {
        let wait = match self.targets.get(target) {
            Some((_, last)) => (*last * 2).min(self.max),
            None => self.min,
        };
        self.targets.insert(target.to_string(), (now + wait, wait));
        wait
    }

    pub fn succeeded(&mut self, target: &str) {
        self.targets.remove(target);
    }

    /// The earliest end of a wait still running.
    pub fn next_end(&self, now: Instant) -> Option<Instant> {
        self.targets
            .values()
            .map(|(until, _)| *until)
            .filter(|until| *until > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(run: RunId, stage: usize) -> EventBody {
        EventBody {
            run,
            host: "demo".into(),
            kind: "deploy".into(),
            stages: 3,
            ..Default::default()
        }
        .stage(stage - 1, "local:step")
        .text("hello")
    }

    #[test]
    fn notices_over_the_rate_are_summed_up_per_run() {
        let mut c = Coalescer::new(NoticeRate {
            notices: 3,
            per: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        let mut routed = 0;
        for id in 1..=200 {
            match c.on_event(id, kind::NOTICE, &notice(7, 2), t0) {
                Step::Route { flush } => {
                    assert!(flush.is_none());
                    routed += 1;
                }
                Step::Hold => {}
            }
        }
        assert_eq!(routed, 3);
        // Another run has its own rate.
        assert!(matches!(
            c.on_event(201, kind::NOTICE, &notice(8, 1), t0),
            Step::Route { flush: None }
        ));
        // Nothing is due before a token is back (one each 3.3 s).
        assert!(c.due(t0 + Duration::from_secs(1)).is_empty());
        let at = c.next_due(t0 + Duration::from_secs(1)).unwrap();
        assert!(at > t0 + Duration::from_secs(3) && at < t0 + Duration::from_secs(4));
        let due = c.due(at);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].ids.len(), 197);
        assert_eq!(
            due[0].text(),
            "demo deploy #7: … and 197 more notices from stage 2/3 — say 'log #7'"
        );
        // The run's end flushes what is held before its own line.
        assert!(matches!(
            c.on_event(300, kind::NOTICE, &notice(7, 3), at),
            Step::Hold
        ));
        assert!(matches!(
            c.on_event(301, kind::NOTICE, &notice(7, 3), at),
            Step::Hold
        ));
        let Step::Route { flush: Some(held) } = c.on_event(302, kind::SUCCEEDED, &notice(7, 3), at)
        else {
            panic!("the end flushes");
        };
        assert_eq!(held.ids, vec![300, 301]);
        assert!(held.text().contains("2 more notices from stage 3/3"));
        assert!(c.next_due(at).is_none());
        // One held notice reads as itself.
        for id in 400..404 {
            let _ = c.on_event(id, kind::NOTICE, &notice(9, 1), at);
        }
        let Step::Route { flush: Some(held) } = c.on_event(405, kind::FAILED, &notice(9, 1), at)
        else {
            panic!("the end flushes");
        };
        assert_eq!(held.text(), "demo deploy #9 stage 1/3 local:step: hello");
    }

    #[test]
    fn backoff_is_per_target_doubling_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(b.failed("room:#a", t0), Duration::from_secs(1));
        assert_eq!(b.failed("room:#a", t0), Duration::from_secs(2));
        assert_eq!(b.failed("room:#a", t0), Duration::from_secs(4));
        assert_eq!(b.failed("room:#a", t0), Duration::from_secs(5));
        assert!(b.waiting("room:#a", t0 + Duration::from_secs(4)));
        assert!(!b.waiting("room:#b", t0));
        assert!(!b.waiting("room:#a", t0 + Duration::from_secs(6)));
        assert_eq!(b.next_end(t0), Some(t0 + Duration::from_secs(5)));
        b.succeeded("room:#a");
        assert_eq!(b.failed("room:#a", t0), Duration::from_secs(1));
    }
}
