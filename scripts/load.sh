#!/usr/bin/env bash
# The load test (docs/reliability.md, "Load"): 100 sandboxes, each with 10 streaming commands running at
# once, every byte of every stream checked. `sandpit-bench load` starts its own daemon (isolate backend,
# temporary state dir, its own key), deletes every sandbox at the end (also on failure and Ctrl-C) and
# exits non-zero on any error or any byte out of place. Needs root.
#
#   scripts/load.sh            quick: 100 x 10 streams for 10 s on the debug build (what CI runs; < 3 min)
#   scripts/load.sh --long     long: 100 x 10 streams for 60 s on the release build
#
# Results: bench/results/load-quick.json, bench/results/load-long.json. Further arguments go to
# `sandpit-bench load` (see `sandpit-bench load --help`), e.g. `scripts/load.sh --quick --transport ws`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile=quick
case "${1:-}" in
  --quick) shift ;;
  --long)
    profile=long
    shift
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "load: needs root (sandboxes use the isolate backend)" >&2
  exit 1
fi

if [ "$profile" = quick ]; then
  # The debug build is what CI already has: the quick run proves correctness under load, not speed.
  build=debug
  duration=10s
  cargo build --locked -p sandpit-cli -p sandpit-bench
  scripts/build-agent.sh debug
else
  build=release
  duration=60s
  cargo build --release --locked -p sandpit-cli -p sandpit-bench
  scripts/build-agent.sh release
fi
mkdir -p bench/results
exec "target/$build/sandpit-bench" load --profile "$profile" \
  --sandboxes 100 --streams 10 --duration "$duration" \
  --bin "target/$build/sandpit" --out "bench/results/load-$profile.json" "$@"
