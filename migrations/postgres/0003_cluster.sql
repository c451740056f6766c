-- Several jarvis processes on one database. A runner holds a run while it drives it:
-- `lease_owner` is its node name, renewed until `lease_until` (unix ms). A run whose lease
-- has run out is taken over by another runner as a restart would. `cancel_by` asks the
-- runner holding a run to cancel it. Safe online: nullable columns and a new table only.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS lease_owner TEXT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS lease_until BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS cancel_by TEXT;
CREATE INDEX IF NOT EXISTS runs_by_lease ON runs (lease_owner, lease_until);

CREATE TABLE IF NOT EXISTS nodes (
    name       TEXT   PRIMARY KEY,
    pid        BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
