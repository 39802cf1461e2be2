"""The CUDA twin of the image-quality kernel against the NumPy/OpenCV reference.

Its sums are integers, compared exactly with the reference's; its floats are made from
them by the same code as the CPU kernel's, so its :class:`FrameQuality` equals the CPU
kernel's field for field (``==``), and the reference's within ``rel=1e-12`` (see
``tests/test_quality_kernel.py`` for why not exactly).

Run like ``tests/test_kernels_cuda.py``: always in Numba's CUDA simulator, in a
subprocess (``NUMBA_ENABLE_CUDASIM`` is read once, when Numba is first imported), on
small frames (the simulator runs every thread in Python); on a real GPU (``-m gpu``)
also camera-sized frames and a frame already on the device. By hand:
``NUMBA_ENABLE_CUDASIM=1 python tests/test_quality_cuda.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.quality_reference import quality_reference_numbers

# odd sizes, under 3 rows / columns, narrower than a segment, more than one block each way
SMALL_CASES: list[tuple[tuple[int, int], int | None]] = [
    ((1, 1), None),
    ((2, 40), None),
    ((9, 2), None),
    ((37, 53), None),
    ((37, 53), 3),
    ((20, 70), 16),
    ((5, 33), 1),
]
CAMERA_CASES: list[tuple[tuple[int, int], int | None]] = [
    ((480, 640), None),
    ((1080, 1920), 8),
    ((1080, 1920), None),
    ((2048, 2448), 16),
    ((997, 1283), 7),
]


def _check_cases(cases: list[tuple[tuple[int, int], int | None]]) -> int:
    """Compare frame_quality_cuda with the reference and the CPU kernel, BGR and grey."""
    from kanjian.kernels.letterbox_cuda import cuda
    from kanjian.kernels.quality import frame_quality, quality_reference
    from kanjian.kernels.quality_cuda import frame_quality_cuda

    rng = np.random.default_rng(11)
    checked = 0
    for hw, rows in cases:
        for grey in (False, True):
            shape = hw if grey else (*hw, 3)
            image = rng.integers(0, 256, size=shape, dtype=np.uint8)
            other = rng.integers(0, 256, size=shape, dtype=np.uint8)
            ref = quality_reference(other, rows)
            got = frame_quality_cuda(image, rows, reference=ref)
            assert got == frame_quality(image, rows, reference=ref), (hw, rows, grey)
            r = quality_reference_numbers(image, rows)
            assert (got.pixels, got.focus_pixels) == (r.pixels, r.focus_pixels)
            assert got.focus == pytest.approx(r.focus, rel=1e-12, abs=1e-12)
            assert got.mean == pytest.approx(r.mean, rel=1e-12, abs=1e-12)
            assert (got.dark, got.bright) == pytest.approx((r.dark, r.bright), rel=1e-12)
            want = r.reference_diff(quality_reference_numbers(other, rows))
            assert (got.reference_diff is None) == (want is None), (hw, rows)
            if want is not None:
                assert got.reference_diff == pytest.approx(want, rel=1e-12)
            # a frame already on the device, on a stream
            stream = cuda.stream()
            on_device = frame_quality_cuda(cuda.to_device(image), rows, stream=stream)
            assert on_device == frame_quality(image, rows), (hw, rows, grey, "device input")
            checked += 1
    with pytest.raises(ValueError, match="low_clip"):
        frame_quality_cuda(np.zeros((4, 4), np.uint8), None, -1)
    with pytest.raises(TypeError, match="uint8"):
        frame_quality_cuda(np.zeros((4, 4), np.float32))
    return checked


def test_cuda_twin_equals_reference_in_simulator() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONUNBUFFERED="1")
    repo = str(Path(__file__).resolve().parents[1])  # for ``tests.support``
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), repo) if p)
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900
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


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        sys.exit("set NUMBA_ENABLE_CUDASIM=1 to run the simulator checks")
    n = _check_cases(SMALL_CASES)
    print(f"simulator: checked {n} cases")
