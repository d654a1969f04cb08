#!/usr/bin/env bash
# Runs the stock E2B Python SDK (pinned in requirements.txt) against a real daemon built from this
# repository: sandpit's E2B surface (docs/e2b.md). Expects the binary at $SANDPIT_BIN or
# <repo>/target/debug/sandpit. Creates or reuses the virtualenv compat/e2b/python/.venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
export SANDPIT_BIN="${SANDPIT_BIN:-$repo/target/debug/sandpit}"
if [[ ! -x "$SANDPIT_BIN" ]]; then
    echo "compat/e2b/python/test.sh: sandpit binary not found at $SANDPIT_BIN (cargo build -p sandpit-cli)" >&2
    exit 1
fi

python="${PYTHON:-python3}"
venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cd "$here"
# A hung test must not hang CI: SIGINT after 10 minutes still lets pytest print its summary line.
exec timeout --signal=INT --kill-after=30 600 "$venv/bin/python" -m pytest -o faulthandler_timeout=120 "$@"
