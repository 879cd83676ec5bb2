#!/usr/bin/env python3
"""B1's workload through two CRDT peers, Loro and Yrs (pycrdt), for comparison with fieldsync.

Usage: bench/peers.py [--notes N]   (default 10,000 notes × 10 fields = 100,000 field writes)

Installs loro and pycrdt from PyPI into bench/.venv on first run (and re-executes itself there).
Four writer replicas write their share of the notes, committing every 9 notes (99 ops, as
fieldsync's changes of at most 100 ops); a "server" replica merges the four; then, timed, the
server encodes its whole history and an empty "laptop" replica decodes and merges it.
What the peers do NOT do, and fieldsync does: no signatures, no durable storage, no network,
no schema validation, no per-field conflict listing. Prints one JSON object per peer.
"""
import json, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
PY = os.path.join(VENV, "bin", "python")

if sys.prefix != VENV:
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "loro==1.17.1", "pycrdt==0.14.13"], check=True)
    os.execv(PY, [PY, os.path.abspath(__file__), *sys.argv[1:]])

import loro, pycrdt  # noqa: E402

notes = 10_000
if "--notes" in sys.argv:
    notes = int(sys.argv[sys.argv.index("--notes") + 1])
FIELDS = 10
PER_COMMIT = 9
RUNS = 5


def fields(n):
    """The same ten fields fieldsync-bench writes (Workload.fields)."""
    return {
        "ref": f"UA-KHA-OBS-{n:05d}", "org": "FSD", "team": f"MT{n % 12 + 1}",
        "info_date": f"2026-11-{n % 28 + 1:02d}", "status": "open" if n % 3 == 0 else "closed",
        "narrative": f"Visual inspection of field edge {n}; no further items seen.", "lang": "en",
        "area_m2": 100 + n % 5000, "sensitivity": "internal",
        "location": json.dumps({"type": "Point", "coordinates": [36.0 + n % 1000 / 1000, 49.0 + n // 1000 % 1000 / 1000]}),
    }


def shares():
    """Notes in commits of 9, authors taking turns commit by commit."""
    out = [[] for _ in range(4)]
    for turn, start in enumerate(range(0, notes, PER_COMMIT)):
        out[turn % 4].append(range(start, min(start + PER_COMMIT, notes)))
    return out


def run_loro():
    writers = []
    for share in shares():
        doc = loro.LoroDoc()
        root = doc.get_map("notes")
        for commit in share:
            for n in commit:
                note = root.insert_container(f"note-{n}", loro.LoroMap())
                for k, v in fields(n).items():
                    note.insert(k, v)
            doc.commit()
        writers.append(doc)
    server = loro.LoroDoc()
    for w in writers:
        server.import_(w.export(loro.ExportMode.Updates(loro.VersionVector())))
    times, size = [], 0
    for _ in range(RUNS):
        t = time.perf_counter()
        blob = server.export(loro.ExportMode.Updates(loro.VersionVector()))
        laptop = loro.LoroDoc()
        laptop.import_(blob)
        times.append(time.perf_counter() - t)
        size = len(blob)
    assert len(laptop.get_map("notes").keys()) == notes
    return times, size


def run_yrs():
    writers = []
    for share in shares():
        doc = pycrdt.Doc()
        root = doc.get("notes", type=pycrdt.Map)
        for commit in share:
            with doc.transaction():
                for n in commit:
                    root[f"note-{n}"] = pycrdt.Map(fields(n))
        writers.append(doc)
    server = pycrdt.Doc()
    for w in writers:
        server.apply_update(w.get_update())
    times, size = [], 0
    for _ in range(RUNS):
        t = time.perf_counter()
        blob = server.get_update()
        laptop = pycrdt.Doc()
        laptop.apply_update(blob)
        times.append(time.perf_counter() - t)
        size = len(blob)
    assert len(laptop.get("notes", type=pycrdt.Map)) == notes
    return times, size


writes = notes * FIELDS
for name, version, fn in [("Loro", loro.LORO_VERSION, run_loro), ("Yrs (pycrdt)", pycrdt.__version__ if hasattr(pycrdt, "__version__") else "0.14.13", run_yrs)]:
    times, size = fn()
    med = statistics.median(times)
    print(json.dumps({
        "scenario": "B1 first sync (peer)", "peer": name, "version": version, "field_writes": writes,
        "median_seconds": round(med, 4), "field_writes_per_s": round(writes / med), "bytes_per_field_write": round(size / writes, 2),
        "runs": RUNS, "notes": "encode whole history on one replica, decode and merge on an empty one; no signing, no storage, no network",
    }))
