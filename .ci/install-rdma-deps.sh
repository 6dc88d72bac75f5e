#!/usr/bin/env bash
# Installs what the `rdma` feature of kascade-wire needs to build: cmake and
# libclang (ibverbs-sys builds its bundled rdma-core headers and runs bindgen),
# and rdma-core's libibverbs with libnl (linked at build time). No RDMA device
# is needed: without one, rdma:// fails at run time with a clear error.
# Idempotent: returns at once when everything is installed.
set -euo pipefail

PKGS=(cmake libclang-dev libibverbs-dev libnl-3-dev libnl-route-3-dev)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root apt-get install -y -q "${missing[@]}" >/dev/null
  }
fi
