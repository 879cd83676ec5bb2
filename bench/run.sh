#!/usr/bin/env bash
# Builds every product in release (in .build-release, apart from the debug build) and runs the
# benchmark: `bench/run.sh` (quick, under 2 minutes after the build) or `bench/run.sh --full`.
# JSON lines go to standard output, the table to standard error.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh --test >&2
# The products it runs, not every target: the fuzz target imports with @testable, which a
# release build refuses.
# SwiftPM does not always run the schema-embedding plugin again for a schema file added since the
# last release build (a new migration was once missing from the measured binary): a touched
# manifest makes it.
touch Package.swift
for product in fieldsync fieldsync-server fieldsync-bench; do
    swift build -c release --scratch-path .build-release --product "$product" >&2
done
# B1 and B3 also run on PostgreSQL: a throwaway cluster with fsync on, as durable as SQLite's
# synchronous=FULL.
pg=$(FIELDSYNC_PG_FSYNC=on scripts/pg-cluster.sh start)
trap 'scripts/pg-cluster.sh stop "$pg"' EXIT
export FIELDSYNC_BENCH_POSTGRES_URL=$(sed -n 's/^FIELDSYNC_TEST_POSTGRES_URL=//p' "$pg/env")
.build-release/release/fieldsync-bench "$@"
