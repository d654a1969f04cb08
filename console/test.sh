#!/usr/bin/env bash
# CI entry point of the web console: install, type-check, make sure the committed bundle (console/dist, which
# the daemon embeds) is what the sources build, make sure Chromium is there, and run the browser tests against
# a real daemon. Expects the Rust binary to be built already (cargo build -p sandpit-cli).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$(cd .. && pwd)"
export SANDPIT_BIN="${SANDPIT_BIN:-$REPO/target/debug/sandpit}"
if [[ ! -x "$SANDPIT_BIN" ]]; then
  echo "console/test.sh: no sandpit binary at $SANDPIT_BIN: build it first (cargo build -p sandpit-cli), or set SANDPIT_BIN" >&2
  exit 1
fi

npm ci --no-audit --no-fund --ignore-scripts
npx tsc -p tsconfig.json
npm run check

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "console/test.sh: installing chromium with apt"
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
      || echo "console/test.sh: apt-get install chromium failed; the browser tests will fail under CI" >&2
  fi
fi

rm -rf test-artifacts
npm test
echo "console/test.sh: screenshots of each page are in $(pwd)/test-artifacts/"
