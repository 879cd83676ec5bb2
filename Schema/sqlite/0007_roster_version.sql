-- Every change to the roster stamps `meta.roster_version` with a fresh random value, in the same
-- transaction, whichever process makes it (`fieldsync-server revoke` runs beside the server).
-- The store keeps the roster it last read keyed by that stamp (`RosterCache`), instead of
-- reading and hashing every roster row several times per sync exchange. Random, not a counter:
-- a roster change rolled back and another one committed must not share a stamp.

INSERT OR REPLACE INTO meta (key, value) VALUES ('roster_version', lower(hex(randomblob(16))));
CREATE TRIGGER roster_stamp_insert AFTER INSERT ON roster BEGIN
    UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'roster_version';
END;
CREATE TRIGGER roster_stamp_update AFTER UPDATE ON roster BEGIN
    UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'roster_version';
END;
CREATE TRIGGER roster_stamp_delete AFTER DELETE ON roster BEGIN
    UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'roster_version';
END;
