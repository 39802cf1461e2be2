"""The CUDA twin of the letterbox kernel against the NumPy reference (exact equality).

Two ways to run it:

- always: in Numba's CUDA simulator, in a subprocess, because
  ``NUMBA_ENABLE_CUDASIM`` is read once when Numba is first imported and must
  not leak into the rest of the suite. The simulator runs kernels in Python,
  so the frames are small.
- on a real GPU (``-m gpu``): the same checks plus camera-sized frames, a
  device-resident input and a caller-given device output.

Run this file as a script to do the simulator checks by hand:
``NUMBA_ENABLE_CUDASIM=1 python tests/test_kernels_cuda.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.reference import letterbox_reference

SMALL_CASES = [
    ((7, 9), (12, 10)),
    ((1, 1), (5, 4)),
    ((1, 13), (8, 8)),
    ((13, 1), (8, 8)),
    ((4, 4), (2, 2)),
    ((20, 3), (6, 9)),
    ((16, 24), (16, 16)),
    ((5, 5), (5, 5)),
]

CAMERA_CASES = [
    ((1080, 1920), (640, 640)),
    ((2048, 2448), (640, 640)),
    ((416, 416), (640, 640)),
    ((1, 2448), (640, 640)),
    ((333, 777), (480, 640)),
]


def _check_cases(cases: list[tuple[tuple[int, int], tuple[int, int]]]) -> int:
    """Compare letterbox_cuda with the reference for each case, BGR and grey; return the count."""
    from kanjian.kernels.letterbox_cuda import cuda, letterbox_cuda

    rng = np.random.default_rng(7)
    checked = 0
    for src_hw, dst_hw in cases:
        for grey in (False, True):
            shape = src_hw if grey else (*src_hw, 3)
            image = rng.integers(0, 256, size=shape, dtype=np.uint8)
            expected, _ = letterbox_reference(image, dst_hw)
            # host input, fresh device output
            got = letterbox_cuda(image, dst_hw).copy_to_host()
            assert np.array_equal(got, expected), (src_hw, dst_hw, grey, "host input")
            # device input, caller-given (1, 3, H, W) device output
            out = cuda.device_array((1, 3, *dst_hw), dtype=np.float32)
            back = letterbox_cuda(cuda.to_device(image), dst_hw, out=out)
            assert back is out
            assert np.array_equal(out.copy_to_host()[0], expected), (src_hw, dst_hw, grey)
            checked += 1
    with pytest.raises(TypeError, match="device array"):
        letterbox_cuda(np.zeros((4, 4, 3), np.uint8), (8, 8), out=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        letterbox_cuda(
            np.zeros((4, 4, 3), np.uint8), (8, 8), out=cuda.device_array((3, 8, 9), np.float32)
        )
    return checked


def test_cuda_twin_equals_reference_in_simulator() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONUNBUFFERED="1")
    # run as a script: the checkout's root on the path for ``tests.support``
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), repo) if p)
    proc = subprocess.run(
        [sys.executable, __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"simulator: checked {2 * len(SMALL_CASES)} cases" in proc.stdout, proc.stdout


def _real_cuda() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from kanjian.kernels.letterbox_cuda import cuda_available
    except Exception:
        return False
    return cuda_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _real_cuda(), reason="needs a CUDA device")
def test_cuda_twin_equals_reference_on_gpu() -> None:
    assert _check_cases(SMALL_CASES + CAMERA_CASES) == 2 * len(SMALL_CASES + CAMERA_CASES)


@pytest.mark.gpu
@pytest.mark.skipif(not _real_cuda(), reason="needs a CUDA device")
def test_cuda_twin_equals_cpu_kernel_on_gpu() -> None:
    from kanjian.kernels import letterbox_cpu
    from kanjian.kernels.letterbox_cuda import letterbox_cuda

    rng = np.random.default_rng(3)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 2449, size=2))
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        got = letterbox_cuda(image, (640, 640)).copy_to_host()
        assert np.array_equal(got, letterbox_cpu(image, (640, 640))), (h, w)


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        sys.exit("set NUMBA_ENABLE_CUDASIM=1 to run the simulator checks")
    n = _check_cases(SMALL_CASES)
    print(f"simulator: checked {n} cases")
