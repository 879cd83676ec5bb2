#!/usr/bin/env python3
"""Which B-trees one durable `fieldsync note add` writes: WAL frames per commit, by table or index.

Makes a replica with N notes (`fieldsync note add`, one process each), then adds M more while
holding a connection open (so the WAL is kept), reads each frame's page number from the WAL and
names the B-tree it belongs to with SQLite's `dbstat`. Every frame is a page written to the WAL
and later to the database: fewer frames, less to write before each fsync (BENCHMARKS.md, B4).

    python3 bench/wal_pages.py [--fieldsync .build-release/release/fieldsync] [--notes 1000] [--more 60]
"""
import argparse, collections, os, sqlite3, struct, subprocess, tempfile

def add(fieldsync, env, n):
    subprocess.run([fieldsync, "note", "add", "--kind", "observation", "--set", f"ref=UA-KHA-OBS-{n:05d}", "--set", "org=FSD",
                    "--set", "team=MT3", "--set", "info_date=2026-11-03", "--set", "status=open",
                    "--set", f"narrative=Visual inspection of field edge {n}; no further items seen.", "--set", "lang=en",
                    "--set", "area_m2=1200", "--set", "sensitivity=internal",
                    "--set", 'location={"type":"Point","coordinates":[36.123,49.456]}'],
                   env=env, check=True, stdout=subprocess.DEVNULL)

def main():
    a = argparse.ArgumentParser()
    a.add_argument("--fieldsync", default=".build-release/release/fieldsync")
    a.add_argument("--notes", type=int, default=1000)
    a.add_argument("--more", type=int, default=60)
    args = a.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, FIELDSYNC_HOME=os.path.join(d, "home"))
        subprocess.run([args.fieldsync, "init", "--name", "wal-pages"], env=env, check=True, stdout=subprocess.DEVNULL)
        for n in range(args.notes): add(args.fieldsync, env, n)
        db = os.path.join(d, "home", "replica.sqlite")
        hold = sqlite3.connect(db)  # a second connection: the last one to close would fold the WAL away
        hold.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(args.notes, args.notes + args.more): add(args.fieldsync, env, n)
        wal = open(db + "-wal", "rb").read()
        size = struct.unpack(">I", wal[8:12])[0]
        owner = {page: name for name, page in hold.execute("SELECT name, pageno FROM dbstat")}
        commits, frames, off = [], [], 32
        while off + 24 + size <= len(wal):
            page, commit = struct.unpack(">II", wal[off:off + 8])
            frames.append(page)
            if commit: commits.append(frames); frames = []
            off += 24 + size
        # A checkpoint may restart the WAL: only the commits still in it are counted.
        by = collections.Counter(owner.get(p, f"page {p}") for c in commits for p in c)
        total = sum(len(c) for c in commits)
        print(f"{len(commits)} commits, {total / len(commits):.1f} frames (pages of {size} bytes) each")
        for name, n in by.most_common(): print(f"{n / len(commits):6.2f}  {name}")

if __name__ == "__main__":
    main()
