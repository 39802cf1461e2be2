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
# ONNX Runtime: one build per machine, by an extra (docs/deploy.md, "Install"). Keep the
# one .venv has; else [cuda] where an NVIDIA GPU answers, [jetson] on a Jetson (install
# JetPack's onnxruntime-gpu into .venv: the station says how), [cpu] elsewhere.
# KANJIAN_EXTRAS overrides, e.g. KANJIAN_EXTRAS=cpu,plc bash scripts/start.sh
has() { .venv/bin/python -m pip show -q "$1" >/dev/null 2>&1; }
if [ -z "${KANJIAN_EXTRAS:-}" ]; then
  if has onnxruntime-gpu; then KANJIAN_EXTRAS=cuda
  elif has onnxruntime; then KANJIAN_EXTRAS=cpu
  elif [ -e /etc/nv_tegra_release ]; then KANJIAN_EXTRAS=jetson
  elif [ "$(uname -m)" = x86_64 ] && nvidia-smi -L >/dev/null 2>&1; then KANJIAN_EXTRAS=cuda
  else KANJIAN_EXTRAS=cpu
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${KANJIAN_EXTRAS}]"
exec .venv/bin/kanjian serve "$@"
