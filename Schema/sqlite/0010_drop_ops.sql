-- Their rows now live in `edits` (0009).
DROP TABLE ops;
DROP TABLE op_values;
