"""Start-up behaviour of kanjian.kernels, each in a fresh interpreter.

- importing the package starts no threads and does not import numba.cuda;
- warmup() compiles on a cold Numba cache and loads everything from it on a
  warm one (so the JIT never lands on the first inspection of a restart);
- configure_threads() really selects the workqueue layer, and refuses to
  switch once the pool runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import json, sys
import numba
import kanjian.kernels as k

report = {"cuda_imported": "numba.cuda" in sys.modules}
try:
    numba.threading_layer()
    report["pool_started_by_import"] = True
except ValueError:
    report["pool_started_by_import"] = False
cfg = k.configure_threads(2, layer="workqueue")
w = k.warmup(src_hws=[(1080, 1920)])
report.update(
    threads=cfg.threads,
    layer=numba.threading_layer(),
    hits=w.cache_hits,
    misses=w.cache_misses,
    from_cache=w.from_cache,
    seconds=w.seconds,
)
try:
    k.configure_threads(2, layer="omp")
    report["switch"] = "allowed"
except RuntimeError as e:
    report["switch"] = str(e)
print("REPORT " + json.dumps(report))
"""


def _probe(cache_dir: Path) -> dict[str, object]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), NUMBA_NUM_THREADS="2")
    env.pop("NUMBA_THREADING_LAYER", None)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    report: dict[str, object] = json.loads(line[len("REPORT ") :])
    return report


def test_cold_then_warm_start(tmp_path: Path) -> None:
    cold = _probe(tmp_path)
    assert cold["cuda_imported"] is False
    assert cold["pool_started_by_import"] is False
    assert cold["threads"] == 2
    assert cold["layer"] == "workqueue"
    assert isinstance(cold["misses"], int) and cold["misses"] >= 2  # serial + parallel kernel
    assert cold["hits"] == 0
    assert "workqueue" in str(cold["switch"]) and "before the first kernel" in str(cold["switch"])
    assert any(tmp_path.rglob("*.nbi")), "Numba wrote no cache index"

    warm = _probe(tmp_path)
    assert warm["misses"] == 0
    assert isinstance(warm["hits"], int) and warm["hits"] >= 2
    assert warm["from_cache"] is True


def test_unconfigured_use_starts_numba_on_workqueue() -> None:
    """Without configure_threads the first kernel must not start Numba's spinning omp layer."""
    code = (
        "import numpy as np, numba\n"
        "from kanjian.kernels import letterbox_cpu\n"
        "letterbox_cpu(np.zeros((10, 10, 3), np.uint8), (8, 8))\n"
        "print('LAYER', numba.threading_layer())\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    env.pop("NUMBA_THREADING_LAYER", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LAYER workqueue" in proc.stdout
