//! The store's calls, each on SQLite and on PostgreSQL: one suite, two databases. What the
//! engine and the chat side rely on — one active run per host, events written with their
//! transitions, the outbox's order and its set-aside rows, pins, sealed bytes, the audit
//! log, retention — must read the same from either. (The life cycle's transitions are a
//! property test in tests/lifecycle.rs, on both too.)

mod support;

use std::time::Duration;

use jarvis::engine::pipeline::{RunKind, Stage, StageConfig};
use jarvis::store::{
    AuditEntry, HostKey, NewEvent, NewOutbox, NewRun, NextStart, Phase, RunState, Store,
    StoreError, lifecycle,
};
use jarvis_testbed::Server;
use serde_json::json;
use support::Postgres;

fn stages(n: usize) -> Vec<Stage> {
    let config: StageConfig = serde_saphyr::from_str("task: 'x:y'").unwrap();
    (0..n)
        .map(|_| Stage::from_config(&config, Duration::from_secs(60)))
        .collect()
}

fn new_run(host: &str) -> NewRun {
    let clipboard = json!({"instance": {"hostname": host}, "jarvis": {"host": host}});
    NewRun {
        host: host.into(),
        kind: RunKind::Deploy,
        pipeline: "p".into(),
        stages: stages(2),
        on_failure: stages(1),
        design_ref: host.into(),
        requester: "console:test".into(),
        origin: "console".into(),
        clipboard: clipboard.as_object().cloned().unwrap_or_default(),
        retry_of: None,
        placement: Default::default(),
    }
}

fn event(run: i64, kind: &'static str) -> NewEvent {
    NewEvent {
        run_id: run,
        kind,
        body: json!({"run": run}),
    }
}

