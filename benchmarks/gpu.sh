#!/usr/bin/env bash
# The whole benchmark suite on a CUDA machine, offline, in one command:
#
#   benchmarks/gpu.sh [--quick] [any 'python -m benchmarks' option]
#
# 1. Installs the wheels carried in .whl/ (made beforehand by benchmarks/fetch_wheels.sh on
#    a machine with internet) into a private folder with 'pip install --no-index --no-deps':
#    nothing is downloaded. Without .whl/ it uses what the Python already has.
# 2. Makes 'import kanjian.<folder>' work from this checkout without building anything:
#    a folder of symlinks (kanjian/camera -> camera, ...) goes first on PYTHONPATH.
# 3. Prints what will run (GPU, Numba CUDA, ONNX Runtime's providers), then runs
#    'python -m benchmarks' under a time limit (KANJIAN_BENCH_LIMIT_S, default 470 s, so
#    the whole command stays under 8 minutes). Results: benchmarks/results/<host>-<date>/.
#
# Environment: PYTHON (default python3), KANJIAN_WHEELS (default .whl), KANJIAN_BENCH_SITE
# (default /tmp/kanjian-bench-site), KANJIAN_BENCH_LIMIT_S. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${KANJIAN_BENCH_SITE:-/tmp/kanjian-bench-site}
LIMIT=${KANJIAN_BENCH_LIMIT_S:-470}
t0=$(date +%s)

mkdir -p "$SITE"
shopt -s nullglob
wheels=("${KANJIAN_WHEELS:-.whl}"/*.whl)
if ((${#wheels[@]})); then
  echo "installing ${#wheels[@]} carried wheels into $SITE (offline)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${wheels[@]}"
fi

# kanjian's import root: the checkout's top-level folders under one 'kanjian' package
root="$SITE/kanjian-src"
mkdir -p "$root/kanjian"
echo '"""kanjian import root made by benchmarks/gpu.sh (symlinks into the checkout)."""' \
  >"$root/kanjian/__init__.py"
for d in camera kernels inference station training appliance_api; do
  ln -sfn "$PWD/$d" "$root/kanjian/$d"
done
export PYTHONPATH="$root:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 NUMBA_THREADING_LAYER=${NUMBA_THREADING_LAYER:-workqueue}

"$PY" - <<'EOF'
import importlib, subprocess
print("python", __import__("sys").version.split()[0])
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip())
except OSError:
    print("no nvidia-smi")
for mod in ("numpy", "numba", "cv2", "onnxruntime", "pydantic", "sqlite_utils", "ultralytics",
            "torch", "matplotlib", "kanjian.station.pipeline"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod:24s} {getattr(m, '__version__', 'ok')}")
    except Exception as e:  # say what is missing before the suite starts
        print(f"{mod:24s} MISSING: {type(e).__name__}: {e}")
import onnxruntime, numba.cuda
print("ORT providers:", onnxruntime.get_available_providers())
print("Numba CUDA available:", numba.cuda.is_available())
EOF

left=$((LIMIT - ($(date +%s) - t0)))
echo "running the suite (time limit ${left} s)"
status=0
timeout --signal=INT --kill-after=20 "$left" "$PY" -m benchmarks "$@" || status=$?
if ((status == 124)); then
  echo "the suite ran past ${LIMIT} s: rerun with --quick or --skip sections" >&2
fi
exit "$status"
