-- A rollout may run a named action on each host of its group (`run ACTION on group:G`):
-- its kind is then 'action' and this names the action.
ALTER TABLE rollouts ADD COLUMN action TEXT;
