-- A webhook delivery is also known by what cannot be changed without the secret: the
-- digest of its signature and body (a captured delivery replayed with a new, unsigned
-- delivery id is the same delivery), and by GitLab's Idempotency-Key, which GitLab keeps
-- across retries that carry a new X-Gitlab-Event-UUID. Nullable columns without a default
-- (no table rewrite) and new indexes on a table that holds at most 30 days of deliveries;
-- NULLs never conflict in a unique index, so existing rows stay valid.
ALTER TABLE hook_deliveries ADD COLUMN digest TEXT;
ALTER TABLE hook_deliveries ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX hook_deliveries_digest ON hook_deliveries (hook, digest);
CREATE UNIQUE INDEX hook_deliveries_idempotency ON hook_deliveries (hook, idempotency_key);
