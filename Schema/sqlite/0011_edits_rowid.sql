-- `edits` becomes a rowid table. As a WITHOUT ROWID table each of its rows (a change's ops on one
-- record, 800 bytes for a ten-field note) was also copied whole into the tree's interior pages,
-- four to a page: appending one row rewrote about three pages (BENCHMARKS.md, B4). Its key is
-- now one integer, `change << 16 | the first op index of the record in that change` (a change
-- holds at most `ChangeCodec.maxOps`, 1,000, ops), so the rows of a change are one range of keys
-- and interior pages hold only integers. The rows a replica already holds are numbered instead by
-- their record's place among the change's records: unique within the change all the same.

CREATE TABLE edits_by_key (
    id     INTEGER PRIMARY KEY,
    change INTEGER NOT NULL REFERENCES changes (n),
    record BLOB NOT NULL,
    body   BLOB NOT NULL,
    live   INTEGER NOT NULL,
    ended  TEXT NOT NULL DEFAULT ''
);
INSERT INTO edits_by_key (id, change, record, body, live, ended)
    SELECT (change << 16) | (ROW_NUMBER() OVER (PARTITION BY change ORDER BY record) - 1), change, record, body, live, ended
    FROM edits ORDER BY change, record;
DROP TABLE edits;
ALTER TABLE edits_by_key RENAME TO edits;
CREATE INDEX edits_by_record ON edits (record, live);
