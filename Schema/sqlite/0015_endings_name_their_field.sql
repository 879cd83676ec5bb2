-- An ending names the field of the op that ended (RecordMerge.swift: endings never cross
-- fields), so that an op arriving after a hostile one that named it from another field is still
-- stored as live. Rows from before this migration were written by honest devices only, whose
-- refs always name ops of the same field: they keep '*', which matches any field.
CREATE TABLE ended_by_field (
    record BLOB NOT NULL,
    change BLOB NOT NULL,                    -- the ended op's change id (it may not have arrived)
    idx    INTEGER NOT NULL,
    how    INTEGER NOT NULL,
    field  TEXT NOT NULL,                    -- the field of the op that ended it; '*' before 0015
    PRIMARY KEY (record, change, idx, how, field)
) WITHOUT ROWID;
INSERT INTO ended_by_field (record, change, idx, how, field) SELECT record, change, idx, how, '*' FROM ended;
DROP TABLE ended;
ALTER TABLE ended_by_field RENAME TO ended;
