#!/usr/bin/env bash
# Installs NVRTC, the CUDA C compiler GPU lambdas are compiled with, from its
# PyPI wheel (nvidia-cuda-nvrtc, CUDA 13.0) into the compat tests' venv, and
# prints the directory of libnvrtc.so.13. NVRTC runs on the CPU: with it the
# GPU tests check, without a GPU, that a compile error comes back with NVRTC's
# log and that the committed PTX of the example is its source compiled.
# Idempotent; the PTX test expects this exact release (13.0.88).
set -euo pipefail
VENV="${KASCADE_VENV:-$HOME/.cache/kascade-venv}"
VERSION=13.0.88
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
dir=$("$VENV/bin/python" - <<'PY'
import glob, site
for s in site.getsitepackages():
    for d in glob.glob(s + "/nvidia/cu13/lib"):
        print(d)
PY
)
if [ -z "$dir" ] || [ ! -e "$dir/libnvrtc.so.13" ] || \
   [ "$("$VENV/bin/python" -m pip show nvidia-cuda-nvrtc 2>/dev/null | sed -n 's/^Version: //p')" != "$VERSION" ]; then
  echo "installing nvidia-cuda-nvrtc==$VERSION into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "nvidia-cuda-nvrtc==$VERSION" >&2
  dir=$("$VENV/bin/python" -c 'import glob, site; print(next(d for s in site.getsitepackages() for d in glob.glob(s + "/nvidia/cu13/lib")))')
fi
echo "$dir"
