#!/usr/bin/env bash
# Install the kanjian runtime (no torch, no Ultralytics) into .venv and start the
# appliance on its embedded default: demo images, bundled NEU-DET model, SQLite
# under ./kanjian-data, the operator screen on http://127.0.0.1:8080/. Extra
# arguments go to `kanjian serve` (e.g. --port 8090).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/kanjian serve "$@"
