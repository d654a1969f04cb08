#!/usr/bin/env bash
# Fuzzes sandpit's untrusted-input decoders: the cargo-fuzz targets in fuzz/ (their bodies are in
# fuzz/harness/src/lib.rs: the daemon's and the agent's JSON request bodies with their validation, the
# WebSocket client frames, query strings and Last-Event-ID, signal names).
#
#   scripts/fuzz.sh [--quick | --long]
#
# --quick (the default, what CI runs): every target for FUZZ_SECONDS (20) seconds, without a sanitizer
#   (safe Rust: overflow checks and debug assertions are on, which is what finds bugs here). The whole
#   run takes about 3 minutes on 2 cores, cargo-fuzz install and build included; about 2 once cached.
# --long: every target for 5 minutes, with AddressSanitizer.
# FUZZ_SECONDS, FUZZ_TARGETS ("signal agent_request"), FUZZ_SANITIZER override the mode's defaults.
#
# Needs a nightly toolchain (`cargo +nightly`). cargo-fuzz is installed into target/tools on first use
# (`cargo install cargo-fuzz --locked`). The committed seeds in fuzz/corpus/<target>/ are read only; what
# libFuzzer finds goes to target/fuzz/corpus/<target>/. A crash or a hang (10 s per input) fails the
# run and prints the input's path (fuzz/artifacts/<target>/...). Reproduce it with
#   cargo +nightly fuzz run --fuzz-dir fuzz <target> <file>      (or, on stable:)
#   cargo run --manifest-path fuzz/Cargo.toml -p sandpit-fuzz-harness --bin replay -- --file <target> <file>
# then fix the product code and add the file to fuzz/corpus/<target>/ as a regression seed.
#
# Without nightly this says so loudly and only replays the corpus through the same target bodies on
# stable (fuzz/harness/src/bin/replay.rs): no fuzzing happens, and the last line says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

mode=quick
case "${1:-}" in
  "" | --quick) mode=quick ;;
  --long) mode=long ;;
  *)
    echo "usage: $0 [--quick | --long]" >&2
    exit 2
    ;;
esac
if [ "$mode" = quick ]; then
  seconds=${FUZZ_SECONDS:-20}
  sanitizer=${FUZZ_SANITIZER:-none}
else
  seconds=${FUZZ_SECONDS:-300}
  sanitizer=${FUZZ_SANITIZER:-address}
fi
all_targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^sandpit-fuzz$')
targets=${FUZZ_TARGETS:-$all_targets}
work=$root/target/fuzz
export CARGO_TERM_COLOR=never

replay() {
  cargo run --quiet --locked --manifest-path fuzz/Cargo.toml -p sandpit-fuzz-harness --bin replay \
    --target-dir "$work" -- fuzz/corpus
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  cat >&2 <<'EOF'

##########################################################################################
###  fuzz.sh: NO NIGHTLY TOOLCHAIN (`cargo +nightly` fails): NOT FUZZING.               ###
###  Replaying the committed corpus through the target bodies on stable instead.        ###
###  Install one with `rustup toolchain install nightly` to fuzz for real.              ###
##########################################################################################

EOF
  status=0
  replay || status=$?
  echo "fuzz.sh: corpus replay on stable: $([ "$status" -eq 0 ] && echo passed || echo FAILED); no fuzzing was done (no nightly)" >&2
  exit "$status"
fi

start=$SECONDS
# fuzz/Cargo.lock is committed: a stale one is an error here, as --locked is in the main workspace.
cargo +nightly fetch --locked --manifest-path fuzz/Cargo.toml --quiet

if [ ! -x target/tools/bin/cargo-fuzz ]; then
  echo "fuzz.sh: installing cargo-fuzz into target/tools" >&2
  cargo install cargo-fuzz --locked --root target/tools --quiet
fi
export PATH=$root/target/tools/bin:$PATH

fuzz=(cargo +nightly fuzz)
common=(--fuzz-dir fuzz --target-dir "$work" --sanitizer "$sanitizer")
echo "fuzz.sh: building the targets (sanitizer: $sanitizer)" >&2
"${fuzz[@]}" build "${common[@]}"

mkdir -p "$work/logs"
failed=()
summary=()
for t in $targets; do
  mkdir -p "$work/corpus/$t"
  log=$work/logs/$t.log
  echo "fuzz.sh: $t for ${seconds}s" >&2
  status=0
  "${fuzz[@]}" run "${common[@]}" "$t" "$work/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 ||
    status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo "fuzz.sh: $t FAILED (exit $status); last lines of $log:" >&2
    grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -n 25 >&2
    grep -o 'Test unit written to .*' "$log" | sed 's/^/fuzz.sh: crashing input: /' >&2 || true
    summary+=("$t: FAILED after ${runs:-?} runs")
  else
    summary+=("$t: ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}, no crash")
  fi
done

echo >&2
printf 'fuzz.sh: %s\n' "${summary[@]}" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} ($((SECONDS - start)) s)" >&2
  exit 1
fi
echo "fuzz.sh: $mode: $(echo "$targets" | wc -w) targets, no crash ($((SECONDS - start)) s)" >&2
