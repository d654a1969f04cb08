#!/usr/bin/env bash
# Installs what sandpit's build, tests and quick start need on a fresh Debian 12 machine, and nothing
# when it is already there. Idempotent; safe to run on every test run.
set -euo pipefail

need_apt=()
command -v busybox >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# Sandbox networking: the host-side egress firewall (nft); git for the base template's HTTPS clone.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need_apt+=(nftables)
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust (rustup) first: this machine kind ships it." >&2
  exit 1
fi
