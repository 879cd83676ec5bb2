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
export FIELDSYNC_REQUIRE_POSTGRES=1
if [ $# -gt 0 ]; then swift test --skip-build "$@"; exit; fi
# Two runs. First everything on SQLite. Then the PostgreSQL suites (several server processes,
# thirty laptop processes) with the whole server suite again on PostgreSQL
# (FIELDSYNC_TEST_STORE), so both stores pass the same tests. Apart, because the first run's
# synchronous end-to-end tests would hold both threads of the cooperative pool that the
# PostgreSQL client needs, for minutes on two cores.
status=0
swift test --skip-build --skip Postgres || status=1
FIELDSYNC_TEST_STORE=postgres swift test --skip-build --filter 'Postgres|FieldSyncServerTests\.' || status=1
exit $status
