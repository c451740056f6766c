-- When a finished run's log lines, clipboards and events were pruned (retention); its summary
-- stays.
ALTER TABLE runs ADD COLUMN pruned_at INTEGER;
CREATE INDEX runs_by_finish ON runs (finished_at) WHERE pruned_at IS NULL;
-- Pruning waits until a run's events are all routed: this finds the ones still waiting.
CREATE INDEX events_unrouted_by_run ON events (run_id) WHERE routed = 0;
