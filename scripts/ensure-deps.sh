#!/usr/bin/env bash
# Installs the system libraries the build needs, only when they are missing.
set -euo pipefail
need=()
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
# zlib: gzip for sync bodies (FieldSyncBodyCoding).
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
# The public suffix list: where a glued e-mail address in a press release ends (read at run time;
# contact import falls back to a short built-in list without it).
[ -f /usr/share/publicsuffix/public_suffix_list.dat ] || need+=(publicsuffix)
# Tests only: a PostgreSQL server (a throwaway cluster per run, scripts/pg-cluster.sh) for the
# PostgreSQL store's tests. `serve --postgres` in service needs only a database to reach.
if [ "${1:-}" = "--test" ]; then ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql); fi
# Tests only: a laptop clock days off, for the end-to-end sync test.
if [ "${1:-}" = "--test" ]; then command -v faketime >/dev/null || need+=(faketime); fi
# Tests only: the RFC 9421 interop tests make a Python virtual environment (.build/venv-rfc9421)
# and pip-install an independent implementation into it; Debian's python3 needs python3-venv for that.
if [ "${1:-}" = "--test" ]; then
    if ! command -v python3 >/dev/null; then need+=(python3 python3-venv)
    elif ! python3 -c "import ensurepip, venv" 2>/dev/null; then need+=(python3-venv); fi
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v swift >/dev/null || { echo "swift is not on PATH: install the Swift 6 toolchain first" >&2; exit 1; }
