"""Image quality of a source frame: focus, exposure and a difference to a reference frame.

Measured on the uint8 frame the camera gave (``(H, W, 3)`` BGR or ``(H, W)`` grey),
before the model, by :func:`frame_quality` (Numba, CPU) or its CUDA twin
:func:`kanjian.kernels.quality_cuda.frame_quality_cuda`; both equal the NumPy/OpenCV
reference in ``tests/support/quality_reference.py``.

Definitions:

- **luma**: a grey frame's byte itself (the letterbox kernel replicates a grey byte to
  the model's three planes unchanged); a BGR pixel's BT.601 luma as OpenCV's
  ``cv2.cvtColor(COLOR_BGR2GRAY)`` computes it for uint8:
  ``(3735 B + 19235 G + 9798 R + 16384) >> 15``.
- **the sampled rows** (:func:`sample_rows`): every row (``rows=None``), or ``R`` rows
  spread evenly over the interior, the middle row of each of ``R`` equal bands of rows
  ``1 .. H-2``. Every column of a sampled row is measured. The Laplacian of a sampled
  row still reads the rows above and below it, so ``focus`` estimates the same
  quantity whatever ``R``; fewer rows read less of the frame and cost less (the
  letterbox reads a third of a 1080p frame's rows: reading all of them for the gate
  would cost more than the letterbox itself).
- **focus**: the variance of the 3x3 Laplacian of the luma (``cv2.Laplacian(luma,
  ksize=1)``: kernel ``[[0,1,0],[1,-4,1],[0,1,0]]``) over the sampled rows' interior
  pixels (``1 <= y <= H-2``, ``1 <= x <= W-2``), population variance, in luma levels
  squared. Sharp, textured frames score hundreds to thousands; blurred ones tens.
  0 when there is no interior pixel (fewer than 3 rows or columns).
- **exposure**: ``mean`` luma over the sampled rows (0-255); ``dark`` and ``bright``,
  the fractions of their pixels at or below ``low_clip`` and at or above ``high_clip``.
- **reference difference** (no part, wrong part): each sampled row is cut into
  segments of :data:`SEGMENT` pixels from the left (a partial segment at the right
  edge is left out); ``reference_diff`` is the mean over the segments of ``|segment
  mean luma - the reference frame's|``, in luma levels (0-255). A segment's mean hardly
  moves when the frame is blurred or noisy or the part shifts by a pixel or two, and
  moves a lot when the part is missing or another part lies there. Only a reference
  of the same size, measured on the same rows, compares.

All sums are exact integers (int64); the floats are made from them once, here.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kanjian.kernels.letterbox_cpu import _POOL, check_frame
from kanjian.kernels.quality_kernel import (
    BRIGHT,
    DARK,
    N_LAP,
    N_SUMS,
    SEGMENT,
    SUM_LAP,
    SUM_LAP2,
    SUM_Y,
    N,
    quality_kernel,
    quality_kernel_serial,
    reference_diff,
)
from kanjian.kernels.threads import kernel_threads

__all__ = [
    "SEGMENT",
    "FrameQuality",
    "QualityReference",
    "finish_quality",
    "frame_quality",
    "quality_reference",
    "quality_sums",
    "sample_rows",
    "warmup_quality",
]

#: below this many sampled pixels the serial kernel runs: waking Numba's pool costs
#: 60-120 us on a busy 2-core box, more than the work (PITFALLS.md)
PARALLEL_MIN_PIXELS = 1 << 20

_warm_lock = threading.Lock()


@dataclass(frozen=True)
class QualityReference:
    """A reference frame's segment means, for :attr:`FrameQuality.reference_diff`.

    Attributes:
        segment_means: ``(R, W // SEGMENT)`` float64, mean luma of each full segment
            of each sampled row.
        frame_hw: the reference frame's ``(height, width)``, pixels.
        rows: the ``rows`` it was measured with (``None``: every row).
    """

    segment_means: NDArray[np.float64]
    frame_hw: tuple[int, int]
    rows: int | None


@dataclass(frozen=True)
class FrameQuality:
    """The quality numbers of one frame (see the module docstring for definitions).

    Attributes:
        focus: variance of the Laplacian of the luma, luma levels squared.
        mean: mean luma, 0-255.
        dark: fraction of the sampled pixels with luma ``<= low_clip``, 0-1.
        bright: fraction of the sampled pixels with luma ``>= high_clip``, 0-1.
        reference_diff: mean absolute segment-mean difference to the reference, 0-255;
            ``None`` without a reference, or with one of another size or other rows,
            or a frame narrower than one segment.
        pixels: sampled pixels (exposure).
        focus_pixels: interior sampled pixels (focus).
        rows: rows sampled.
    """

    focus: float
    mean: float
    dark: float
    bright: float
    reference_diff: float | None
    pixels: int
    focus_pixels: int
    rows: int

    @property
    def clipped(self) -> float:
        """Fraction of the sampled pixels at either end of the range: ``dark + bright``."""
        return self.dark + self.bright

    def values(self) -> dict[str, float | int]:
        """The numbers as JSON-ready data (what the store keeps), rounded for people:
        focus and the means to 0.01, the fractions to 1e-6."""
        out: dict[str, float | int] = {
            "focus": round(self.focus, 2),
            "mean": round(self.mean, 2),
            "dark": round(self.dark, 6),
            "bright": round(self.bright, 6),
            "rows": self.rows,
        }
        if self.reference_diff is not None:
            out["reference_diff"] = round(self.reference_diff, 2)
        return out


def sample_rows(height: int, rows: int | None) -> NDArray[np.intp]:
    """The rows measured in a frame ``height`` rows high, ascending and distinct
    (a read-only array, shared: made once per height and ``rows``).

    ``None``: every row. ``R >= 1``: row ``1 + ((2 i + 1) (H - 2)) // (2 R)`` for
    ``i < R`` (the middle of each of ``R`` equal bands of the interior rows), fewer
    when the interior has fewer than ``R`` rows; a frame under 3 rows: every row.

    Raises:
        ValueError: ``rows`` is not ``None`` or a positive int.
    """
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise ValueError(f"rows must be None (every row) or an int >= 1, got {rows!r}")
    return _sample_rows(int(height), rows)


@functools.lru_cache(maxsize=64)
def _sample_rows(height: int, rows: int | None) -> NDArray[np.intp]:
    if rows is None or height < 3:
        ys = np.arange(height, dtype=np.intp)
    else:
        i = np.arange(rows, dtype=np.int64)
        ys = np.unique(1 + ((2 * i + 1) * (height - 2)) // (2 * rows)).astype(np.intp)
    ys.flags.writeable = False
    return ys


def _check_clips(low_clip: int, high_clip: int) -> tuple[int, int]:
    for name, v in (("low_clip", low_clip), ("high_clip", high_clip)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v <= 255:
            raise ValueError(f"{name} must be an int in [0, 255], got {v!r}")
    return int(low_clip), int(high_clip)  # one compiled signature, whatever int type came


def quality_sums(
    image: NDArray[np.uint8], rows: int | None = None, low_clip: int = 2, high_clip: int = 253
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The kernel's exact integer sums for ``image``: the parallel kernel for a large
    share of a frame when Numba's pool is free, else the serial one (see
    :func:`~kanjian.kernels.letterbox_cpu.letterbox_cpu` for why the pool is guarded).

    Returns:
        ``(sums, segments)``: ``(N_SUMS,)`` int64 (columns as in
        :mod:`kanjian.kernels.quality_kernel`) and ``(R, W // SEGMENT)`` int64 luma
        sums of each full segment of each sampled row.

    Raises:
        TypeError, ValueError: a bad image or argument (the message says which).
    """
    lo, hi = _check_clips(low_clip, high_clip)
    src = check_frame(image)
    h, w = src.shape[:2]
    ys = sample_rows(h, rows)
    channels = 1 if src.ndim == 2 else 3
    flat = src.reshape(h, w * channels)
    segments = np.empty((len(ys), w // SEGMENT), np.int64)
    threads = kernel_threads() if len(ys) * w >= PARALLEL_MIN_PIXELS else 1
    if threads > 1 and _POOL.acquire(blocking=False):
        try:
            sums = np.empty((threads, N_SUMS), np.int64)
            quality_kernel(flat, channels, ys, lo, hi, sums, segments, threads)
        finally:
            _POOL.release()
    else:
        sums = np.empty((1, N_SUMS), np.int64)
        quality_kernel_serial(flat, channels, ys, lo, hi, sums, segments, 1)
    total: NDArray[np.int64] = sums[0] if len(sums) == 1 else sums.sum(axis=0)
    return total, segments


def finish_quality(
    sums: NDArray[np.int64],
    segments: NDArray[np.int64],
    frame_hw: tuple[int, int],
    rows: int | None,
    reference: QualityReference | None = None,
) -> FrameQuality:
    """The numbers from the kernels' sums (the CPU and the CUDA kernel share this).

    The variance is ``(n * sum(L^2) - sum(L)^2) / n^2`` in Python's exact integers,
    rounded to float64 once, so the kernel's result carries no cancellation error.
    """
    s: list[int] = sums.tolist()  # Python ints: exact, unbounded
    n, n_lap = s[N], s[N_LAP]
    focus = (n_lap * s[SUM_LAP2] - s[SUM_LAP] ** 2) / (n_lap * n_lap) if n_lap else 0.0
    diff = None
    if (
        reference is not None
        and reference.frame_hw == frame_hw
        and reference.rows == rows
        and segments.size
    ):
        diff = float(reference_diff(segments, reference.segment_means))
    return FrameQuality(
        focus=float(focus),
        mean=s[SUM_Y] / n if n else 0.0,
        dark=s[DARK] / n if n else 0.0,
        bright=s[BRIGHT] / n if n else 0.0,
        reference_diff=diff,
        pixels=n,
        focus_pixels=n_lap,
        rows=len(segments),
    )


def frame_quality(
    image: NDArray[np.uint8],
    rows: int | None = None,
    low_clip: int = 2,
    high_clip: int = 253,
    reference: QualityReference | None = None,
) -> FrameQuality:
    """Focus, exposure and (with ``reference``) the difference to a reference frame.

    Args:
        image: ``(H, W, 3)`` uint8 BGR or ``(H, W)`` uint8 grey; a strided view is copied.
        rows: rows to sample (:func:`sample_rows`; ``None``: every row).
        low_clip, high_clip: luma levels counted as dark (``<=``) and bright (``>=``).
        reference: from :func:`quality_reference`; compared only when it has the
            frame's size and was measured with the same ``rows``.

    Raises:
        TypeError, ValueError: a bad image or argument (the message says which).
    """
    sums, segments = quality_sums(image, rows, low_clip, high_clip)
    return finish_quality(sums, segments, (image.shape[0], image.shape[1]), rows, reference)


def quality_reference(image: NDArray[np.uint8], rows: int | None = None) -> QualityReference:
    """The segment means of a reference frame (a good part, well lit), for
    :func:`frame_quality` with the same ``rows``.

    Raises:
        TypeError, ValueError: a bad image or ``rows``.
    """
    _, segments = quality_sums(image, rows)
    means: NDArray[np.float64] = segments / float(SEGMENT)
    return QualityReference(means, (image.shape[0], image.shape[1]), rows)


def warmup_quality() -> None:
    """Compile (or load from Numba's cache) both quality kernels for BGR and grey frames,
    so no compile time lands on the first gated frame."""
    with _warm_lock:
        threads = max(kernel_threads(), 1)
        ys = np.arange(4, dtype=np.intp)
        for frame in (np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8)):
            flat = frame.reshape(4, -1)
            ch = 1 if frame.ndim == 2 else 3
            segments = np.empty((4, 0), np.int64)
            sums = np.empty((1, N_SUMS), np.int64)
            quality_kernel_serial(flat, ch, ys, 2, 253, sums, segments, 1)
            reference_diff(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float64))
            if threads > 1 and _POOL.acquire(blocking=False):
                try:
                    sums = np.empty((threads, N_SUMS), np.int64)
                    quality_kernel(flat, ch, ys, 2, 253, sums, segments, threads)
                finally:
                    _POOL.release()
