#!/usr/bin/env bash
# Download, on a machine with internet, the wheels that benchmarks/gpu.sh installs on an
# offline CUDA machine (x86-64, CPython 3.12 by default), into .whl/ (git-ignored).
#
#   benchmarks/fetch_wheels.sh [DEST]          # DEST defaults to .whl
#   GPU_PYTHON=3.11 benchmarks/fetch_wheels.sh # another Python on the GPU machine
#   WITH_ORT_GPU=1 benchmarks/fetch_wheels.sh  # also onnxruntime-gpu (hundreds of MB)
#
# Only what the lent CUDA machines lack is fetched (their image has numpy, numba,
# numba-cuda, torch, torchvision, opencv, matplotlib, onnx, onnxruntime (CPU), pyyaml,
# typer, rich, pillow, scipy, psutil, requests...): kanjian's runtime needs pydantic and
# sqlite-utils; the comparisons need Ultralytics. Versions are the ones installed in this
# checkout's venv, so both machines run the same code. kanjian itself is not a wheel:
# gpu.sh links the checkout's folders into an import root (like .mypy/kanjian).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${1:-.whl}
GPU_PYTHON=${GPU_PYTHON:-3.12}
mkdir -p "$DEST"

names=(pydantic pydantic-core annotated-types typing-inspection typing-extensions
       sqlite-utils sqlite-fts4 click-default-group tabulate
       ultralytics ultralytics-thop)
if [[ "${WITH_ORT_GPU:-0}" == 1 ]]; then names+=(onnxruntime-gpu); fi

specs=()
for n in "${names[@]}"; do
  v=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$n")
  specs+=("$n==$v")
done

"$PY" -m pip download --no-deps --only-binary=:all: \
  --python-version "$GPU_PYTHON" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${specs[@]}"

du -ch "$DEST"/*.whl | tail -1
echo "carry $DEST to the GPU machine (it counts towards the 64 MiB a call may carry)"
