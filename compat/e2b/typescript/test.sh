#!/usr/bin/env bash
# Runs the stock E2B JavaScript SDK (`e2b`, pinned in package.json) against a real daemon built from this
# repository: sandpit's E2B surface (docs/e2b.md). Expects the binary at $SANDPIT_BIN or
# <repo>/target/debug/sandpit. Installs the locked dependencies into compat/e2b/typescript/node_modules.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
export SANDPIT_BIN="${SANDPIT_BIN:-$repo/target/debug/sandpit}"
if [[ ! -x "$SANDPIT_BIN" ]]; then
    echo "compat/e2b/typescript/test.sh: sandpit binary not found at $SANDPIT_BIN (cargo build -p sandpit-cli)" >&2
    exit 1
fi

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
# A hung test must not hang CI: SIGINT after 10 minutes still lets node's test runner print its summary.
exec timeout --signal=INT --kill-after=30 600 node --test --test-reporter=spec "$@" e2b.test.mjs
