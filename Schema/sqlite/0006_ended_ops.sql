-- A write superseded or a set tag removed never shows again (RecordMerge.swift), so loading a
-- record reads only the ops that still count (`live`) instead of its whole history: a note
-- edited every day for months used to load every edit on each new one. Removes and
-- record-level resolves are not live either: their whole effect is what they ended.
-- `ended` lists every op ref an applied op ended, whether or not the ended op has arrived, so
-- one that arrives after the op that ended it is stored as ended. `how` is `Ending`: 0 for
-- superseded (writes, tombstones), 1 for removed (set tags). An existing replica's rows are
-- filled in by the code step that follows this file (`SQLiteStorage.markEndedOps`).

ALTER TABLE ops ADD COLUMN live INTEGER NOT NULL DEFAULT 1;
DROP INDEX ops_by_record;
CREATE INDEX ops_by_record ON ops (record, live);

CREATE TABLE ended (
    record BLOB NOT NULL,
    change BLOB NOT NULL,                    -- the ended op's change id (it may not have arrived)
    idx    INTEGER NOT NULL,
    how    INTEGER NOT NULL,
    PRIMARY KEY (record, change, idx, how)
) WITHOUT ROWID;
