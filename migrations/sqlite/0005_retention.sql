-- When a finished run's log lines, clipboards and events were pruned (retention); its summary
-- stays.
ALTER TABLE runs ADD COLUMN pruned_at INTEGER;
CREATE INDEX runs_by_finish ON runs (finished_at) WHERE pruned_at IS NULL;
