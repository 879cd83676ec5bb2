-- A durable `note add` costs about 30 µs for every page it writes to the WAL, whatever the
-- page holds (BENCHMARKS.md, B4: a note wrote 12.4 pages). Two B-trees that every new note
-- entered leave its commit:
--
-- `records_listing` (type, deleted, kind): a listing reads nearly every row's `json` anyway, and
-- scanning `records` in id order, the listing's own order, is faster than the index, which gave
-- ids out of order and made SQLite sort them.
DROP INDEX records_listing;

-- `heads` no longer follows the device's own changes: its own head is the top of `changes`'
-- (device, seq) index, one probe (`ReplicaStore.vector`). Rewriting its `heads` row was one more
-- page in every commit of a laptop's own work. Changes from other devices still move `heads`,
-- which is what the server reads on every exchange (it has no own device).
DROP TRIGGER heads_follow_changes;
CREATE TRIGGER heads_follow_changes AFTER INSERT ON changes
    WHEN NEW.device IS NOT (SELECT value FROM meta WHERE key = 'device') BEGIN
    INSERT INTO heads (device, seq) VALUES (NEW.device, NEW.seq)
        ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq);
END;
DELETE FROM heads WHERE device = (SELECT value FROM meta WHERE key = 'device');
