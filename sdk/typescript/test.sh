#!/usr/bin/env bash
# CI entry point of the TypeScript SDK: install, build, lint, make sure Chromium is there, run the suite against a
# real daemon. Expects the Rust binary to be built already (cargo build -p sandpit-cli).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$(cd ../.. && pwd)"
export SANDPIT_BIN="${SANDPIT_BIN:-$REPO/target/debug/sandpit}"
if [[ ! -x "$SANDPIT_BIN" ]]; then
  echo "sdk/typescript/test.sh: no sandpit binary at $SANDPIT_BIN" >&2
  echo "  build it first: (cd $REPO && cargo build -p sandpit-cli), or set SANDPIT_BIN" >&2
  exit 1
fi

npm ci --no-audit --no-fund --ignore-scripts
npm run build
# Gates before the suite: ESLint over src and test, and the tests type-checked (the build checks src only).
npm run lint
npx tsc -p tsconfig.test.json --noEmit

# The browser test needs Chromium, the terminal attach test tmux: install whichever is missing.
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
missing=()
[[ -x "$CHROMIUM" ]] || missing+=(chromium)
command -v tmux >/dev/null || missing+=(tmux)
if ((${#missing[@]})); then
  echo "sdk/typescript/test.sh: installing ${missing[*]} with apt"
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
      || echo "sdk/typescript/test.sh: apt-get install ${missing[*]} failed; those tests will be skipped" >&2
  else
    echo "sdk/typescript/test.sh: not root or no apt-get; the tests needing ${missing[*]} will be skipped" >&2
  fi
fi

npm test
