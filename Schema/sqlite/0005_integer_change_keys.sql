-- Ops and values are keyed by a local integer change number instead of the 32-byte change id,
-- and an op row no longer repeats its change's author and clocks (a join gives them). A change id
-- is a hash, so every op and value insert used to land at a random place in two B-trees; now they
-- append in arrival order, and an op row is about half as wide. `n` is local: it never leaves the
-- replica and means nothing but arrival order here.

CREATE TABLE changes_by_n (
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
    seed         BLOB,                       -- see 0003
    envelope     BLOB,                       -- see 0004
    UNIQUE (device, seq)
);
INSERT INTO changes_by_n (id, device, seq, hlc, wall, received_at, signed, signature, refusal_code, refusal, clock_skew, acked, seed, envelope)
    SELECT id, device, seq, hlc, wall, received_at, signed, signature, refusal_code, refusal, clock_skew, acked, seed, envelope
    FROM changes ORDER BY received_at, device, seq;

CREATE TABLE op_values_by_n (
    change INTEGER NOT NULL REFERENCES changes_by_n (n),
    idx    INTEGER NOT NULL,
    salt   BLOB NOT NULL,
    value  BLOB NOT NULL,                    -- canonical JSON
    PRIMARY KEY (change, idx)
) WITHOUT ROWID;
INSERT INTO op_values_by_n (change, idx, salt, value)
    SELECT c.n, v.idx, v.salt, v.value FROM op_values v JOIN changes_by_n c ON c.id = v.change_id;

CREATE TABLE ops_by_n (
    change INTEGER NOT NULL REFERENCES changes_by_n (n),
    idx    INTEGER NOT NULL,
    record BLOB NOT NULL,
    op     BLOB NOT NULL,                    -- the op in the change encoding
    PRIMARY KEY (change, idx)
) WITHOUT ROWID;
INSERT INTO ops_by_n (change, idx, record, op)
    SELECT c.n, o.idx, o.record, o.op FROM ops o JOIN changes_by_n c ON c.id = o.change_id;

DROP TABLE ops;
DROP TABLE op_values;
DROP TABLE changes;
ALTER TABLE changes_by_n RENAME TO changes;
ALTER TABLE op_values_by_n RENAME TO op_values;
ALTER TABLE ops_by_n RENAME TO ops;
CREATE INDEX changes_by_hlc ON changes (hlc);
CREATE INDEX changes_outbox ON changes (acked, device, seq);
CREATE INDEX ops_by_record ON ops (record);

-- Every sync counts open conflicts before and after: without this, a scan of every record.
CREATE INDEX records_conflicted ON records (id) WHERE conflicted = 1;
