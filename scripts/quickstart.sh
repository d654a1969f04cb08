#!/usr/bin/env bash
# Quick start: build sandpit, start the daemon, create a sandbox and run a command in it.
#
#   ./scripts/quickstart.sh            # daemon stays running in the background afterwards
#
# The daemon listens on 127.0.0.1:7070 (SANDPIT_LISTEN) with its state in /var/lib/sandpit as root
# (SANDPIT_STATE_DIR); its API key is STATE_DIR/api-key. Stop it with: kill "$(cat STATE_DIR/sandpitd.pid)".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh

echo "==> building (release)"
cargo build --release --locked -p sandpit-cli
# The agent alone, linked statically, beside the daemon (it then runs in any template, libc or not).
./scripts/build-agent.sh release
bin="$root/target/release/sandpit"

listen=${SANDPIT_LISTEN:-127.0.0.1:7070}
if [ "$(id -u)" -eq 0 ]; then
  state=${SANDPIT_STATE_DIR:-/var/lib/sandpit}
else
  state=${SANDPIT_STATE_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/sandpit}
fi
mkdir -p "$state"
url="http://$listen"

if curl -fsS "$url/health" >/dev/null 2>&1; then
  echo "==> a daemon already answers on $url; using it"
else
  echo "==> starting sandpit serve --listen $listen --state-dir $state"
  nohup "$bin" serve --listen "$listen" --state-dir "$state" >"$state/sandpitd.log" 2>&1 &
  echo $! >"$state/sandpitd.pid"
  for _ in $(seq 1 100); do
    curl -fsS "$url/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "$url/health" >/dev/null || { echo "daemon did not start; see $state/sandpitd.log" >&2; tail -20 "$state/sandpitd.log" >&2; exit 1; }
fi

export SANDPIT_URL="$url"
export SANDPIT_API_KEY="$(cat "$state/api-key")"
# On a new state directory the daemon first links the host's /usr into the `base` template (10-20 s,
# once): say so instead of waiting in silence.
if curl -fsS -H "Authorization: Bearer $SANDPIT_API_KEY" "$url/v1/templates/base/build" 2>/dev/null | grep -q '"state":"building"'; then
  echo "==> preparing the base template from this host's /usr (once, 10-20 s)"
  for _ in $(seq 1 600); do
    curl -fsS -H "Authorization: Bearer $SANDPIT_API_KEY" "$url/v1/templates/base/build" 2>/dev/null | grep -q '"state":"building"' || break
    sleep 0.5
  done
fi
echo "==> sandpit run -- sh -c 'echo hello; id; hostname; uname -sr'"
"$bin" run -- sh -c 'echo "hello from a sandpit sandbox"; id; hostname; uname -sr'

cat <<MSG

sandpit is running on $url (log: $state/sandpitd.log, pid file: $state/sandpitd.pid).
  export SANDPIT_URL=$url
  export SANDPIT_API_KEY=\$(cat $state/api-key)
  $bin create                     # a sandbox id
  $bin exec ID -- python3 -c 'print(2 + 2)'
  $bin attach ID                  # an interactive shell; ctrl-] detaches
The web console: $url/console (sign in with the key in $state/api-key).
MSG
