#!/usr/bin/env python3
"""Times `fieldsync note list --json` and `fieldsync status` on a replica of 10,000 notes.

Usage: bench/listing.py [path/to/fieldsync]   (default: a release build in .build-release)
Builds nothing itself; run `swift build -c release --scratch-path .build-release --product fieldsync` first.
Prints the median and spread of 15 runs of each command, as processes, as a user would run them.
"""
import json, os, statistics, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".build-release", "release", "fieldsync")
home = tempfile.mkdtemp(prefix="fieldsync-bench-")
env = dict(os.environ, FIELDSYNC_HOME=home)

def run(*args):
    return subprocess.run([binary, *args], env=env, check=True, capture_output=True)

run("init", "--name", "bench-laptop")
kinds = ["hazard_area", "survey", "clearance_day", "eod_spot", "accident", "eore_session", "observation"]
path = os.path.join(home, "notes.jsonl")
with open(path, "w") as f:
    for i in range(10_000):
        f.write(json.dumps({
            "kind": kinds[i % 7], "ref": f"UA-KHA-{i:05d}", "org": "NPA", "team": f"MT-{i % 9}",
            "info_date": "2025-08-27", "status": "confirmed", "area_m2": 1000 + i,
            "narrative": "Manual clearance continued along the field edge; no items found today.",
            "lang": "en", "sensitivity": "internal",
            "location": {"type": "Point", "coordinates": [37.25 + i / 1e5, 49.2]},
        }) + "\n")
t = time.perf_counter()
run("note", "add", "--json-file", path)
print(f"imported 10,000 notes (100,000 field writes) in {time.perf_counter() - t:.2f} s")

for args in (["note", "list", "--json"], ["status", "--json"], ["status"]):
    times = []
    for _ in range(15):
        t = time.perf_counter()
        out = run(*args).stdout
        times.append((time.perf_counter() - t) * 1000)
    if args[:2] == ["note", "list"]:
        assert len(json.loads(out)) == 10_000
    print(f"fieldsync {' '.join(args):<20} median {statistics.median(times):6.1f} ms  min {min(times):6.1f}  max {max(times):6.1f}  (15 runs)")
