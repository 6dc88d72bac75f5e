#!/usr/bin/env bash
# Installs the Kafka clients the compat tests run: kcat (Debian), a Python venv
# with confluent-kafka, kafka-python and aiokafka (PyPI), and kafkajs with its
# codecs (the npm registry) into compat-tests/js. Idempotent: a second run
# with everything in place checks versions and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${KASCADE_VENV:-$HOME/.cache/kascade-venv}"
REQS=compat-tests/python/requirements.txt

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# kcat, from Debian's packages; refresh the package lists only when the
# install cannot find it.
if ! command -v kcat >/dev/null 2>&1; then
  echo "installing kcat"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q kcat >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root apt-get install -y -q kcat >/dev/null
  }
fi

# The Python clients in a venv of their own; the requirements file's hash
# marks a venv as complete, so a re-run does not ask the registry again.
stamp="$VENV/.kascade-requirements"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing the Python clients into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  echo "$want" >"$stamp"
fi

# kafkajs and its codecs, exactly as package-lock.json pins them.
js=compat-tests/js
stamp="$js/node_modules/.kascade-lock"
want="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing kafkajs into $js/node_modules"
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
