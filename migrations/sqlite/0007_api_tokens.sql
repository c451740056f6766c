-- Personal API tokens for the HTTP API and the web page (SPEC 7: web users). Only the
-- SHA-256 of a token is kept; the token itself is shown once, when it is made.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    person     TEXT    NOT NULL,
    hash       BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,            -- unix ms
    created_by TEXT    NOT NULL,            -- identity key of the admin who made it
    revoked_at INTEGER,
    revoked_by TEXT,
    last_used  INTEGER
);
CREATE INDEX api_tokens_by_person ON api_tokens (person);
