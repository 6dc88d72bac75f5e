#!/usr/bin/env bash
# The GPU checks of issue 6, in two halves, because the GPU host has no Rust
# toolchain and no network:
#
#   bash .ci/gpu-check.sh build [BUNDLE]   on the development machine: builds,
#       with the `cuda` feature, the broker, the GPU test binaries and the GPU
#       benchmark, prints their paths, and packs them stripped into BUNDLE
#       (default target/gpu-bundle.tar.gz, ignored by git: carry it).
#   bash .ci/gpu-check.sh run [BUNDLE]     on the GPU host: unpacks BUNDLE and
#       runs the GPU tests (broker/tests/gpu.rs through a real `kascade serve`,
#       compat-tests/tests/gpu.rs with librdkafka) and the benchmark
#       (bench/src/bin/gpu.rs). Outputs go to stdout and, when $OUT is set,
#       to $OUT/gpu-check/. Exit status 0 only when every test passed and none
#       skipped for want of a GPU.
#
# Options of `run` (env): GPU_CHECK_QUICK=1 for a short benchmark;
# KASCADE_NVRTC_DIR=<dir of libnvrtc.so.13> when NVRTC is not on the library
# path (without NVRTC the tests deploy the committed PTX and the compile-error
# test skips, which is allowed).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
bundle="${2:-target/gpu-bundle.tar.gz}"

# The test harness executable cargo's JSON messages name (profile "test": true).
executable() {
  grep '"test":true' | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4
}

build() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kascade-target}"
  echo "=== building with --features cuda (release)" >&2
  local kascade broker_tests compat_tests bench
  cargo build --release --locked -p kascade --features cuda --bin kascade >&2
  kascade="$CARGO_TARGET_DIR/release/kascade"
  broker_tests=$(cargo test --release --locked -p kascade --features cuda --test gpu --no-run --message-format=json | executable)
  compat_tests=$(cargo test --release --locked -p compat-tests --test gpu --no-run --message-format=json | executable)
  cargo build --release --locked -p bench --features cuda --bin gpu >&2
  bench="$CARGO_TARGET_DIR/release/gpu"
  echo "built:"
  for f in "$kascade" "$broker_tests" "$compat_tests" "$bench"; do
    echo "  $f ($(du -h "$f" | cut -f1))"
  done
  local dir
  dir=$(mktemp -d)
  cp "$kascade" "$dir/kascade"
  cp "$broker_tests" "$dir/broker-gpu-tests"
  cp "$compat_tests" "$dir/compat-gpu-tests"
  cp "$bench" "$dir/bench-gpu"
  strip "$dir"/*
  git rev-parse HEAD > "$dir/COMMIT"
  mkdir -p "$(dirname "$bundle")"
  tar -C "$dir" -czf "$bundle" .
  rm -rf "$dir"
  echo "bundle: $bundle ($(du -h "$bundle" | cut -f1)); on the GPU host: bash .ci/gpu-check.sh run $bundle"
}

run() {
  local dir out status=0
  if [ -d "$bundle" ]; then
    dir="$bundle"
  else
    dir=$(mktemp -d)
    tar -C "$dir" -xzf "$bundle"
  fi
  out="${OUT:-$(mktemp -d)}/gpu-check"
  mkdir -p "$out"
  echo "=== bundle of commit $(cat "$dir/COMMIT" 2>/dev/null || echo unknown)"
  echo "=== host"
  { nvidia-smi || echo "nvidia-smi: not found"; } 2>&1 | tee "$out/nvidia-smi.txt"
  uname -a; nproc; free -g | head -2
  # Where the driver and NVRTC may be, beside the default library path.
  local paths=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
           /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -d "$d" ] && paths="$paths:$d"
  done
  if [ -z "${KASCADE_NVRTC_DIR:-}" ]; then
    for d in ${paths//:/ }; do
      if [ -e "$d/libnvrtc.so.13" ]; then export KASCADE_NVRTC_DIR="$d"; break; fi
    done
  fi
  export LD_LIBRARY_PATH="${KASCADE_NVRTC_DIR:-}${paths}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "NVRTC: ${KASCADE_NVRTC_DIR:-not found (the tests deploy the committed PTX)}"
  export KASCADE_SERVE_BIN="$dir/kascade" KASCADE_BIN="$dir/kascade" KASCADE_LOG=info RUST_BACKTRACE=1

  echo "=== broker GPU tests (broker/tests/gpu.rs)"
  timeout 300 "$dir/broker-gpu-tests" --test-threads=1 --nocapture 2>&1 | tee "$out/broker-gpu-tests.txt" || status=1
  echo "=== Kafka GPU pipeline test (compat-tests/tests/gpu.rs, librdkafka)"
  timeout 300 "$dir/compat-gpu-tests" --test-threads=1 --nocapture 2>&1 | tee "$out/compat-gpu-tests.txt" || status=1
  if grep -h "skipped: no GPU" "$out"/*-tests.txt; then
    echo "FAIL: a GPU test found no GPU on the GPU host (see above)"
    status=1
  fi
  echo "=== benchmark (bench/src/bin/gpu.rs)"
  local quick=()
  [ "${GPU_CHECK_QUICK:-0}" = 1 ] && quick=(--quick)
  timeout 300 "$dir/bench-gpu" "${quick[@]}" 2>&1 | tee "$out/bench-gpu.txt" || status=1
  if grep -q "^no GPU: skipped" "$out/bench-gpu.txt"; then
    echo "FAIL: the benchmark found no GPU"
    status=1
  fi
  echo "=== outputs in $out; status $status"
  return $status
}

case "$mode" in
  build) build ;;
  run) run ;;
  *) echo "usage: bash .ci/gpu-check.sh build|run [BUNDLE]" >&2; exit 2 ;;
esac
