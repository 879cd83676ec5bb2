-- One row per change and record it touches (an "edit"): that change's ops on the record, each with
-- its salt and value (`EditBody`). A first sync used to store two rows per field write (`ops`,
-- `op_values`), each with its index entries, and that was two fifths of a laptop's time.
-- `live` counts the ops of the row that still count; a record loads only rows with live > 0, and
-- skips the ops listed in `ended` (each index preceded by a space): superseded or removed ops, and
-- removes and record-level resolves, whose whole effect is what they ended (0006). A change refused
-- by policy is kept and applied nowhere: its rows have live = -1, never loaded, but an erasure of
-- the record still finds its values. Filled from `ops` and `op_values` by the code step that
-- follows this file (`SQLiteStorage.moveOpsIntoEdits`); 0010 drops them.

CREATE TABLE edits (
    change INTEGER NOT NULL REFERENCES changes (n),
    record BLOB NOT NULL,
    body   BLOB NOT NULL,
    live   INTEGER NOT NULL,
    ended  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (change, record)
) WITHOUT ROWID;
CREATE INDEX edits_by_record ON edits (record, live);
