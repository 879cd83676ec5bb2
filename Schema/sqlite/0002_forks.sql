-- Forks: a device whose key signed two different changes at one seq (a copy of its replica,
-- restored or cloned, wrote as it; a real fork when both versions left their laptops). The server's chain is the one every replica keeps; `refused` is the other version
-- (the one a replica gave up, or the server refused). At most one row per device and seq.
CREATE TABLE forks (
    device  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    refused BLOB NOT NULL,
    seen_at INTEGER NOT NULL,   -- Unix ms
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
