-- What only the sync server keeps, beside the replica tables it shares with every laptop.

-- One-time enrolment invitations; only a hash of the token is kept.
CREATE TABLE invites (
    token_hash BLOB PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('field', 'press', 'coordinator')),
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    used_by    TEXT
) WITHOUT ROWID;

-- Signature nonces seen, until their signature expires: the replay cache. In the database, so
-- several server processes share it.
CREATE TABLE nonces (
    device     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE device_activity (
    device    TEXT PRIMARY KEY,
    last_sync INTEGER NOT NULL,
    backlog   INTEGER NOT NULL DEFAULT 0   -- changes it still lacked after its last exchange
) WITHOUT ROWID;
