-- A rollout may run a named action on each host of its group (`run ACTION on group:G`):
-- its kind is then 'action' and `action` names it. A rollout a webhook or a schedule started
-- keeps that trigger (JSON: by, repository, ref, commit), so that each child run records it.
ALTER TABLE rollouts ADD COLUMN action TEXT;
ALTER TABLE rollouts ADD COLUMN trigger_json TEXT;
