-- Several jarvis processes on one database (PostgreSQL; SQLite has one process, and the same
-- columns). A runner holds a run while it drives it: `lease_owner` is its node name, renewed
-- until `lease_until` (unix ms). A run whose lease has run out is taken over by another
-- runner as a restart would. `cancel_by` asks the runner holding a run to cancel it.
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
ALTER TABLE runs ADD COLUMN cancel_by TEXT;
CREATE INDEX runs_by_lease ON runs (lease_owner, lease_until);

-- The processes that share the database, for `status`, the web page and the operator.
CREATE TABLE nodes (
    name       TEXT    PRIMARY KEY,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,            -- unix ms
    seen_at    INTEGER NOT NULL             -- unix ms, renewed with the leases
);
