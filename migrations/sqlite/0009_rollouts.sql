-- Environments and rollouts (issue 18). A run records the environment it ran in and the
-- digest of its design's content, so a promotion can ask whether the same content succeeded
-- on the previous environment; a child run of a rollout records its rollout, in the same
-- insert that queues it, so a crash can never leave a child that its rollout does not know.
ALTER TABLE runs ADD COLUMN environment TEXT;
ALTER TABLE runs ADD COLUMN design_digest TEXT;
ALTER TABLE runs ADD COLUMN rollout_id INTEGER;
CREATE INDEX runs_by_environment ON runs (environment, design_digest, id);
CREATE INDEX runs_by_rollout ON runs (rollout_id, host, id) WHERE rollout_id IS NOT NULL;

-- A rollout over a group: its hosts in order, batches of max_parallel, stopped once
-- max_failures hosts failed. Its progress is read from its child runs, never kept in memory.
CREATE TABLE rollouts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    grp          TEXT    NOT NULL,
    kind         TEXT    NOT NULL,             -- deploy | redeploy | destroy
    environment  TEXT,
    max_parallel INTEGER NOT NULL,
    max_failures INTEGER NOT NULL,
    state        TEXT    NOT NULL,             -- running | stopped | cancelled | succeeded
    reason       TEXT,                         -- why it stopped: the host and its failure
    requester    TEXT    NOT NULL,
    person       TEXT,
    origin       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,             -- unix ms
    finished_at  INTEGER
);
CREATE INDEX rollouts_by_state ON rollouts (state, id);
-- One open rollout per group, also between racing commands (and, later, processes).
CREATE UNIQUE INDEX rollouts_one_open_per_group ON rollouts (grp)
    WHERE state IN ('running', 'stopped');

CREATE TABLE rollout_hosts (
    rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    host       TEXT    NOT NULL,
    design_ref TEXT    NOT NULL,
    -- Runs of this host in the rollout up to this id are past (a resume retries the host).
    past_runs  INTEGER NOT NULL DEFAULT 0,
    -- Why the host could not be queued (design refused, promotion refused, host busy).
    error      TEXT,
    PRIMARY KEY (rollout_id, position)
);
