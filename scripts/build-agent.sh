#!/usr/bin/env bash
# Builds the in-sandbox agent alone (`sandpit-agent`), linked statically (glibc with crt-static: this
# machine's toolchain has no musl target), and installs it beside the `sandpit` binary as
# `sandpit-agent-static`, where the daemon looks for it: with it, a template needs no libc at all.
#   scripts/build-agent.sh [debug|release]   (default: debug)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-debug}"
case "$profile" in
  debug) flags=() ;;
  release) flags=(--release) ;;
  *) echo "build-agent: unknown profile $profile (debug or release)" >&2; exit 2 ;;
esac
target="$(rustc -vV | sed -n 's/^host: //p')"
case "$target" in
  *-linux-gnu) ;;
  *) echo "build-agent: host target $target is not a linux-gnu one; cannot link the agent statically" >&2; exit 1 ;;
esac
# Only the target's crates get crt-static (with --target, build scripts and proc macros stay dynamic).
export "CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C target-feature=+crt-static -C relocation-model=static"
cargo build --locked "${flags[@]}" -p sandpit-agent-cli --bin sandpit-agent --target "$target"
out="target/$target/$profile/sandpit-agent"
if readelf -lW "$out" | grep -q 'INTERP'; then
  echo "build-agent: $out came out dynamically linked" >&2
  exit 1
fi
mkdir -p "target/$profile"
# Replaced, never written in place: a running daemon may have the old one bound into sandboxes.
cp "$out" "target/$profile/sandpit-agent-static.new"
mv -f "target/$profile/sandpit-agent-static.new" "target/$profile/sandpit-agent-static"
echo "build-agent: target/$profile/sandpit-agent-static (static)"
