-- A laptop's own changes leave `changes_by_hlc`: one page less in every durable `note add`
-- (BENCHMARKS.md, B4: each B-tree a commit touches is about 5 % of a note).
--
-- `local` is 1 for a change of the replica's own device (`meta.device`), set when it is stored.
-- Such changes need no HLC index: each was stamped by this replica's clock, which ticks above
-- every change stored before it, so by seq they are already in HLC order, and the highest is at
-- the top of the (device, seq) index. Rows stored before this migration keep 0: they stay in the
-- index, and the reading below covers them.
ALTER TABLE changes ADD COLUMN local INTEGER NOT NULL DEFAULT 0;

-- The clock's floor besides the own head (`SQLiteStorage.clockReading`): the highest HLC of
-- every change not marked local. `hlc` holds the bits as a signed integer: the highest unsigned
-- is the highest negative one, if any.
INSERT INTO meta (key, value)
    SELECT 'hlc_received', COALESCE((SELECT MAX(hlc) FROM changes WHERE hlc < 0), (SELECT MAX(hlc) FROM changes))
    WHERE EXISTS (SELECT 1 FROM changes)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

DROP INDEX changes_by_hlc;
CREATE INDEX changes_by_hlc ON changes (hlc) WHERE local = 0;

-- One trigger for what a change not made here moves: its device's head (0008, 0013: the own
-- head is read from `changes`) and `hlc_received`, raised in unsigned order. `local = 0` is the
-- old trigger's test (`device` is not the own device), decided once by the insert.
DROP TRIGGER heads_follow_changes;
CREATE TRIGGER received_changes_move_heads AFTER INSERT ON changes WHEN NEW.local = 0 BEGIN
    INSERT INTO heads (device, seq) VALUES (NEW.device, NEW.seq)
        ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq);
    INSERT INTO meta (key, value) VALUES ('hlc_received', NEW.hlc)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value
        WHERE CASE WHEN (NEW.hlc < 0) = (CAST(value AS INTEGER) < 0) THEN NEW.hlc > CAST(value AS INTEGER) ELSE NEW.hlc < 0 END;
END;
