#!/usr/bin/env python3
"""A laptop carrying another's work to the server: relay beside upload and download.

Release binaries (`swift build -c release --scratch-path .build-release --product ...`), one
server on loopback (SQLite), four laptops. `a` imports N notes and hands them to `b` by bundle;
`b` syncs and relays them (the server lacks them); `c`, empty, downloads them; then `a` syncs
its own notes, all of which the server already holds. Prints each step's seconds as JSON and
the relay's time over the download's, the figure to set beside B5's upload over download.

Usage: bench/relay.py [N]   (default 100000)
"""
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build-release", "release")


def run(args, home=None, check=True):
    env = dict(os.environ)
    if home:
        env["FIELDSYNC_HOME"] = home
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(args[:3]), r.returncode, r.stderr.strip()))
    return r


def timed(args, home=None):
    t = time.monotonic()
    run(args, home)
    return round(time.monotonic() - t, 2)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    work = tempfile.mkdtemp(prefix="fieldsync-relay-")
    server = None
    try:
        data = os.path.join(work, "server")
        init = run([BIN + "/fieldsync-server", "init", "--data", data, "--hostname", "127.0.0.1"]).stdout
        pin = next(line.split()[2] for line in init.splitlines() if "CA pin" in line)
        out = open(os.path.join(work, "server.out"), "w")
        server = subprocess.Popen([BIN + "/fieldsync-server", "serve", "--data", data, "--port", "0"], stdout=out,
                                  stderr=subprocess.DEVNULL)
        url = None
        for _ in range(100):
            time.sleep(0.1)
            text = open(os.path.join(work, "server.out")).read()
            if "listening" in text:
                url = next(line.split()[2] for line in text.splitlines() if "listening" in line)
                break
        if not url:
            sys.exit("the server did not start")
        homes = {}
        for name, role in [("a", "field"), ("b", "field"), ("c", "coordinator")]:
            home = homes[name] = os.path.join(work, name)
            run([BIN + "/fieldsync", "init", "--name", name, "--role", role], home)
            token = run([BIN + "/fieldsync-server", "invite", "--data", data, "--role", role, "--name", name]).stdout.strip()
            run([BIN + "/fieldsync", "enroll", url, "--token", token, "--pin", pin], home)
        notes = os.path.join(work, "notes.jsonl")
        rng = random.Random(7)
        letters = string.ascii_letters + string.digits + " ,"
        with open(notes, "w") as f:
            for i in range(n):
                f.write(json.dumps({"kind": "survey", "ref": "R-%d" % i, "narrative": "".join(rng.choice(letters) for _ in range(330))}) + "\n")
        bundle = os.path.join(work, "a.fsb")
        figures = {"notes": n}
        figures["import_s"] = timed([BIN + "/fieldsync", "note", "add", "--json-file", notes], homes["a"])
        figures["bundle_create_s"] = timed([BIN + "/fieldsync", "bundle", "create", "--out", bundle], homes["a"])
        figures["bundle_bytes"] = os.path.getsize(bundle)
        figures["bundle_apply_s"] = timed([BIN + "/fieldsync", "bundle", "apply", bundle], homes["b"])
        t = time.monotonic()
        relay = json.loads(run([BIN + "/fieldsync", "sync", "--json"], homes["b"]).stdout)
        figures["relay_s"] = round(time.monotonic() - t, 2)
        figures["relayed"] = relay["relayed"]
        figures["download_s"] = timed([BIN + "/fieldsync", "sync", "--quiet"], homes["c"])
        figures["author_after_relay_s"] = timed([BIN + "/fieldsync", "sync", "--quiet"], homes["a"])
        figures["relay_over_download"] = round(figures["relay_s"] / figures["download_s"], 2)
        print(json.dumps(figures))
        if figures["relayed"] == 0:
            sys.exit("nothing was relayed")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