/// Every call of the store, in the order a run and its notifications use them.
async fn every_call(url: &str) {
    let store = Store::open(url).await.unwrap();

    // Queue: the run id reaches the clipboard; one active run per host.
    let id = store.insert_run(&new_run("loki")).await.unwrap();
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.clipboard["jarvis"]["run_id"], json!(id));
    assert_eq!(run.initial_clipboard["jarvis"]["run_id"], json!(id));
    match store.insert_run(&new_run("loki")).await {
        Err(StoreError::HostBusy { run, .. }) => assert_eq!(run, id),
        other => panic!("a second active run of loki: {other:?}"),
    }
    assert_eq!(store.queued_ids().await.unwrap(), vec![id]);
    assert_eq!(store.count_active().await.unwrap(), 1);
    assert_eq!(
        store
            .active_run_for_host("loki")
            .await
            .unwrap()
            .map(|r| r.id),
        Some(id)
    );

    // Stages: start, finish with the next started in the same commit, log, progress.
    store
        .start_stage(id, Phase::Main, 0, 1, "x:y", &[event(id, "stage_started")])
        .await
        .unwrap();
    store
        .append_log(id, Some(1), &["one".into(), "two".into()])
        .await
        .unwrap();
    store.set_progress(id, "half way").await.unwrap();
    let out = json!({"x": {"done": [1]}})
        .as_object()
        .cloned()
        .unwrap_or_default();
    store
        .finish_stage(
            id,
            Phase::Main,
            0,
            1,
            &out,
            Some("one done"),
            Some(NextStart {
                attempt: 1,
                task: "x:y",
            }),
            None,
            &[event(id, "stage_finished")],
        )
        .await
        .unwrap();
    assert_eq!(
        store.stage_clipboard(id, 0).await.unwrap(),
        Some(out.clone())
    );
    let rows = store.stage_runs(id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].state, "succeeded");
    assert_eq!(rows[1].state, "running");
    store
        .end_attempt(id, Phase::Main, 1, 1, "tempfailed", Some(75), "try again")
        .await
        .unwrap();
    store
        .start_stage(id, Phase::Main, 1, 2, "x:y", &[])
        .await
        .unwrap();
    // A finish of a stage the run is past is refused, and changes nothing.
    let refused = store
        .finish_stage(id, Phase::Main, 0, 1, &out, None, None, None, &[])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Refused { .. })),
        "{refused:?}"
    );
    store
        .finish_stage(id, Phase::Main, 1, 2, &out, None, None, None, &[])
        .await
        .unwrap();
    store
        .finish_run(id, &lifecycle::SUCCEED, None, &[event(id, "run_succeeded")])
        .await
        .unwrap();
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert!(run.finished_at.is_some());
    assert_eq!(
        store.log_tail(id, 10).await.unwrap(),
        vec![(Some(1), "one".to_string()), (Some(1), "two".to_string())]
    );
    assert_eq!(store.log_tail(id, 1).await.unwrap().len(), 1);
    assert_eq!(
        store
            .runs_in_state(RunState::Succeeded)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.active_runs().await.unwrap().is_empty());

    // A failure with its undo, then a resume of the undo.
    let failed = store.insert_run(&new_run("thor")).await.unwrap();
    store
        .start_stage(failed, Phase::Main, 0, 1, "x:y", &[])
        .await
        .unwrap();
    store
        .end_attempt(failed, Phase::Main, 0, 1, "failed", Some(1), "boom")
        .await
        .unwrap();
    store.fail_run(failed, 0, "boom", true, &[]).await.unwrap();
    let run = store.run(failed).await.unwrap().unwrap();
    assert_eq!(
        (run.phase, run.error.as_deref()),
        (Phase::OnFailure, Some("boom"))
    );
    store
        .start_stage(failed, Phase::OnFailure, 0, 1, "x:y", &[])
        .await
        .unwrap();
    store
        .set_state(failed, &lifecycle::INTERRUPT, &[])
        .await
        .unwrap();
    let run = store.run(failed).await.unwrap().unwrap();
    store.resume(&run).await.unwrap();
    let run = store.run(failed).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(
        run.error.as_deref(),
        Some("boom"),
        "resuming the undo keeps the failure"
    );
    store
        .finish_run(failed, &lifecycle::CANCEL_WAITING, Some("by test"), &[])
        .await
        .unwrap();

    // Approval of a waiting run.
    let gated = store.insert_run(&new_run("odin")).await.unwrap();
    store
        .set_state(gated, &lifecycle::WAIT_FOR_APPROVAL, &[])
        .await
        .unwrap();
    store.approve(gated, 0, "person:bob").await.unwrap();
    let run = store.run(gated).await.unwrap().unwrap();
    assert_eq!(run.approved_by.as_deref(), Some("person:bob"));
    assert_eq!(run.approved_stage, Some(0));
    store
        .finish_run(gated, &lifecycle::CANCEL_WAITING, None, &[])
        .await
        .unwrap();
    let history = store.history(None, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![gated, failed, id]
    );
    assert_eq!(store.history(Some("loki"), 10).await.unwrap().len(), 1);
    assert_eq!(
        store.last_run_for_host("thor").await.unwrap().map(|r| r.id),
        Some(failed)
    );

    // Events to the outbox, per target in order; set aside; sent.
    store.add_events(&[event(id, "extra")]).await.unwrap();
    let events = store.unrouted_events(100).await.unwrap();
    assert!(events.len() >= 4, "{events:?}");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let after = store
        .unrouted_events_after(events[1].id, 100)
        .await
        .unwrap();
    assert_eq!(after.len(), events.len() - 2);
    let message = |target: &str, text: &str| NewOutbox {
        network: "libera".into(),
        target: target.into(),
        text: text.into(),
    };
    store
        .route_event(
            events[0].id,
            &[message("#ops", "a1"), message("#ops", "a2")],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = events[1..].iter().map(|e| e.id).collect();
    store
        .route_events(&ids, &[message("#dev", "b1"), message("#ops", "a3")])
        .await
        .unwrap();
    assert!(store.unrouted_events(100).await.unwrap().is_empty());
    let pending = store.pending_outbox("libera", 2).await.unwrap();
    let texts: Vec<&str> = pending.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        texts,
        vec!["a1", "a2", "b1"],
        "two per target, oldest first"
    );
    assert_eq!(store.count_unsent("libera").await.unwrap(), 4);
    assert_eq!(
        store
            .record_failure(pending[0].id, "busy", true)
            .await
            .unwrap(),
        1
    );
    store
        .set_aside(pending[0].id, "refused for good")
        .await
        .unwrap();
    store.mark_sent(pending[1].id).await.unwrap();
    assert_eq!(store.count_undeliverable().await.unwrap(), 1);
    let aside = store.undeliverable(10).await.unwrap();
    assert_eq!(aside[0].reason, "refused for good");
    assert_eq!(aside[0].text, "a1");
    assert_eq!(store.count_unsent("libera").await.unwrap(), 2);

    // Pins, learned then trusted; sealed bytes, exactly.
    let key = |fp: &str| HostKey {
        algorithm: "ssh-ed25519".into(),
        fingerprint: fp.into(),
    };
    store
        .learn_host_keys(id, "loki", &[key("SHA256:one")], "ssh:wait", Some(1))
        .await
        .unwrap();
    store
        .trust_host_key("loki", &key("SHA256:two"), "irc:libera:admin")
        .await
        .unwrap();
    let pins = store.host_keys("loki").await.unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].key.fingerprint, "SHA256:two");
    // The admin's word outranks what a run queued before it learns (a resumed stale run):
    // the pin stays, and the run's log says why.
    let kept = store
        .learn_host_keys(id, "loki", &[key("SHA256:three")], "ssh:wait", Some(1))
        .await
        .unwrap();
    assert!(!kept);
    let pins = store.host_keys("loki").await.unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].key.fingerprint, "SHA256:two");
    let sealed: Vec<u8> = (0..=255u8).collect();
    store
        .put_sealed_secrets(gated, &[("root".into(), sealed.clone())])
        .await
        .unwrap();
    store
        .put_sealed_secrets(gated, &[("root".into(), sealed.clone())])
        .await
        .unwrap();
    assert_eq!(
        store.sealed_secrets(gated).await.unwrap(),
        vec![("root".to_string(), sealed)]
    );

    // The audit log, newest first, with the person.
    store
        .audit(&AuditEntry {
            identity: "irc:libera:alice".into(),
            person: Some("alice".into()),
            network: "libera".into(),
            channel: "#ops".into(),
            command: "deploy loki".into(),
            outcome: "queued #1".into(),
        })
        .await
        .unwrap();
    let audit = store.audit_tail(10).await.unwrap();
    assert_eq!(audit[0].person.as_deref(), Some("alice"));
    assert!(audit.iter().any(|a| a.command.starts_with("pin loki")));

    // Retention: pruned, then forgotten.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = jarvis::store::now_ms();
    let pruned = store.prune(now).await.unwrap();
    assert_eq!(pruned.runs, 3, "{pruned:?}");
    assert!(store.log_tail(id, 10).await.unwrap().is_empty());
    assert_eq!(store.forget_runs(now).await.unwrap(), 3);
    assert!(store.run(id).await.unwrap().is_none());
    assert!(store.forget_audit(now + 1).await.unwrap() >= 2);
    let next = store.insert_run(&new_run("loki")).await.unwrap();
    assert!(next > gated, "numbers are never given again");
    store.close().await;
}

