#!/usr/bin/env bash
# The whole test suite, as README's quick start runs it and CI (.ci/run) calls it.
# It installs what the tests need, then: format check, clippy with warnings as
# errors, every test of every crate, and a quick smoke run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kascade-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1

step() { printf '\n=== %s\n' "$*"; }

step "Kafka clients for the compat tests (kcat, Python venv, kafkajs)"
bash .ci/install-clients.sh
export KASCADE_PYTHON="${KASCADE_PYTHON:-${KASCADE_VENV:-$HOME/.cache/kascade-venv}/bin/python}"
export KASCADE_NODE_MODULES="${KASCADE_NODE_MODULES:-$PWD/compat-tests/js/node_modules}"

step "toolchain components"
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  # The example WebAssembly lambda (examples/wasm-lambda) that the lambda tests build.
  rustup target add wasm32-unknown-unknown || echo "warning: could not add the wasm32-unknown-unknown target; the wasm lambda tests will say so"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "RDMA build dependencies (cmake, libclang, rdma-core)"
bash .ci/install-rdma-deps.sh

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo check -p kascade-wire --features rdma (builds without an RDMA device)"
cargo check -p kascade-wire --features rdma --locked

step "cargo clippy --features cuda (GPU support builds without a CUDA toolkit or a GPU)"
cargo clippy -p kascade-core -p kascade -p bench --all-targets --locked \
  --features kascade-core/cuda,kascade/cuda,bench/cuda -- -D warnings

step "NVRTC for the GPU tests that need no GPU (compile errors, the example's PTX)"
if nvrtc_dir=$(bash .ci/install-nvrtc.sh); then
  export KASCADE_NVRTC_DIR="$nvrtc_dir"
else
  echo "warning: NVRTC could not be installed; the GPU tests that need it will say they skipped"
fi

step "GPU tests with --features cuda (no GPU here: the off and no-driver paths, NVRTC; GPU cases skip)"
cargo test -p kascade --features cuda --locked --test gpu -- --nocapture

step "cargo build -p kascade (the binary the compat tests run)"
cargo build --locked -p kascade
export KASCADE_BIN="$CARGO_TARGET_DIR/debug/kascade"

step "cargo test"
cargo test --workspace --locked --no-fail-fast

step "benchmark smoke run (figures are informational; see bench/)"
cargo run --release --locked -p bench --bin engine -- --quick
cargo run --release --locked -p bench --bin pipeline -- --quick
# The native bench drives a release `kascade serve` (the lib is already built for bench: the binary adds ~20 s).
cargo build --release --locked -p kascade -p bench --bin kascade --bin native
KASCADE_BIN="$CARGO_TARGET_DIR/release/kascade" "$CARGO_TARGET_DIR/release/native" --quick
# The gpu bench needs a GPU (it says "no GPU: skipped" here): .ci/gpu-check.sh runs it on a GPU host.
