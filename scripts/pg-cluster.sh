#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on loopback, on a free port.
#   scripts/pg-cluster.sh start   starts one; prints the folder whose `env` file holds
#                                 FIELDSYNC_TEST_POSTGRES_URL=postgres://…
#   scripts/pg-cluster.sh stop DIR  stops it and removes DIR
# FIELDSYNC_PG_OPTIONS adds server options, e.g. "-c shared_preload_libraries=pg_stat_statements".
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "PostgreSQL is not installed (scripts/ensure-deps.sh --test installs it)" >&2; exit 1; }
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
case "${1:-}" in
start)
    dir=$(mktemp -d /tmp/fieldsync-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U fieldsync --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    started=""
    for _ in 1 2 3 4 5; do  # a free port: bind 0, read it back; again if taken meanwhile
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        # fsync off: a test cluster is thrown away; the benchmark asks for it on (FIELDSYNC_PG_FSYNC=on).
        if "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${FIELDSYNC_PG_FSYNC:-off} -c max_connections=400 ${FIELDSYNC_PG_OPTIONS:-}" start >/dev/null; then
            started=1; break
        fi
    done
    [ -n "$started" ] || { cat "$dir/log" >&2; exit 1; }
    "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U fieldsync fieldsync_test
    echo "FIELDSYNC_TEST_POSTGRES_URL=postgres://fieldsync@127.0.0.1:$port/fieldsync_test?sslmode=disable" >"$dir/env"
    echo "$dir" ;;
stop)
    dir=${2:?usage: $0 stop DIR}
    [ -d "$dir/data" ] && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir" ;;
*)
    sed -n 2,6p "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