#[tokio::test]
async fn every_call_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    every_call(&format!("sqlite://{}", dir.path().join("j.db").display())).await;
}

#[tokio::test]
async fn every_call_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    every_call(&Postgres::fresh(&server).url).await;
}

/// Racing queues for one host: exactly one wins. On PostgreSQL each comes through a store of
/// its own, as from several processes; SQLite has one process, so one store.
async fn racing_queues(url: &str, stores_of_their_own: bool) {
    let store = Store::open(url).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = if stores_of_their_own {
            Store::open(url).await.unwrap()
        } else {
            store.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.insert_run(&new_run("race")).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::HostBusy { .. }) => {}
            Err(e) => panic!("a racing queue failed otherwise: {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.count_active().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_queues_for_one_host_let_one_through_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    racing_queues(
        &format!("sqlite://{}", dir.path().join("j.db").display()),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_queues_for_one_host_let_one_through_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    racing_queues(&Postgres::fresh(&server).url, true).await;
}

/// Writes of many runs that arrive together share a commit; one of them refused (a finish
/// of a stage its run is past) fails alone, and every other write is there afterwards.
async fn a_refused_write_fails_alone_among_many(url: &str) {
    let store = Store::open(url).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..24 {
        let id = store.insert_run(&new_run(&format!("h{i}"))).await.unwrap();
        store
            .start_stage(id, Phase::Main, 0, 1, "x:y", &[])
            .await
            .unwrap();
        ids.push(id);
    }
    let out = json!({"x": {"done": [1]}})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut tasks = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        let store = store.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            // Every fourth run is asked to finish a stage it has not reached.
            let stage = if n % 4 == 3 { 1 } else { 0 };
            let then = NextStart {
                attempt: 1,
                task: "x:y",
            };
            let finished = store
                .finish_stage(id, Phase::Main, stage, 1, &out, None, Some(then), None, &[])
                .await;
            let logged = store
                .append_log(id, Some(1), &[format!("line of {id}")])
                .await;
            (id, n % 4 == 3, finished, logged)
        }));
    }
    for task in tasks {
        let (id, wrong, finished, logged) = task.await.unwrap();
        logged.unwrap();
        let rows = store.stage_runs(id).await.unwrap();
        if wrong {
            assert!(
                matches!(finished, Err(StoreError::Refused { .. })),
                "{finished:?}"
            );
            assert_eq!(rows.len(), 1, "a refused finish changes nothing: {rows:?}");
            assert_eq!(rows[0].state, "running");
        } else {
            finished.unwrap();
            assert_eq!(rows.len(), 2, "{rows:?}");
            assert_eq!(rows[0].state, "succeeded");
            assert_eq!(rows[1].state, "running");
            assert_eq!(store.run(id).await.unwrap().unwrap().next_stage, 1);
        }
        let tail = store.log_tail(id, 5).await.unwrap();
        assert_eq!(tail, vec![(Some(1), format!("line of {id}"))]);
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_fails_alone_among_many_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_refused_write_fails_alone_among_many(&format!(
        "sqlite://{}",
        dir.path().join("j.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_fails_alone_among_many_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    a_refused_write_fails_alone_among_many(&Postgres::fresh(&server).url).await;
}

/// A webhook delivery is known by its id, its signed body's digest and GitLab's
/// Idempotency-Key: a repeat of any one is not a first delivery (migration 0012).
async fn deliveries_are_known_by_id_digest_and_key(url: &str) {
    let store = Store::open(url).await.unwrap();
    let keys = |id: &str, digest: Option<&str>, key: Option<&str>| jarvis::store::DeliveryKeys {
        id: id.into(),
        digest: digest.map(Into::into),
        idempotency_key: key.map(Into::into),
    };
    assert!(
        store
            .first_delivery_of("site", &keys("d-1", Some("aa"), None))
            .await
            .unwrap()
    );
    // The same id, the same digest under a new id, the same key: each a repeat.
    assert!(
        !store
            .first_delivery_of("site", &keys("d-1", Some("bb"), None))
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_delivery_of("site", &keys("d-2", Some("aa"), None))
            .await
            .unwrap()
    );
    assert!(
        store
            .first_delivery_of("lab", &keys("u-1", Some("cc"), Some("k")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_delivery_of("lab", &keys("u-2", Some("dd"), Some("k")))
            .await
            .unwrap()
    );
    // Deliveries without a key or a digest (rows from before 0012) never collide on them.
    assert!(store.first_delivery("lab", "u-3").await.unwrap());
    assert!(store.first_delivery("lab", "u-4").await.unwrap());
    assert!(
        store
            .first_delivery_of("lab", &keys("u-5", Some("ee"), None))
            .await
            .unwrap()
    );
    // Another hook may see the same digest.
    assert!(
        store
            .first_delivery_of("other", &keys("d-1", Some("aa"), None))
            .await
            .unwrap()
    );
    store.close().await;
}

#[tokio::test]
async fn deliveries_are_known_by_id_digest_and_key_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    deliveries_are_known_by_id_digest_and_key(&format!(
        "sqlite://{}",
        dir.path().join("j.db").display()
    ))
    .await;
}

#[tokio::test]
async fn deliveries_are_known_by_id_digest_and_key_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    deliveries_are_known_by_id_digest_and_key(&Postgres::fresh(&server).url).await;
}
