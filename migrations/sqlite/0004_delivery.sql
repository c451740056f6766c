-- Delivery that keeps flowing: a notification the network refuses for good, or that failed
-- too often, is set aside with its reason, and the others go on.

ALTER TABLE outbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;   -- tries the network failed
ALTER TABLE outbox ADD COLUMN last_error TEXT;                       -- why the last try failed
ALTER TABLE outbox ADD COLUMN undeliverable_at INTEGER;              -- unix ms: set aside

DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (network, target, id)
    WHERE sent_at IS NULL AND undeliverable_at IS NULL;
CREATE INDEX outbox_undeliverable ON outbox (undeliverable_at, id)
    WHERE undeliverable_at IS NOT NULL;
