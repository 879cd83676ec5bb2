-- A change's salts are derived from one per-change seed, so the wire carries 16 bytes a change
-- instead of 16 a value. The seed is dropped (NULL) once any value of the change is erased:
-- with it, an erased value's salt could be derived again and the value guessed from its
-- commitment. The explicit salts of the values that remain stay in op_values.
ALTER TABLE changes ADD COLUMN seed BLOB;
