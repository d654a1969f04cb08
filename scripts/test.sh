#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this script).
#
# Stages: Rust unit and integration tests (agent, isolation, daemon, SDK, CLI), schemathesis against the
# daemon's OpenAPI document, the Python SDK suite, the TypeScript SDK suite, and the quick benchmark profile (which checks that the benchmarks still run; it
# does not judge numbers). Every stage runs even when an earlier one failed; the exit status is non-zero
# if any failed, and the last line sums them up.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

./scripts/setup.sh || exit 1

export CARGO_TERM_COLOR=never
export SANDPIT_BIN="$root/target/debug/sandpit"

passed=0
failed=0
failed_stages=()
stage() {
  local name=$1
  shift
  echo
  echo "=== stage: $name ==="
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== stage $name: ok ($((SECONDS - start)) s) ==="
  else
    failed=$((failed + 1))
    failed_stages+=("$name")
    echo "=== stage $name: FAILED ($((SECONDS - start)) s) ==="
  fi
}

stage build cargo build --workspace --all-targets --locked
stage rust-tests cargo test --workspace --locked -- --test-threads=4
stage api-schemathesis bash crates/sandpit-server/tests/schemathesis.sh
[ -x sdk/python/test.sh ] && stage python-sdk sdk/python/test.sh
[ -x sdk/typescript/test.sh ] && stage typescript-sdk sdk/typescript/test.sh
[ -x bench/run ] && stage bench-quick bench/run --quick

echo
if [ "$failed" -gt 0 ]; then
  echo "failed stages: ${failed_stages[*]}"
fi
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
