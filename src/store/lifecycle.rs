//! The run life cycle of SPEC 6 in one place: the states, and the table of transitions every
//! state-changing update is guarded by. The store writes `WHERE state IN (…)` from this table
//! and checks that the row changed, so a transition the table does not allow is an error that
//! names itself, never a silent overwrite.

use RunState::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Queued,
    Running,
    WaitingApproval,
    Interrupted,
    Succeeded,
    Failed,
    Cancelled,
}

/// Every state, for tests and for SQL that lists them.
pub const ALL_STATES: [RunState; 7] = [
    Queued,
    Running,
    WaitingApproval,
    Interrupted,
    Succeeded,
    Failed,
    Cancelled,
];

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Queued => "queued",
            Running => "running",
            WaitingApproval => "waiting_approval",
            Interrupted => "interrupted",
            Succeeded => "succeeded",
            Failed => "failed",
            Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        ALL_STATES.into_iter().find(|s| s.as_str() == text)
    }

    /// Holds its host: no other run of that host may start meanwhile.
    pub fn is_active(self) -> bool {
        matches!(self, Queued | Running | WaitingApproval | Interrupted)
    }
}

/// Which list of stages a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The pipeline's stages.
    Main,
    /// The `on_failure` stages that undo what a failed run made. Named as it is stored
    /// (`on_failure`) and configured, so code, database and configuration say one word.
    OnFailure,
}

impl Phase {
    /// As stored (`phase` column) and as the configuration names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Main => "main",
            Phase::OnFailure => "on_failure",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "main" => Some(Phase::Main),
            "on_failure" => Some(Phase::OnFailure),
            _ => None,
        }
    }
}

/// One allowed move of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// What it is called in errors and logs.
    pub name: &'static str,
    pub from: &'static [RunState],
    pub to: RunState,
}

/// A stage starts (the first, or the next one).
pub const START_STAGE: Transition = Transition {
    name: "start a stage",
    from: &[Queued, Running],
    to: Running,
};
/// A stage finished; the run goes on to the next.
pub const FINISH_STAGE: Transition = Transition {
    name: "finish a stage",
    from: &[Running],
    to: Running,
};
/// The main stages failed and the undo stages begin.
pub const BEGIN_UNDO: Transition = Transition {
    name: "begin the undo",
    from: &[Running],
    to: Running,
};
/// The next stage needs an approver.
pub const WAIT_FOR_APPROVAL: Transition = Transition {
    name: "wait for approval",
    from: &[Queued, Running],
    to: WaitingApproval,
};
pub const APPROVE: Transition = Transition {
    name: "approve",
    from: &[WaitingApproval],
    to: Queued,
};
/// After a restart or a graceful stop, a run whose stage may run again waits in the queue.
pub const REQUEUE: Transition = Transition {
    name: "queue again",
    from: &[Running],
    to: Queued,
};
/// After a restart, a run whose stage may not run again waits for a person.
pub const INTERRUPT: Transition = Transition {
    name: "mark interrupted",
    from: &[Running],
    to: Interrupted,
};
pub const SUCCEED: Transition = Transition {
    name: "succeed",
    from: &[Queued, Running],
    to: Succeeded,
};
/// The run is over, failed (with its undo done, or with nothing to undo).
pub const FAIL: Transition = Transition {
    name: "fail",
    from: &[Queued, Running],
    to: Failed,
};
/// A cancel of a run no worker runs for.
pub const CANCEL_WAITING: Transition = Transition {
    name: "cancel",
    from: &[Queued, WaitingApproval, Interrupted],
    to: Cancelled,
};
/// The end of a run whose worker was stopped by a cancel.
pub const CANCEL_RUNNING: Transition = Transition {
    name: "cancel",
    from: &[Queued, Running],
    to: Cancelled,
};
pub const RESUME: Transition = Transition {
    name: "resume",
    from: &[Failed, Interrupted],
    to: Queued,
};

/// The table: every transition a run may make.
pub const TRANSITIONS: &[Transition] = &[
    START_STAGE,
    FINISH_STAGE,
    BEGIN_UNDO,
    WAIT_FOR_APPROVAL,
    APPROVE,
    REQUEUE,
    INTERRUPT,
    SUCCEED,
    FAIL,
    CANCEL_WAITING,
    CANCEL_RUNNING,
    RESUME,
];

impl Transition {
    /// The SQL condition on `state` that lets this transition happen.
    pub fn guard(&self) -> String {
        state_list(self.from)
    }

    pub fn allows(&self, from: RunState) -> bool {
        self.from.contains(&from)
    }
}

/// `state IN ('a', 'b')`.
pub fn state_list(states: &[RunState]) -> String {
    let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("state IN ({})", names.join(", "))
}

/// The states that hold a host, as SQL.
pub fn active_states_sql() -> String {
    let active: Vec<RunState> = ALL_STATES.into_iter().filter(|s| s.is_active()).collect();
    state_list(&active)
}

/// Whether a run may move from `from` to `to` at all.
pub fn allowed(from: RunState, to: RunState) -> bool {
    TRANSITIONS.iter().any(|t| t.to == to && t.allows(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_states_have_no_way_out_but_resume_of_a_failure() {
        for t in TRANSITIONS {
            assert!(!t.allows(Succeeded), "{} leaves succeeded", t.name);
            assert!(!t.allows(Cancelled), "{} leaves cancelled", t.name);
            if t.allows(Failed) {
                assert_eq!(*t, RESUME);
            }
        }
    }

    #[test]
    fn states_read_back_and_guards_name_them() {
        for s in ALL_STATES {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            CANCEL_WAITING.guard(),
            "state IN ('queued', 'waiting_approval', 'interrupted')"
        );
        assert_eq!(
            active_states_sql(),
            "state IN ('queued', 'running', 'waiting_approval', 'interrupted')"
        );
        assert!(allowed(WaitingApproval, Queued));
        assert!(!allowed(Succeeded, Queued));
    }

    /// Migrations are frozen once applied (sqlx checks their digests), so the unique index
    /// that keeps one active run per host spells the active states out; it must say what
    /// `RunState::is_active` says.
    #[test]
    fn the_one_active_run_index_lists_the_active_states() {
        let index = format!("ON runs (host)\n    WHERE {};", active_states_sql());
        for (name, migration) in [
            (
                "sqlite",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                "postgres",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
        ] {
            assert!(migration.contains(&index), "{name}: {index}");
        }
    }
}
