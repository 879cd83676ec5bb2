-- The sync server keeps each change's envelope as it sends it (`SignedChange.envelope`), so a pull
-- reads one column instead of decoding the change and joining its values. NULL on laptops, and
-- NULL again as soon as any value of the change is erased: the envelope is then rebuilt from
-- `op_values` without it.
ALTER TABLE changes ADD COLUMN envelope BLOB;
