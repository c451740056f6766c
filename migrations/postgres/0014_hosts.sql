-- The inventory: one record per host jarvis made (SPEC 6a). Written only by the runs that
-- create, change or remove the host, in the transaction of the stage or run end that
-- establishes what it says. Commands about an existing host act on this record, never on
-- a design read again.
CREATE TABLE hosts (
    name          TEXT    PRIMARY KEY,
    state         TEXT    NOT NULL,            -- present | destroying | destroyed
    provider      TEXT,                        -- the design's instance.provider as deployed
    resources     TEXT    NOT NULL,            -- JSON: module -> the section its worker left (id, region, …)
    addresses     TEXT    NOT NULL,            -- JSON: array of addresses
    environment   TEXT,
    design_ref    TEXT,
    design_digest TEXT,
    design        TEXT,                        -- JSON: the design content as deployed
    created_by    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,            -- unix ms
    created_run   BIGINT,
    updated_at    BIGINT NOT NULL,
    last_run      BIGINT,
    last_good_run BIGINT,
    reconstructed BIGINT  NOT NULL DEFAULT 0   -- 1: rebuilt from stored runs on an upgrade
);
CREATE INDEX hosts_by_environment ON hosts (environment, name);
