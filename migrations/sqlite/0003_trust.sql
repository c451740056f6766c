-- Host keys pinned per host: learned by a stage the configuration lets learn (a pipeline
-- that creates the host), or trusted by an admin. Every other SSH connection must match.
CREATE TABLE host_keys (
    host        TEXT    NOT NULL,
    algorithm   TEXT    NOT NULL,   -- ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, ...
    fingerprint TEXT    NOT NULL,   -- SHA256:..., as ssh-keygen -lf prints it
    run_id      INTEGER,            -- the run that learned it; NULL when an admin trusted it
    pinned_by   TEXT    NOT NULL,   -- the stage that learned it, or the admin's identity
    pinned_at   INTEGER NOT NULL,
    PRIMARY KEY (host, algorithm)
);

-- Secrets workers handed back on their secret channel, sealed (never in clear). They go to
-- later stages of the same run only, and are erased when the run ends.
CREATE TABLE run_secrets (
    run_id INTEGER NOT NULL,
    name   TEXT    NOT NULL,
    sealed BLOB    NOT NULL,
    PRIMARY KEY (run_id, name)
);
