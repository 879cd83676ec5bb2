#!/usr/bin/env bash
# Builds every product in release (in .build-release, apart from the debug build) and runs the
# benchmark: `bench/run.sh` (quick, under 2 minutes after the build) or `bench/run.sh --full`.
# JSON lines go to standard output, the table to standard error.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh >&2
swift build -c release --scratch-path .build-release >&2
exec .build-release/release/fieldsync-bench "$@"
