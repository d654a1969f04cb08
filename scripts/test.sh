#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this script).
#
# Stages: the rustfmt and clippy gates, Rust unit and integration tests (agent, isolation, daemon, SDK, CLI; with the escape, abuse, fault,
# auth and bad-input suites), schemathesis against the daemon's OpenAPI document, the Python SDK suite, the
# TypeScript SDK suite, the stock E2B SDKs against the E2B surface, the quick benchmark profile (which checks that the benchmarks still run; it does not
# judge numbers), and the hardening suite's fuzz targets and load test in their quick profiles. Every stage
# runs even when an earlier one failed; the exit status is non-zero if any failed, and the last line sums
# them up.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

./scripts/setup.sh || exit 1

export CARGO_TERM_COLOR=never
# One build from scratch: incremental state would only take disk space (gigabytes) and time.
export CARGO_INCREMENTAL=0
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

# Gates: an unformatted file or a clippy warning (pedantic included, see Cargo.toml) fails the run.
stage fmt cargo fmt --all --check
stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
stage build cargo build --workspace --all-targets --locked
# The static agent beside target/debug/sandpit (sandpit-agent-static): templates without libc need it.
stage build-agent scripts/build-agent.sh debug
stage rust-tests cargo test --workspace --locked --no-fail-fast -- --test-threads=4
stage api-schemathesis bash crates/sandpit-server/tests/schemathesis.sh
[ -x sdk/python/test.sh ] && stage python-sdk sdk/python/test.sh
[ -x sdk/typescript/test.sh ] && stage typescript-sdk sdk/typescript/test.sh
# The web console (console/) in headless Chromium against the daemon; screenshots in console/test-artifacts/.
[ -x console/test.sh ] && stage console console/test.sh
# The stock E2B SDKs (pinned), unchanged, against the daemon's E2B surface (docs/e2b.md).
[ -x compat/e2b/python/test.sh ] && stage e2b-python compat/e2b/python/test.sh
[ -x compat/e2b/typescript/test.sh ] && stage e2b-typescript compat/e2b/typescript/test.sh
[ -x bench/run ] && stage bench-quick bench/run --quick
# The hardening suite's quick profile (scripts/hardening.sh --long runs the long one): the escape, abuse,
# fault, auth and bad-input tests ran in rust-tests; these are the fuzz targets and the load test.
stage fuzz-quick scripts/fuzz.sh --quick
if [ "$(id -u)" -eq 0 ]; then
  stage load-quick scripts/load.sh --quick
else
  echo "*** SKIPPED load-quick: the load test needs root (isolated sandboxes); CI runs it as root ***"
fi

echo
if [ "$failed" -gt 0 ]; then
  echo "failed stages: ${failed_stages[*]}"
fi
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
