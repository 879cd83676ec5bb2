-- Why the server refused this replica's changes, kept for `status` and for exit code 5.
CREATE TABLE refusals (
    change_id BLOB PRIMARY KEY,
    code      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        INTEGER NOT NULL
) WITHOUT ROWID;
