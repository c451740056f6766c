//! The store's calls for the HTTP adapter (tokens, filtered runs, stage timings, events
//! after a cursor, stage clipboards, the figures of /metrics), on SQLite and on PostgreSQL alike.

mod support;

use std::time::Duration;

use jarvis::engine::pipeline::{RunKind, Stage, StageConfig};
use jarvis::store::{NewEvent, NewRun, Phase, RunFilter, RunState, Store};
use jarvis_testbed::Server;
use serde_json::json;
use support::Postgres;

fn new_run(host: &str) -> NewRun {
    let config: StageConfig = serde_saphyr::from_str("task: 'x:y'").unwrap();
    let clipboard = json!({"instance": {"hostname": host}});
    NewRun {
        host: host.into(),
        kind: RunKind::Deploy,
        pipeline: "p".into(),
        stages: vec![Stage::from_config(&config, Duration::from_secs(60))],
        on_failure: vec![],
        design_ref: host.into(),
        requester: "web:alice".into(),
        origin: "web".into(),
        clipboard: clipboard.as_object().cloned().unwrap_or_default(),
        retry_of: None,
        placement: Default::default(),
    }
}

async fn every_call(url: &str) {
    let store = Store::open(url).await.unwrap();

    // Tokens: by hash only; revoked by id or by person.
    let (token, hash) = jarvis::chat::tokens::make().unwrap();
    let id = store
        .add_api_token("alice", &hash, "console:root")
        .await
        .unwrap();
    assert_eq!(
        store.api_token_person(&hash).await.unwrap(),
        Some((id, "alice".to_string()))
    );
    assert_eq!(
        store
            .api_token_person(&jarvis::chat::tokens::hash("jv_other"))
            .await
            .unwrap(),
        None
    );
    store.touch_api_token(id).await.unwrap();
    let (_, hash2) = jarvis::chat::tokens::make().unwrap();
    let id2 = store
        .add_api_token("alice", &hash2, "console:root")
        .await
        .unwrap();
    let list = store.api_tokens().await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|t| t.id == id && t.last_used.is_some()));
    assert_eq!(
        store.revoke_api_tokens(Some(id), None, "x").await.unwrap(),
        1
    );
    assert_eq!(store.api_token_person(&hash).await.unwrap(), None);
    assert_eq!(
        store
            .revoke_api_tokens(None, Some("alice"), "x")
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.api_token_person(&hash2).await.unwrap(), None);
    assert_eq!(
        store.revoke_api_tokens(Some(id2), None, "x").await.unwrap(),
        0
    );
    drop(token);

    // Runs by filter and page; stage timings; events after a cursor.
    let first_event = store.last_event_id().await.unwrap();
    let a = store.insert_run(&new_run("a")).await.unwrap();
    let b = store.insert_run(&new_run("b")).await.unwrap();
    store
        .start_stage(
            a,
            Phase::Main,
            0,
            1,
            "x:y",
            &[NewEvent {
                run_id: a,
                kind: "stage_started",
                body: json!({"run": a}),
            }],
        )
        .await
        .unwrap();
    let all = store
        .runs_filtered(&RunFilter {
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, a]);
    let only_a = store
        .runs_filtered(&RunFilter {
            host: Some("a".into()),
            state: Some(RunState::Running),
            pipeline: Some("p".into()),
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(only_a.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    let page = store
        .runs_filtered(&RunFilter {
            before: Some(b),
            limit: 1,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    let timings = store.stage_timings(a).await.unwrap();
    assert_eq!(timings.len(), 1);
    assert_eq!(timings[0].task, "x:y");
    assert!(timings[0].started_us.is_some() && timings[0].finished_us.is_none());
    let events = store.events_after(first_event, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "stage_started");
    assert_eq!(store.last_event_id().await.unwrap(), events[0].id);
    assert!(
        store
            .events_after(events[0].id, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The figures of /metrics.
    let counts = store.run_counts().await.unwrap();
    assert!(
        counts.contains(&("p".to_string(), "running".to_string(), 1)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("p".to_string(), "queued".to_string(), 1)),
        "{counts:?}"
    );
    assert_eq!(store.running_attempts().await.unwrap(), 1);
    assert!(store.stage_durations().await.unwrap().is_empty());
    assert!(store.outbox_backlog().await.unwrap().is_empty());
    assert!(store.outbox_health().await.unwrap().is_empty());

    // The clipboard each stage left, for the run's JSON.
    let after = json!({"instance": {"hostname": "a", "ip": "10.0.0.9"}});
    let after = after.as_object().cloned().unwrap_or_default();
    store
        .finish_stage(a, Phase::Main, 0, 1, &after, None, None, None, &[])
        .await
        .unwrap();
    assert_eq!(
        store.stage_clipboards(a).await.unwrap(),
        vec![("main".to_string(), 0, after)]
    );
    assert!(store.stage_clipboards(b).await.unwrap().is_empty());
    // Group-committed writes were timed (start_stage, finish_stage): cumulative counts.
    let (buckets, sum) = store.write_latency();
    assert_eq!(buckets.len(), jarvis::store::WRITE_BUCKETS.len() + 1);
    assert!(buckets.last().copied().unwrap_or(0) >= 2, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]) && sum > 0.0);

    // The outbox's lag and its undeliverable notifications, by network.
    let msg = |text: &str| jarvis::store::NewOutbox {
        network: "libera".into(),
        target: "#ops".into(),
        text: text.into(),
    };
    store
        .route_event(events[0].id, &[msg("one"), msg("two")])
        .await
        .unwrap();
    let pending = store.pending_outbox("libera", 10).await.unwrap();
    store.set_aside(pending[0].id, "test").await.unwrap();
    let health = store.outbox_health().await.unwrap();
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0].0, "libera");
    assert!(health[0].1.is_some_and(|ms| ms >= 0), "{health:?}");
    assert_eq!(health[0].2, 1);
    store.close().await;
}

#[tokio::test]
async fn the_http_calls_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    every_call(&format!("sqlite://{}", dir.path().join("j.db").display())).await;
}

#[tokio::test]
async fn the_http_calls_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    every_call(&Postgres::fresh(&server).url).await;
}
