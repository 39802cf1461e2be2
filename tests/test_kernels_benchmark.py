"""The preprocessing benchmark runs end to end and reports every method (no timing asserts)."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import pytest

_cfg = os.path.join(tempfile.gettempdir(), "kanjian-test-ultralytics")
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", _cfg)
os.environ.setdefault("MPLCONFIGDIR", _cfg)
pytest.importorskip("ultralytics")
# benchmarks/ is not installed; `pytest` (unlike `python -m pytest`) leaves the repo off sys.path
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.preprocess import FLOOR, ULTRALYTICS, Timing, run_benchmark  # noqa: E402


def _current_layer() -> str:
    import numba

    try:
        return str(getattr(numba, "threading_layer")())  # noqa: B009 (untyped in numba)
    except ValueError:
        return "workqueue"


def test_benchmark_reports_every_method_and_the_floor() -> None:
    timings = run_benchmark(
        sizes=[(48, 64), (31, 17)],
        dst_hw=(32, 32),
        repeats=3,
        warmup_calls=1,
        bandwidth_gb_s=10.0,
        layer=_current_layer(),  # the suite may already have started Numba's pool
    )
    methods = {t.method for t in timings}
    assert {"kanjian CPU, 1 thread", "cv2 resize+border+blob", FLOOR} <= methods
    assert any(m.startswith(ULTRALYTICS) for m in methods)
    assert {t.src_hw for t in timings} == {(48, 64), (31, 17)}
    for t in timings:
        assert isinstance(t, Timing)
        assert t.median_ms > 0 and t.p10_ms <= t.median_ms <= t.p90_ms
        assert t.cpu_ms >= 0
        assert t.repeats == (0 if t.method == FLOOR else 3)
    ul = [t for t in timings if t.method.startswith(ULTRALYTICS) and t.src_hw == (48, 64)]
    assert max(t.speedup_vs_ultralytics for t in ul) == 1.0
    floor = next(t for t in timings if t.method == FLOOR and t.src_hw == (48, 64))
    assert floor.median_ms == pytest.approx((48 * 64 * 3 + 3 * 32 * 32 * 4) / 10.0e9 * 1e3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        floor.median_ms = 0.0  # type: ignore[misc]
