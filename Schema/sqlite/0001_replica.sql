-- A replica: the signed change log as received, the erasable values beside it, and the
-- materialised state the merge derives from them. Everything but `changes`, `op_values`,
-- `roster` and `meta` can be rebuilt from those four.

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

-- Every applied change, byte for byte as its author signed it.
CREATE TABLE changes (
    id           BLOB PRIMARY KEY,           -- SHA-256 of the signed bytes
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
    UNIQUE (device, seq)
) WITHOUT ROWID;
CREATE INDEX changes_by_hlc ON changes (hlc);
CREATE INDEX changes_outbox ON changes (acked, device, seq);

-- Values and salts beside the changes. Erasure deletes rows here; commitments stay signed.
CREATE TABLE op_values (
    change_id BLOB NOT NULL REFERENCES changes (id),
    idx       INTEGER NOT NULL,
    salt      BLOB NOT NULL,
    value     BLOB NOT NULL,                 -- canonical JSON
    PRIMARY KEY (change_id, idx)
) WITHOUT ROWID;

-- Changes waiting for an earlier seq of their device.
CREATE TABLE pending (
    device   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    id       BLOB NOT NULL,
    envelope BLOB NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;

-- Applied ops by record: what `RecordOps` is rebuilt from when a record changes.
CREATE TABLE ops (
    change_id BLOB NOT NULL REFERENCES changes (id),
    idx       INTEGER NOT NULL,
    record    BLOB NOT NULL,
    author    TEXT NOT NULL,
    hlc       INTEGER NOT NULL,
    wall      INTEGER NOT NULL,
    op        BLOB NOT NULL,                 -- the op in the change encoding
    PRIMARY KEY (change_id, idx)
) WITHOUT ROWID;
CREATE INDEX ops_by_record ON ops (record);

-- The materialised records, as every replica with the same changes shows them.
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
CREATE INDEX records_listing ON records (type, deleted, kind);
