#!/usr/bin/env python3
"""Two builds of the bench, alternated run by run: the way to tell a change from this machine's noise.

The machine's speed moves by a quarter within minutes, so a figure from one build measured an hour
apart from another's says little. This runs `fieldsync-bench --full --only-…` from each folder
in turn (A, B, A, B, …; the order flips every round), reads one figure from its JSON, and prints
each build's median and the median of the per-round ratios B/A.

    python3 bench/ab.py OLD_DIR NEW_DIR [--only b4] [--figure durable_notes_per_s[,another,…]] [--rounds 10]

With several figures (comma-separated), each is read from the same runs and reported on its own.

Each folder holds `fieldsync-bench`, `fieldsync` and `fieldsync-server` from one release build
(copy them out of `.build-release/release/` before changing the code).
"""
import argparse, json, os, statistics, subprocess, sys

def run(folder, only, figures):
    out = subprocess.run([os.path.join(folder, "fieldsync-bench"), "--full", f"--only-{only}"],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        if line.startswith("{"):
            o = json.loads(line)
            found.update({f: float(o[f]) for f in figures if f in o})
    missing = [f for f in figures if f not in found]
    if missing: sys.exit(f"no figure {', '.join(missing)} in the output of {folder}")
    return found

def ratio(old, new):
    """new/old; 1 when both are 0 (a count that should stay 0, such as B3's refusals)."""
    if old == 0: return 1.0 if new == 0 else float("inf")
    return new / old

def main():
    a = argparse.ArgumentParser()
    a.add_argument("old"); a.add_argument("new")
    a.add_argument("--only", default="b4")
    a.add_argument("--figure", default="durable_notes_per_s")
    a.add_argument("--rounds", type=int, default=10)
    args = a.parse_args()
    figures = args.figure.split(",")
    old, new = {f: [] for f in figures}, {f: [] for f in figures}
    for r in range(args.rounds):
        pair = [(args.old, old), (args.new, new)]
        for folder, into in (pair if r % 2 == 0 else pair[::-1]):
            for f, v in run(folder, args.only, figures).items(): into[f].append(v)
        print(f"round {r + 1}: " + "; ".join(f"{f} old {old[f][-1]:.2f} new {new[f][-1]:.2f} ratio {ratio(old[f][-1], new[f][-1]):.3f}"
                                            for f in figures), flush=True)
    for f in figures:
        ratios = [ratio(o, n) for o, n in zip(old[f], new[f])]
        print(f"{f}: old median {statistics.median(old[f]):.2f}, new median {statistics.median(new[f]):.2f}, "
              f"median ratio new/old {statistics.median(ratios):.3f} over {args.rounds} rounds")

if __name__ == "__main__":
    main()
