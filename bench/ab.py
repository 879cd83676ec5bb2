#!/usr/bin/env python3
"""Two builds of the bench, alternated run by run: the way to tell a change from this machine's noise.

The machine's speed moves by a quarter within minutes, so a figure from one build measured an hour
apart from another's says little. This runs `fieldsync-bench --full --only-…` from each folder
in turn (A, B, A, B, …; the order flips every round), reads one figure from its JSON, and prints
each build's median and the median of the per-round ratios B/A.

    python3 bench/ab.py OLD_DIR NEW_DIR [--only b4] [--figure durable_notes_per_s] [--rounds 10]

Each folder holds `fieldsync-bench`, `fieldsync` and `fieldsync-server` from one release build
(copy them out of `.build-release/release/` before changing the code).
"""
import argparse, json, os, statistics, subprocess, sys

def run(folder, only, figure):
    out = subprocess.run([os.path.join(folder, "fieldsync-bench"), "--full", f"--only-{only}"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            o = json.loads(line)
            if figure in o: return float(o[figure])
    sys.exit(f"no figure {figure} in the output of {folder}")

def main():
    a = argparse.ArgumentParser()
    a.add_argument("old"); a.add_argument("new")
    a.add_argument("--only", default="b4")
    a.add_argument("--figure", default="durable_notes_per_s")
    a.add_argument("--rounds", type=int, default=10)
    args = a.parse_args()
    old, new, ratios = [], [], []
    for r in range(args.rounds):
        pair = [(args.old, old), (args.new, new)]
        for folder, into in (pair if r % 2 == 0 else pair[::-1]):
            into.append(run(folder, args.only, args.figure))
        ratios.append(new[-1] / old[-1])
        print(f"round {r + 1}: old {old[-1]:.1f}  new {new[-1]:.1f}  ratio {ratios[-1]:.3f}", flush=True)
    print(f"{args.figure}: old median {statistics.median(old):.1f}, new median {statistics.median(new):.1f}, "
          f"median ratio new/old {statistics.median(ratios):.3f} over {args.rounds} rounds")

if __name__ == "__main__":
    main()
