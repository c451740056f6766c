-- The durable state of jarvis. Every run transition is one transaction; a finished stage and
-- the clipboard it produced are committed together.

CREATE TABLE runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    host              TEXT    NOT NULL,
    kind              TEXT    NOT NULL,            -- deploy | redeploy | destroy
    pipeline          TEXT    NOT NULL,
    stages            TEXT    NOT NULL,            -- JSON: the stages, frozen at queue time
    on_failure        TEXT    NOT NULL,            -- JSON: the undo stages
    design_ref        TEXT    NOT NULL,
    requester         TEXT    NOT NULL,            -- who asked, as shown to users
    origin            TEXT    NOT NULL,            -- where to report: opaque to the engine
    state             TEXT    NOT NULL,            -- queued running waiting_approval interrupted succeeded failed cancelled
    phase             TEXT    NOT NULL DEFAULT 'main',   -- main | on_failure
    next_stage        INTEGER NOT NULL DEFAULT 0,  -- 0-based, in the current phase
    attempt           INTEGER NOT NULL DEFAULT 0,  -- executions of next_stage so far
    approved_stage    INTEGER,                     -- the stage an approver released
    approved_by       TEXT,
    initial_clipboard TEXT    NOT NULL,            -- JSON
    clipboard         TEXT    NOT NULL,            -- JSON: after the last finished main stage
    undo_clipboard    TEXT,                        -- JSON: the on_failure phase's own copy
    failed_stage      INTEGER,                     -- 0-based main stage that failed
    error             TEXT,                        -- the one-line reason of the failure
    progress          TEXT,
    retry_of          INTEGER,
    created_at        INTEGER NOT NULL,            -- unix ms
    started_at        INTEGER,
    stage_started_at  INTEGER,
    finished_at       INTEGER
);

-- At most one active run per host, enforced where no race can slip past it.
CREATE UNIQUE INDEX runs_one_active_per_host ON runs (host)
    WHERE state IN ('queued', 'running', 'waiting_approval', 'interrupted');
CREATE INDEX runs_by_state ON runs (state, id);
CREATE INDEX runs_by_host ON runs (host, id);

CREATE TABLE stage_runs (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    phase       TEXT    NOT NULL,
    stage       INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    task        TEXT    NOT NULL,
    state       TEXT    NOT NULL,   -- running succeeded failed tempfailed cancelled interrupted
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    exit_code   INTEGER,
    error       TEXT,
    clipboard   TEXT,               -- JSON: the clipboard this stage produced
    PRIMARY KEY (run_id, phase, stage, attempt)
);

CREATE TABLE log_lines (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  INTEGER NOT NULL,
    stage   INTEGER,                -- 1-based, as users count
    at      INTEGER NOT NULL,
    line    TEXT    NOT NULL        -- masked before it is stored
);
CREATE INDEX log_lines_by_run ON log_lines (run_id, id);

-- What the engine tells the world. The chat side turns each into outbox messages.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    body    TEXT    NOT NULL,       -- JSON
    routed  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_unrouted ON events (id) WHERE routed = 0;

-- Notifications: stored before they are sent, marked sent once the network accepted them.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   INTEGER,
    network    TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    sent_at    INTEGER
);
CREATE INDEX outbox_pending ON outbox (network, id) WHERE sent_at IS NULL;

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    identity TEXT    NOT NULL,
    network  TEXT    NOT NULL,
    channel  TEXT    NOT NULL,
    command  TEXT    NOT NULL,
    outcome  TEXT    NOT NULL
);
