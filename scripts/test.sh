#!/usr/bin/env bash
# Runs every test: builds (failing on any warning in our own code), then `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --test
log=$(mktemp)
if ! swift build --build-tests >"$log" 2>&1; then
    grep -E "error:" "$log" | sort -u | head -40 || tail -40 "$log"
    exit 1
fi
# Warnings from our own sources fail the run; dependencies' warnings are theirs.
own=$(grep -E "^/[^ ]*: warning:|warning: .main.:" "$log" | grep -vE "/\.build[^/]*/|checkouts/" | sort -u || true)
if [ -n "$own" ]; then echo "warnings in our own code:"; echo "$own"; exit 1; fi
# The PostgreSQL store's tests run against a throwaway cluster, stopped however the run ends.
pg=$(scripts/pg-cluster.sh start)
trap 'scripts/pg-cluster.sh stop "$pg"' EXIT
set -a; . "$pg/env"; set +a
swift test --skip-build "$@"
