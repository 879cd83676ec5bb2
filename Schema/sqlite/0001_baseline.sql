-- The replica's schema: the signed change log as received, the erasable values beside it, and
-- what the merge derives from them. One baseline, squashed from the fifteen migrations it grew
-- through (no replica existed outside this repository): later changes are new files here,
-- SQL only (a migration never depends on the application's types).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE roster (
    device            TEXT PRIMARY KEY,      -- base32 device id
    public_key        BLOB NOT NULL,
    name              TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('field', 'press', 'coordinator')),
    enrolled_at       INTEGER NOT NULL,      -- Unix ms
    revoked_after_seq INTEGER
) WITHOUT ROWID;

-- Changes held back until the gap before them in their device's chain is filled.
CREATE TABLE pending (
    device   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    id       BLOB NOT NULL,
    envelope BLOB NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;

-- Each record as the merge shows it: its listing JSON and the columns lists filter on.
CREATE TABLE records (
    id           TEXT PRIMARY KEY,           -- UUID text
    type         TEXT NOT NULL,
    kind         TEXT,
    deleted      INTEGER NOT NULL,
    conflicted   INTEGER NOT NULL,
    erased       INTEGER NOT NULL,
    last_changed INTEGER NOT NULL,           -- HLC
    ref          TEXT,
    status       TEXT,
    team         TEXT,
    review       TEXT,
    json         TEXT NOT NULL               -- the listing form (canonical JSON)
) WITHOUT ROWID;

-- Changes the server refused, as it said, until one is accepted again.
CREATE TABLE refusals (
    change_id BLOB PRIMARY KEY,
    code      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        INTEGER NOT NULL
) WITHOUT ROWID;

-- Every applied change, byte for byte as its author signed it.
CREATE TABLE changes (
    n            INTEGER PRIMARY KEY,
    id           BLOB NOT NULL UNIQUE,       -- SHA-256 of the signed bytes
    device       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    hlc          INTEGER NOT NULL,
    wall         INTEGER NOT NULL,           -- the author's wall clock, Unix ms
    received_at  INTEGER NOT NULL,           -- this replica's wall clock, Unix ms
    signed       BLOB NOT NULL,
    signature    BLOB NOT NULL,
    refusal_code TEXT,                       -- policy refusal: kept, applied nowhere
    refusal      TEXT,
    clock_skew   INTEGER NOT NULL DEFAULT 0,
    acked        INTEGER NOT NULL DEFAULT 0, -- own changes: acknowledged by the server
    seed         BLOB,                       -- derives each op value's salt; dropped once a value is erased
    envelope     BLOB,                       -- the server's copy of the change as sent (values and salts)
    local        INTEGER NOT NULL DEFAULT 0, -- this laptop's own change: kept out of changes_by_hlc
    UNIQUE (device, seq)
);

-- Each other device's highest seq (this laptop's own head is read from changes).
CREATE TABLE heads (
    device TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
) WITHOUT ROWID;

-- A change's ops on one record and their values (EditBody), keyed by the change number and
-- the record's first op index; `live` counts the ops that still count, `ended` lists the rest.
CREATE TABLE edits (
    id     INTEGER PRIMARY KEY,
    change INTEGER NOT NULL REFERENCES changes (n),
    record BLOB NOT NULL,
    body   BLOB NOT NULL,
    live   INTEGER NOT NULL,
    ended  TEXT NOT NULL DEFAULT ''
);

-- What each op superseded or removed, in the ending op's field: a late op is stored ended.
CREATE TABLE ended (
    record BLOB NOT NULL,
    change BLOB NOT NULL,                    -- the ended op's change id (it may not have arrived)
    idx    INTEGER NOT NULL,
    how    INTEGER NOT NULL,
    field  TEXT NOT NULL,                    -- the field of the op that ended it
    PRIMARY KEY (record, change, idx, how, field)
) WITHOUT ROWID;

CREATE INDEX records_conflicted ON records (id) WHERE conflicted = 1;

CREATE INDEX edits_by_record ON edits (record, live);

CREATE INDEX changes_by_hlc ON changes (hlc) WHERE local = 0;

CREATE TRIGGER roster_stamp_insert AFTER INSERT ON roster BEGIN
    UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'roster_version';
END;

CREATE TRIGGER roster_stamp_update AFTER UPDATE ON roster BEGIN
    UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'roster_version';
END;

CREATE TRIGGER roster_stamp_delete AFTER DELETE ON roster BEGIN
    UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'roster_version';
END;

CREATE TRIGGER received_changes_move_heads AFTER INSERT ON changes WHEN NEW.local = 0 BEGIN
    INSERT INTO heads (device, seq) VALUES (NEW.device, NEW.seq)
        ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq);
    INSERT INTO meta (key, value) VALUES ('hlc_received', NEW.hlc)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value
        WHERE CASE WHEN (NEW.hlc < 0) = (CAST(value AS INTEGER) < 0) THEN NEW.hlc > CAST(value AS INTEGER) ELSE NEW.hlc < 0 END;
END;

-- Changes whenever the roster does (the triggers above), so a cached roster knows it is stale.
INSERT INTO meta (key, value) VALUES ('roster_version', lower(hex(randomblob(16))));
