#!/usr/bin/env bash
# The main job: a sync server on loopback (embedded SQLite store) and three laptops. Two field
# laptops edit the same clearance report while offline, one deletes what the other edits; they
# sync, and everyone sees the merged log and the conflicts; the coordinator settles them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
echo "building fieldsync and fieldsync-server (a few minutes the first time)..."
swift build --product fieldsync >/dev/null
swift build --product fieldsync-server >/dev/null
bin=$(swift build --show-bin-path)
work=$(mktemp -d /tmp/fieldsync-demo.XXXXXX)
server_pid=""
cleanup() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
server() { "$bin/fieldsync-server" "$@"; }
on() { local who=$1; shift; FIELDSYNC_HOME="$work/$who" "$bin/fieldsync" "$@"; }

step "server: init (key, private CA, TLS certificate, SQLite) and serve on loopback"
pin=$(server init --data "$work/server" --hostname 127.0.0.1 | awk '/CA pin/ {print $3}')
echo "CA pin $pin"
"$bin/fieldsync-server" serve --data "$work/server" --port 0 > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 50); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(awk '/listening/ {print $3}' "$work/server.out")
echo "serving $url"

step "three laptops: init and enrol with one-time invites"
for spec in mt3-laptop:field nts2-laptop:field hq-coordinator:coordinator; do
    name=${spec%%:*}; role=${spec##*:}
    on "$name" init --name "$name" --role "$role" >/dev/null
    on "$name" enroll "$url" --token "$(server invite --data "$work/server" --role "$role" --name "$name")" --pin "$pin"
done

step "mt3-laptop records the sample field notes and syncs; the others sync"
on mt3-laptop note add --json-file ../shared/samples/notes.jsonl >/dev/null 2>&1 \
  || on mt3-laptop note add --json-file "$(dirname "$0")/../../shared/samples/notes.jsonl" >/dev/null
for l in mt3-laptop nts2-laptop hq-coordinator; do on $l sync; done
clr=$(on mt3-laptop note list --kind clearance_day --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
eod=$(on mt3-laptop note list --kind eod_spot --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

step "offline: both field laptops correct the cleared area; one deletes the EOD spot the coordinator annotates"
on mt3-laptop note edit "$clr" --set area_cleared_m2=1150 --add tags=re-measured
if command -v faketime >/dev/null; then
    echo "(nts2-laptop's clock is 3 days behind)"
    FAKETIME_DONT_FAKE_MONOTONIC=1 FIELDSYNC_HOME="$work/nts2-laptop" faketime -f -3d "$bin/fieldsync" note edit "$clr" --set area_cleared_m2=1200
else
    on nts2-laptop note edit "$clr" --set area_cleared_m2=1200
fi
on nts2-laptop note delete "$eod" --reason "duplicate of UA-KHA-EOD-0309"
on hq-coordinator note edit "$eod" --set narrative="Item moved to the demolition site; second fuze found."

on mt3-laptop submit "$clr" --comment "clearance day 3 complete"

step "everyone syncs (twice round)"
for _ in 1 2; do for l in mt3-laptop nts2-laptop hq-coordinator; do on $l sync; done; done

step "the merged log, as the coordinator sees it (newest first)"
on hq-coordinator log --limit 8

step "open conflicts (the same on every laptop)"
on hq-coordinator conflicts
same=$(for l in mt3-laptop nts2-laptop hq-coordinator; do on $l note list --json | sha256sum; done | sort -u | wc -l)
echo "note listings identical on all three laptops: $([ "$same" = 1 ] && echo yes || echo NO)"

step "the coordinator settles: keeps 1200, keeps the EOD spot, approves the report; all sync"
on hq-coordinator resolve "$clr" area_cleared_m2 --value 1200
on hq-coordinator resolve "$eod" "(deleted)" --keep 2
on hq-coordinator review "$clr" --approve --comment "checked against the site sketch"
for l in hq-coordinator mt3-laptop nts2-laptop; do on $l sync --quiet; done
on nts2-laptop note show "$clr"
echo
echo "conflicts left on each laptop: $(for l in mt3-laptop nts2-laptop hq-coordinator; do on $l conflicts --json; done | tr '\n' ' ')"
server devices list --data "$work/server"
