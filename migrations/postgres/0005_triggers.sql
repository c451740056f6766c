-- Webhooks and schedules (sqlite's 0009). A webhook delivery id seen before queues nothing
-- again, also after a restart. A schedule's next firing is kept, so that a restart neither
-- loses nor repeats one: a process claims the firing at `next_at` with one conditional
-- UPDATE (`WHERE next_at = <the instant it saw>`), which only one process can win.
CREATE TABLE hook_deliveries (
    hook        TEXT   NOT NULL,
    delivery    TEXT   NOT NULL,
    received_at BIGINT NOT NULL,           -- unix ms
    PRIMARY KEY (hook, delivery)
);
CREATE TABLE schedules (
    name         TEXT   PRIMARY KEY,
    spec         TEXT   NOT NULL,          -- the cron and time zone next_at was computed from
    next_at      BIGINT NOT NULL,          -- unix ms of the next firing
    last_at      BIGINT,                   -- unix ms of the last firing claimed
    last_outcome TEXT
);
