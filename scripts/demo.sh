#!/usr/bin/env bash
# The main job: a demonstration of replicas working apart and converging.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build --product fieldsync-demo >/dev/null
"$(swift build --show-bin-path)/fieldsync-demo"
