#!/usr/bin/env bash
# The hardening suite on its own (docs/reliability.md): escapes, abuse, faults, auth, bad input, fuzzing and
# load, against the real daemon and real isolated sandboxes. Needs root (CI runs it as root).
#
#   scripts/hardening.sh           the quick profile (what CI runs, spread over scripts/test.sh's stages)
#   scripts/hardening.sh --long    the long profile: fuzz targets for minutes each, load for 60 s (~30 min)
#
# Every part runs even when an earlier one failed; the exit status is non-zero if any failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile=--quick
case "${1:-}" in
  "" | --quick) ;;
  --long) profile=--long ;;
  *)
    echo "usage: $0 [--quick|--long]" >&2
    exit 2
    ;;
esac

./scripts/setup.sh || exit 1
export CARGO_TERM_COLOR=never
export SANDPIT_BIN="$root/target/debug/sandpit"

failed=()
part() {
  local name=$1
  shift
  echo
  echo "=== hardening: $name ==="
  local start=$SECONDS
  if "$@"; then
    echo "=== $name: ok ($((SECONDS - start)) s) ==="
  else
    failed+=("$name")
    echo "=== $name: FAILED ($((SECONDS - start)) s) ==="
  fi
}

part build cargo build --workspace --all-targets --locked
part build-agent scripts/build-agent.sh debug
# The tables in docs/reliability.md come from these tests' stderr (--nocapture).
part escapes cargo test -p sandpit-server --locked --test escape -- --nocapture
part abuse cargo test -p sandpit-server --locked --test isolate -- --nocapture abuse
part faults cargo test -p sandpit-server --locked --test faults -- --nocapture
part auth cargo test -p sandpit-server --locked --test api -- --nocapture every_
part bad-input cargo test -p sandpit-server --locked --test bad_input -- --nocapture
part schemathesis bash crates/sandpit-server/tests/schemathesis.sh
part fuzz scripts/fuzz.sh "$profile"
part load scripts/load.sh "$profile"

echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "hardening ($profile): FAILED: ${failed[*]}"
  exit 1
fi
echo "hardening ($profile): all parts passed"
