//! The run life cycle as a property: random interleavings of queue, start, finish, fail,
//! cancel, approve, resume and restart against the real store never move a run out of a
//! final state, never finish a stage twice, and every change obeys the transition table; on
//! SQLite and on PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use jarvis::engine::pipeline::{RunKind, Stage, StageConfig};
use jarvis::store::lifecycle::{self, Transition};
use jarvis::store::{NewRun, NextStart, Phase, Run, RunState, Store, StoreError};
use jarvis_testbed::Server;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const STAGES: usize = 3;

fn stages(n: usize) -> Vec<Stage> {
    let config: StageConfig = serde_saphyr::from_str("task: 'x:y'").unwrap();
    (0..n)
        .map(|_| Stage::from_config(&config, Duration::from_secs(60)))
        .collect()
}

fn new_run() -> NewRun {
    NewRun {
        host: "h".into(),
        kind: RunKind::Deploy,
        pipeline: "p".into(),
        stages: stages(STAGES),
        on_failure: stages(1),
        design_ref: "h".into(),
        requester: "console:test".into(),
        origin: String::new(),
        clipboard: Default::default(),
        retry_of: None,
        placement: Default::default(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Start(usize),
    Finish(usize),
    /// Finish a stage and start the next in one commit, as the engine does.
    FinishThenStart(usize),
    Fail {
        undo: bool,
    },
    End(u8),
    Wait,
    Approve,
    Resume,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..STAGES + 1).prop_map(Op::Start),
        (0..STAGES + 1).prop_map(Op::Finish),
        (0..STAGES + 1).prop_map(Op::FinishThenStart),
        any::<bool>().prop_map(|undo| Op::Fail { undo }),
        (0u8..4).prop_map(Op::End),
        Just(Op::Wait),
        Just(Op::Approve),
        Just(Op::Resume),
        Just(Op::Restart),
    ]
}

/// What the store was asked, and by which transition of the table.
async fn apply(store: &Store, run: &Run, op: &Op) -> (Option<Transition>, Result<(), StoreError>) {
    let id = run.id;
    match op {
        Op::Start(stage) => (
            Some(lifecycle::START_STAGE),
            store
                .start_stage(id, run.phase, *stage, run.attempt + 1, "x:y", &[])
                .await,
        ),
        Op::Finish(stage) => (
            Some(lifecycle::FINISH_STAGE),
            store
                .finish_stage(
                    id,
                    run.phase,
                    *stage,
                    run.attempt,
                    &Default::default(),
                    None,
                    None,
                    None,
                    &[],
                )
                .await,
        ),
        Op::FinishThenStart(stage) => (
            Some(lifecycle::FINISH_STAGE),
            store
                .finish_stage(
                    id,
                    run.phase,
                    *stage,
                    run.attempt,
                    &Default::default(),
                    None,
                    Some(NextStart {
                        attempt: 1,
                        task: "x:y",
                    }),
                    None,
                    &[],
                )
                .await,
        ),
        Op::Fail { undo } => (
            Some(if *undo {
                lifecycle::BEGIN_UNDO
            } else {
                lifecycle::FAIL
            }),
            store.fail_run(id, run.next_stage, "boom", *undo, &[]).await,
        ),
        Op::End(which) => {
            let t = match which {
                0 => lifecycle::SUCCEED,
                1 => lifecycle::FAIL,
                2 => lifecycle::CANCEL_WAITING,
                _ => lifecycle::CANCEL_RUNNING,
            };
            (Some(t), store.finish_run(id, &t, None, &[]).await)
        }
        Op::Wait => (
            Some(lifecycle::WAIT_FOR_APPROVAL),
            store
                .set_state(id, &lifecycle::WAIT_FOR_APPROVAL, &[])
                .await,
        ),
        Op::Approve => (
            Some(lifecycle::APPROVE),
            store.approve(id, run.next_stage, "approver").await,
        ),
        Op::Resume => (Some(lifecycle::RESUME), store.resume(run).await),
        Op::Restart => {
            // What a start after a crash does with a run that was running.
            let t = if run.next_stage.is_multiple_of(2) {
                lifecycle::REQUEUE
            } else {
                lifecycle::INTERRUPT
            };
            if run.state == RunState::Running {
                (Some(t), store.set_state(id, &t, &[]).await)
            } else {
                (None, Ok(()))
            }
        }
    }
}

fn is_final(run: &Run) -> bool {
    matches!(run.state, RunState::Succeeded | RunState::Cancelled)
        || (run.state == RunState::Failed && run.phase == Phase::OnFailure)
}

/// Plays `ops` on a fresh run of its own host in the database at `url`.
fn check(ops: &[Op], url: &str, host: &str) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(async {
        let store = Store::open(url).await.unwrap();
        let id = store
            .insert_run(&NewRun {
                host: host.into(),
                ..new_run()
            })
            .await
            .unwrap();
        let mut finished: HashSet<(Phase, usize)> = HashSet::new();
        let mut was_final = false;
        for op in ops {
            let before = store.run(id).await.unwrap().unwrap();
            let (t, result) = apply(&store, &before, op).await;
            let after = store.run(id).await.unwrap().unwrap();
            if was_final {
                prop_assert_eq!(
                    after.state,
                    before.state,
                    "a final state was left by {:?}",
                    op
                );
                prop_assert!(
                    result.is_err() || t.is_none(),
                    "{:?} succeeded on a final run",
                    op
                );
            }
            match (&result, t) {
                (Ok(()), Some(t)) => {
                    prop_assert!(
                        t.allows(before.state),
                        "{:?}: {} from {:?}",
                        op,
                        t.name,
                        before.state
                    );
                    prop_assert_eq!(after.state, t.to, "{:?} ended elsewhere", op);
                    if let Op::Finish(stage) | Op::FinishThenStart(stage) = op {
                        prop_assert!(
                            finished.insert((before.phase, *stage)),
                            "stage {} of {:?} finished twice",
                            stage,
                            before.phase
                        );
                    }
                }
                (Err(StoreError::Refused { .. }), _) => {
                    prop_assert_eq!(
                        after.state,
                        before.state,
                        "a refused {:?} changed the run",
                        op
                    );
                    prop_assert_eq!(after.next_stage, before.next_stage);
                }
                (Err(e), _) => prop_assert!(false, "{:?}: unexpected error {}", op, e),
                (Ok(()), None) => {}
            }
            was_final = was_final || is_final(&after);
        }
        store.close().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_interleaving_obeys_the_table(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("j.db").display());
        check(&ops, &url, "h")?;
    }
}

/// The same property on PostgreSQL: one database, a host per case.
#[test]
fn every_interleaving_obeys_the_table_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    let url = server.get("DATABASE_URL").to_string();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let outcome = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check(&ops, &url, &format!("h{n}"))
    });
    if let Err(e) = outcome {
        panic!("{e}\n{}", server.logs());
    }
}
