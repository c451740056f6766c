//! Starting again after any end of the previous process, `kill -9` and power loss included:
//! worker processes it left behind are killed first, then every run it had under way is
//! either queued again (its stage was idempotent, or no stage was in flight) or marked
//! `interrupted` and announced, until someone says `resume` or `cancel`.
//!
//! A running stage is known from the store (its attempt is written before the worker is
//! spawned). Its process group is known from a marker file written right after the spawn:
//! no fsync is needed, since a power loss takes the workers with it.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::events::{EventBody, kind};
use super::{Engine, EngineError, scratch};
use crate::store::{Phase, RunState, lifecycle};

/// Records a running worker's process group in its marker.
pub fn write_marker(path: &Path, pgid: i32) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(path, pgid.to_string()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot record a worker's process group");
    }
}

pub fn remove_marker(path: &Path) {
    let _ = std::fs::remove_file(path);
}

pub(super) async fn recover(engine: &Engine) -> Result<(), EngineError> {
    // The scratch folder, and the data folder where an older jarvis kept the same.
    let config = &engine.inner.config;
    let roots = [config.scratch_dir.clone(), config.data_dir.clone()];
    let killed = kill_leftovers(&roots);
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed worker processes left behind by a previous jarvis"
        );
    }
    for root in &roots {
        let _ = std::fs::remove_dir_all(scratch::work_root(root));
    }

    let store = engine.store();
    // Runs this node had claimed and not started: anyone's again.
    store.release_queued().await?;
    let sole = engine.inner.config.sole;
    let expired = store.expired_runs().await?;
    for run in store.runs_in_state(RunState::Running).await? {
        // On a shared database a run another living node holds is its business; runs of
        // this node's last process, of no node, or of a node whose lease ran out are ours.
        if !sole
            && run
                .lease_owner
                .as_deref()
                .is_some_and(|owner| owner != store.node())
            && !expired.contains(&run.id)
        {
            continue;
        }
        take_over(engine, run.id, sole).await?;
    }
    Ok(())
}

/// Recovers one run left running by a process that is gone (this node's last one, or
/// another node whose lease ran out): the stage it had in flight is ended as interrupted;
/// then the run is queued again (that stage is idempotent, or none was in flight) or marked
/// `interrupted` and announced. False when another node took it first.
pub(super) async fn take_over(engine: &Engine, id: i64, force: bool) -> Result<bool, EngineError> {
    let store = engine.store();
    if !store.seize(id, engine.inner.config.lease, force).await? {
        return Ok(false);
    }
    let Some(run) = store.run(id).await? else {
        return Ok(false);
    };
    if run.state != RunState::Running {
        return Ok(false);
    }
    {
        let stages = run.phase_stages();
        let in_flight = store
            .stage_runs(run.id)
            .await?
            .into_iter()
            .find(|s| s.state == "running");
        if let Some(s) = &in_flight {
            let phase = if s.phase == "on_failure" {
                Phase::OnFailure
            } else {
                Phase::Main
            };
            store
                .end_attempt(
                    run.id,
                    phase,
                    s.stage,
                    s.attempt,
                    "interrupted",
                    None,
                    "jarvis stopped",
                )
                .await?;
        }
        // Someone asked its dead node to cancel it: it ends as they asked, not re-run.
        if let Some(by) = store.cancel_request(run.id).await? {
            let mut body = EventBody::for_run(&run)
                .duration_ms(super::run_duration(&run))
                .text(format!("cancelled by {by}"));
            if let Some(stage) = stages.get(run.next_stage) {
                body = body.stage(run.next_stage, &stage.task);
            }
            store
                .finish_run(
                    run.id,
                    &lifecycle::CANCEL_RUNNING,
                    None,
                    &[body.into_event(kind::CANCELLED)],
                )
                .await?;
            engine.after_events();
            return Ok(true);
        }
        let stage = stages.get(run.next_stage);
        match (in_flight, stage) {
            (Some(_), Some(stage)) if !stage.idempotent => {
                let body = EventBody::for_run(&run).stage(run.next_stage, &stage.task);
                store
                    .set_state(
                        run.id,
                        &lifecycle::INTERRUPT,
                        &[body.into_event(kind::INTERRUPTED)],
                    )
                    .await?;
                tracing::warn!(
                    run = run.id,
                    stage = run.next_stage + 1,
                    "run interrupted by a restart"
                );
            }
            (Some(_), Some(stage)) => {
                let body = EventBody::for_run(&run).stage(run.next_stage, &stage.task);
                store
                    .set_state(
                        run.id,
                        &lifecycle::REQUEUE,
                        &[body.into_event(kind::RERUN_AFTER_RESTART)],
                    )
                    .await?;
                tracing::info!(
                    run = run.id,
                    stage = run.next_stage + 1,
                    "re-running an idempotent stage after a restart"
                );
            }
            _ => store.set_state(run.id, &lifecycle::REQUEUE, &[]).await?,
        }
    }
    engine.after_events();
    Ok(true)
}

/// Kills every process recorded in a marker's process group, and every process whose
/// working folder is under ours (a worker's child that left the group still has it).
/// Returns how many were killed.
fn kill_leftovers(roots: &[PathBuf]) -> usize {
    let mut groups = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(scratch::running_dir(root)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path())
                && let Ok(pgid) = text.trim().parse::<i32>()
                && pgid > 1
            {
                groups.push(pgid);
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let work: Vec<PathBuf> = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(scratch::work_root(r)).ok())
        .collect();
    let mut killed = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id() as i32;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let in_group = process_group(pid).is_some_and(|g| groups.contains(&g) && is_worker(pid));
        let in_work = !work.is_empty()
            && std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| work.iter().any(|w| cwd.starts_with(w)));
        if (in_group || in_work) && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// The process group of `pid`, from /proc/PID/stat (the field after the state).
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(2)?.parse().ok()
}

/// Whether a process was started as a jarvis worker (its environment says so), so that a
/// reused process-group id never gets a stranger killed.
fn is_worker(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|&b| b == 0)
                .any(|v| v.starts_with(b"JARVIS_RUN_ID="))
        })
        .unwrap_or(false)
}
