#!/usr/bin/env bash
# Counts the file-system entries (`mkdir`, `open(O_CREAT)`, `bind`) a daemon makes in its state directory
# for one create -> exec -> delete, with strace on the running daemon. As root (isolate backend).
#
#   sudo bench/state_entries.sh target/release/sandpit
#
# docs/benchmarks.md ("Fewer file-system entries per create") has the last figures.
set -euo pipefail
bin="$(realpath "${1:?usage: state_entries.sh SANDPIT_BIN}")"
command -v strace >/dev/null || { echo "state_entries: needs strace" >&2; exit 1; }
state="$(mktemp -d /tmp/spe-XXXXXX)"
key=state-entries-key-0123456789
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SANDPIT_API_KEY=$key SANDPIT_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --state-dir "$state" \
  > "$state.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$state" "$state.log" "$state.strace"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf -o /dev/null "$url/v1/health" && break; sleep 0.1; done
cycle() {
  local id
  id="$(curl -sf -X POST -H "Authorization: Bearer $key" -H 'content-type: application/json' -d '{}' \
    "$url/v1/sandboxes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $key" -H 'content-type: application/json' \
    -d '{"argv":["true"]}' "$url/v1/sandboxes/$id/exec"
  curl -sf -o /dev/null -X DELETE -H "Authorization: Bearer $key" "$url/v1/sandboxes/$id"
}
cycle # the first create waits for the base template
strace -f -p "$daemon" -e trace=mkdir,mkdirat,openat,bind -o "$state.strace" 2>/dev/null &
tracer=$!
sleep 1
cycle
sleep 0.5
kill $tracer; wait $tracer 2>/dev/null || true
made="$(grep -E "mkdir\(\"$state|openat\(AT_FDCWD, \"$state[^\"]*\", [^)]*O_CREAT|sun_path=\"$state" \
  "$state.strace" | grep -v '= -1' || true)"
echo "entries made in the state directory for one create -> exec -> delete: $(grep -c . <<<"$made")"
sed -E 's/^[0-9]+ +//; s/, (0[0-9]+|[0-9]+\)).*//' <<<"$made" | sed "s#$state#STATE#g"
