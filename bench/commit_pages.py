#!/usr/bin/env python3
"""What a durable commit costs on this disk as it touches more B-trees (B4's floor).

Each transaction inserts one row into each of N tables (random 16-byte keys, 20,000 rows already
in each, WAL, synchronous=FULL), so it appends about N pages to the WAL before its fsync. A
`fieldsync note add` touches about eleven B-trees (the change and its four indexes, the vector,
the edit and its index, the record and its listing index, the clock).

    python3 bench/commit_pages.py
"""
import os, sqlite3, tempfile, time

def commits_per_second(tables, n=1500):
    with tempfile.TemporaryDirectory() as d:
        c = sqlite3.connect(os.path.join(d, "p.sqlite"), isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        for t in range(tables):
            c.execute(f"CREATE TABLE t{t} (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        c.execute("BEGIN")
        for t in range(tables):
            c.executemany(f"INSERT INTO t{t} VALUES (?, ?)", [(os.urandom(16), os.urandom(60)) for _ in range(20000)])
        c.execute("COMMIT")
        start = time.perf_counter()
        for _ in range(n):
            c.execute("BEGIN")
            for t in range(tables):
                c.execute(f"INSERT INTO t{t} VALUES (?, ?)", (os.urandom(16), os.urandom(60)))
            c.execute("COMMIT")
        return n / (time.perf_counter() - start)

for tables in (1, 6, 11):
    print(f"{tables:2d} B-trees a commit: {commits_per_second(tables):6.0f} durable commits/s")
