-- The outbox (a laptop's own changes the server has not acknowledged) is found from a mark,
-- `meta.outbox_from.DEVICE`: every change of that device below it is acknowledged. The search
-- runs from there along `changes`' (device, seq) index, so this index, which every stored change
-- entered (the server's and the ones a laptop pulls included), is no longer needed.
DROP INDEX changes_outbox;
