-- The outbox (a laptop's own changes the server has not acknowledged) is found from a mark,
-- `meta.outbox_from.DEVICE`: every change of that device below it is acknowledged. The search
-- runs from there along `changes`' (device, seq) index, so this index, which every stored change
-- entered (the server's and the ones a laptop pulls included), is no longer needed. A laptop's
-- mark starts at its lowest unacknowledged change (or above its last), found while the index
-- is still here.
INSERT INTO meta (key, value)
    SELECT 'outbox_from.' || d.value,
           COALESCE((SELECT MIN(seq) FROM changes WHERE device = d.value AND acked = 0),
                    (SELECT seq + 1 FROM heads WHERE device = d.value), 0)
    FROM meta d WHERE d.key = 'device';
DROP INDEX changes_outbox;
