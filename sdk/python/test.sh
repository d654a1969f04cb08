#!/usr/bin/env bash
# Runs the Python SDK's test suite against a real daemon built from this repository.
#
# Expects the Rust binary to be built already (`cargo build -p sandpit-cli`) at $SANDPIT_BIN or
# <repo>/target/debug/sandpit. Creates or reuses the virtualenv sdk/python/.venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export SANDPIT_BIN="${SANDPIT_BIN:-$repo/target/debug/sandpit}"

if [[ ! -x "$SANDPIT_BIN" ]]; then
    echo "sdk/python/test.sh: sandpit binary not found or not executable at $SANDPIT_BIN" >&2
    echo "  build it first: (cd $repo && cargo build -p sandpit-cli), or set SANDPIT_BIN" >&2
    exit 1
fi

python="${PYTHON:-python3}"
venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
cd "$repo"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e './sdk/python[test,dev]'

cd "$here"
# Static checks first (the generated blocking SDK is current, types, lint); their failure fails the run, but the
# tests still run after them.
static=0
# src/sandpit/_sync/ is generated from src/sandpit/_async/ by scripts/unasync.py and checked in: it must be what the
# script makes of the current sources.
generated="$(mktemp -d)"
if "$venv/bin/python" scripts/unasync.py --out "$generated" \
    && diff -ru -x __pycache__ src/sandpit/_sync "$generated"; then
    echo "generated blocking SDK (src/sandpit/_sync/): current"
else
    echo "src/sandpit/_sync/ is out of date: it is generated from src/sandpit/_async/, run scripts/unasync.py" >&2
    static=1
fi
rm -rf "$generated"
"$venv/bin/python" -m mypy || static=1
"$venv/bin/python" -m ruff check src tests scripts || static=1
[[ $static -eq 0 ]] && echo "static checks (unasync, mypy --strict, ruff): ok" || echo "static checks (unasync, mypy --strict, ruff): FAILED"

# A hung test must not hang CI: SIGINT after 10 minutes still lets pytest print its summary line.
rc=0
timeout --signal=INT --kill-after=30 600 "$venv/bin/python" -m pytest -o faulthandler_timeout=120 "$@" || rc=$?
if [[ $rc -eq 0 && $static -ne 0 ]]; then
    rc=1
fi
exit "$rc"
