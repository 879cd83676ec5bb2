#!/usr/bin/env python3
"""On PostgreSQL: a coordinator's edits synced while a field laptop uploads a large import.

An upload locks its records' buckets: a laptop's own notes shared, any other record exclusive
(`PostgresStage.recordLocks`). So a coordinator's edits wait for the buckets a large import of
new notes holds, one of its transactions at a time. This measures what that costs the
coordinator: its sync of `EDITS` edits alone, and the same while the field laptop uploads
`IMPORT` new notes through the other process. Release binaries; a throwaway cluster (fsync on);
two server processes. Usage: bench/lock_mix.py [SERVER_BINARY] (default the release build).
"""
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build-release", "release")
SERVER = sys.argv[1] if len(sys.argv) > 1 else BIN + "/fieldsync-server"
BASE, IMPORT, EDITS, ROUNDS = 2_000, 30_000, 200, 3


def run(args, home=None, env=None):
    e = dict(os.environ, **(env or {}))
    if home:
        e["FIELDSYNC_HOME"] = home
    r = subprocess.run(args, env=e, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(args[:3]), r.returncode, r.stderr.strip()))
    return r.stdout


def notes_file(path, n, prefix, seed):
    rng = random.Random(seed)
    letters = string.ascii_letters + string.digits + " ,"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"kind": "survey", "ref": "%s-%d" % (prefix, i), "narrative": "".join(rng.choice(letters) for _ in range(200))}) + "\n")


def main():
    work = tempfile.mkdtemp(prefix="fieldsync-lockmix-")
    pg = run([ROOT + "/scripts/pg-cluster.sh", "start"], env={"FIELDSYNC_PG_FSYNC": "on"}).strip()
    url = open(pg + "/env").read().split("=", 1)[1].strip()
    servers = []
    try:
        data = os.path.join(work, "server")
        init = run([SERVER, "init", "--data", data, "--hostname", "127.0.0.1", "--postgres", url])
        pin = next(line.split()[2] for line in init.splitlines() if "CA pin" in line)
        urls = []
        for i in range(2):
            out = os.path.join(work, "serve%d.out" % i)
            servers.append(subprocess.Popen([SERVER, "serve", "--data", data, "--postgres", url, "--port", "0", "--processes", "2"],
                                            stdout=open(out, "w"), stderr=subprocess.DEVNULL))
            for _ in range(100):
                time.sleep(0.1)
                text = open(out).read()
                if "listening" in text:
                    urls.append(next(line.split()[2] for line in text.splitlines() if "listening" in line))
                    break
        if len(urls) != 2:
            sys.exit("the servers did not start")
        homes = {}
        for name, role, u in [("field", "field", urls[0]), ("hq", "coordinator", urls[1])]:
            home = homes[name] = os.path.join(work, name)
            run([BIN + "/fieldsync", "init", "--name", name, "--role", role], home)
            token = run([SERVER, "invite", "--data", data, "--postgres", url, "--role", role, "--name", name]).strip()
            run([BIN + "/fieldsync", "enroll", u, "--token", token, "--pin", pin], home)
        base = os.path.join(work, "base.jsonl")
        notes_file(base, BASE, "BASE", 1)
        run([BIN + "/fieldsync", "note", "add", "--json-file", base], homes["field"])
        run([BIN + "/fieldsync", "sync", "--quiet"], homes["field"])
        run([BIN + "/fieldsync", "sync", "--quiet"], homes["hq"])
        ids = [n["id"] for n in json.loads(run([BIN + "/fieldsync", "note", "list", "--json"], homes["hq"]))]
        alone, mixed = [], []
        for r in range(ROUNDS):
            for together in (False, True):
                for i, nid in enumerate(random.Random(r * 2 + together).sample(ids, EDITS)):
                    run([BIN + "/fieldsync", "note", "edit", nid, "--set", "narrative=checked %d %d %d" % (r, together, i)], homes["hq"])
                upload = None
                if together:
                    big = os.path.join(work, "import%d.jsonl" % r)
                    notes_file(big, IMPORT, "IMP%d" % r, 10 + r)
                    run([BIN + "/fieldsync", "note", "add", "--json-file", big], homes["field"])
                    upload = threading.Thread(target=run, args=([BIN + "/fieldsync", "sync", "--quiet"], homes["field"]))
                    upload.start()
                    time.sleep(1.0)  # the import's upload under way
                t = time.monotonic()
                run([BIN + "/fieldsync", "sync", "--quiet"], homes["hq"])
                (mixed if together else alone).append(round(time.monotonic() - t, 3))
                if upload:
                    upload.join()
                    run([BIN + "/fieldsync", "sync", "--quiet"], homes["hq"])
        print(json.dumps({"server": SERVER, "edits": EDITS, "import": IMPORT, "hq_sync_alone_s": alone, "hq_sync_during_import_s": mixed}))
    finally:
        for s in servers:
            s.terminate()
            s.wait()
        subprocess.run([ROOT + "/scripts/pg-cluster.sh", "stop", pg], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
