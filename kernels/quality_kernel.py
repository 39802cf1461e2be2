"""The CPU image-quality kernel: the Numba code of :func:`~kanjian.kernels.quality.frame_quality`.

Numba's on-disk cache is keyed on this file alone: the one helper it calls from
another module (``prefetch``, in ``_loads.py``) is hashed in ``_DEPENDS_SHA256``
below, and ``tests/test_kernel_cache_guard.py`` fails until that is updated.

What it sums, on the uint8 source frame (the definitions are in
:mod:`kanjian.kernels.quality`): over the sampled rows, every pixel's luma, the
pixels at or below ``low`` and at or above ``high``, and the luma of each full
:data:`SEGMENT`-pixel segment; over their interior pixels the 3x3 Laplacian of the
luma and its square. Every sum is an exact integer; the floats are made from them
afterwards, once.

Parallel over shares of the sampled rows: a share belongs to one thread, which
writes its rows' segments and its own row of ``sums``, so no two threads write the
same place. A luma row is computed once into one of three row buffers tagged with
its row index (with every row sampled, each row's luma serves three samples). The
loops run in int32 lanes and vectorise (the BGR luma compiles to ``vpmaddwd``);
a sampled row then costs about 0.8 ns a pixel in cache, and the rows of the next
samples are prefetched so that their fetch overlaps the arithmetic.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from kanjian.kernels._loads import prefetch
from kanjian.kernels.cpu_kernel import _named_copy

#: sha256 of the files whose Numba functions this kernel calls; update after editing
#: them (tests/test_kernel_cache_guard.py prints the new values) so this file changes too
_DEPENDS_SHA256 = {
    "_loads.py": "f61cdacb9762bfa43afad66c9811a9cff6d4d88580de1ae865aaf529f43ce27f",
}

#: length of the row segments whose mean luma the reference difference compares, pixels
SEGMENT = 32
#: columns of ``sums``: sampled pixels, their luma sum, dark pixels, bright pixels,
#: interior sampled pixels, their Laplacian sum, their Laplacian's sum of squares
N, SUM_Y, DARK, BRIGHT, N_LAP, SUM_LAP, SUM_LAP2 = range(7)
N_SUMS = 7

# OpenCV's COLOR_BGR2GRAY for uint8 (BT.601 weights 0.114, 0.587, 0.299 in 15-bit fixed
# point, rounded): equal to cv2.cvtColor for all 2**24 colours (tests/test_quality_kernel.py)
_WB = np.int32(3735)
_WG = np.int32(19235)
_WR = np.int32(9798)
_HALF = np.int32(1 << 14)


@njit(cache=True, nogil=True)
def _luma_row(src: NDArray[np.uint8], channels: int, y: int, out: NDArray[np.int32]) -> None:
    """Luma of source row ``y`` (``(H, W * channels)`` uint8) into ``out`` ``(W,)`` int32."""
    row = src[y]
    if channels == 1:
        for x in range(out.shape[0]):
            out[x] = np.int32(row[x])
    else:
        for x in range(out.shape[0]):
            b = np.int32(row[3 * x])
            g = np.int32(row[3 * x + 1])
            r = np.int32(row[3 * x + 2])
            out[x] = np.int32(b * _WB + g * _WG + r * _WR + _HALF) >> 15


@njit(cache=True, nogil=True)
def _slot(tags: NDArray[np.intp], want: int, keep_a: int, keep_b: int) -> tuple[int, bool]:
    """The buffer holding row ``want``, or one to compute it into (not holding
    ``keep_a`` / ``keep_b``); and whether it must be computed."""
    for i in range(3):
        if tags[i] == want:
            return i, False
    for i in range(3):
        if tags[i] != keep_a and tags[i] != keep_b:
            tags[i] = want
            return i, True
    return 0, True  # unreachable: three buffers, two kept


@njit(cache=True, nogil=True)
def _prefetch_rows(src: NDArray[np.uint8], y: int) -> None:
    """Ask for rows ``y - 1 .. y + 1`` (those that exist) ahead of their use, a cache line
    at a time: a sample touches three short row streams that the hardware prefetcher
    picks up late, and this overlaps their fetch with the current sample's arithmetic."""
    for r in range(max(y - 1, 0), min(y + 2, src.shape[0])):
        row = src[r]
        for o in range(0, row.shape[0], 64):
            prefetch(row, o)


@njit(cache=True, nogil=True)
def _exposure_row(
    cur: NDArray[np.int32], low: int, high: int, acc: NDArray[np.int64], out: NDArray[np.int64]
) -> None:
    """Add one luma row to the exposure sums ``out[N:BRIGHT+1]`` and the segment sums
    ``acc`` (``acc[-1]``: the partial segment at the right edge).

    Branch-free loops in int32 lanes (Numba widens every integer operation to int64;
    the ``np.int32(...)`` wraps let LLVM narrow them back and vectorise 8 wide): a row's
    sums fit, ``255 * W < 2**31`` for any camera.
    """
    w = cur.shape[0]
    gw = acc.shape[0] - 1
    lo = np.int32(low)
    hi = np.int32(high)
    dark = np.int32(0)
    bright = np.int32(0)
    for x in range(w):
        v = cur[x]
        dark = np.int32(dark + np.int32(v <= lo))
        bright = np.int32(bright + np.int32(v >= hi))
    total = np.int64(0)
    for cx in range(gw):
        s = np.int32(0)
        x0 = cx * SEGMENT
        for x in range(SEGMENT):  # a constant trip count: unrolled and vectorised
            s = np.int32(s + cur[x0 + x])
        acc[cx] += s
        total += s
    s = np.int32(0)
    for x in range(gw * SEGMENT, w):  # the partial segment at the right edge
        s = np.int32(s + cur[x])
    acc[gw] += s
    total += s
    out[N] += w
    out[SUM_Y] += total
    out[DARK] += dark
    out[BRIGHT] += bright


@njit(cache=True, nogil=True)
def _laplacian_row(
    up: NDArray[np.int32], cur: NDArray[np.int32], down: NDArray[np.int32], out: NDArray[np.int64]
) -> None:
    """Add the Laplacian of the interior columns of one row to ``out[N_LAP:]``."""
    w = cur.shape[0]
    s = np.int64(0)
    s2 = np.int64(0)
    for x in range(1, w - 1):
        lap = np.int32(up[x] + down[x] + cur[x - 1] + cur[x + 1] - np.int32(4) * cur[x])
        s += lap
        s2 += np.int32(lap * lap)  # |lap| <= 1020: the square fits int32
    out[N_LAP] += w - 2
    out[SUM_LAP] += s
    out[SUM_LAP2] += s2


def _quality_body(
    src: NDArray[np.uint8],
    channels: int,
    ys: NDArray[np.intp],
    low: int,
    high: int,
    sums: NDArray[np.int64],
    segments: NDArray[np.int64],
    chunks: int,
) -> None:
    """The quality sums of the rows ``ys`` of ``src``; the raw kernel.

    Compiled twice, like the letterbox kernel: :data:`quality_kernel` (parallel)
    and :data:`quality_kernel_serial` (the calling thread only).

    Args:
        src: ``(H, W * channels)`` uint8, C-contiguous rows of the frame.
        channels: 3 (BGR) or 1 (grey).
        ys: ``(R,)`` the sampled rows, ascending, distinct, in ``[0, H)``.
        low, high: a pixel is dark at luma ``<= low``, bright at ``>= high``.
        sums: ``(chunks, N_SUMS)`` int64, fully overwritten: row ``k`` holds the sums
            of the ``k``-th share of ``ys`` (add the rows up).
        segments: ``(R, W // SEGMENT)`` int64, fully overwritten: the luma sum of each
            full segment of each sampled row.
        chunks: shares of ``ys`` (the thread count).
    """
    h = src.shape[0]
    w = src.shape[1] // channels
    gw = segments.shape[1]
    n_rows = ys.shape[0]
    for k in prange(chunks):
        buf = np.empty((3, w), np.int32)
        tags = np.full(3, -9, np.intp)
        acc = np.zeros(gw + 1, np.int64)  # one row's segment sums; [gw]: the partial one
        mine = np.zeros(N_SUMS, np.int64)
        first = k * n_rows // chunks
        last = (k + 1) * n_rows // chunks
        for i in range(first, last):
            y = ys[i]
            # rows not read yet, two samples ahead (one ahead at the start): ask for them
            # now, so their fetch overlaps this sample's and the next sample's arithmetic
            if i == first and i + 1 < last and ys[i + 1] > y + 2:
                _prefetch_rows(src, ys[i + 1])
            if i + 2 < last and ys[i + 2] > ys[i + 1] + 2:
                _prefetch_rows(src, ys[i + 2])
            c, fresh = _slot(tags, y, y - 1, y + 1)
            if fresh:
                _luma_row(src, channels, y, buf[c])
            acc[:] = 0
            _exposure_row(buf[c], low, high, acc, mine)
            segments[i, :] = acc[:gw]
            if y < 1 or y > h - 2 or w < 3:
                continue
            a, fresh = _slot(tags, y - 1, y, y + 1)
            if fresh:
                _luma_row(src, channels, y - 1, buf[a])
            b, fresh = _slot(tags, y + 1, y, y - 1)
            if fresh:
                _luma_row(src, channels, y + 1, buf[b])
            _laplacian_row(buf[a], buf[c], buf[b], mine)
        sums[k, :] = mine


@njit(cache=True, nogil=True)
def reference_diff(segments: NDArray[np.int64], means: NDArray[np.float64]) -> float:
    """Mean over the segments of ``|segments / SEGMENT - means|`` (same shape, not empty).

    Compiled: the same four NumPy operations cost a 1080p frame's gate about 25 us more
    than the rest of its arithmetic (temporaries for a few hundred numbers).
    """
    total = 0.0
    flat = segments.ravel()
    ref = means.ravel()
    for i in range(flat.shape[0]):
        total += abs(flat[i] / SEGMENT - ref[i])
    return total / flat.shape[0]


#: the kernel, parallel over shares of the rows (``chunks`` = Numba's thread count)
quality_kernel = njit(parallel=True, cache=True, nogil=True)(
    _named_copy(_quality_body, "quality_kernel")
)
#: the same kernel on the calling thread only (``chunks`` should be 1)
quality_kernel_serial = njit(parallel=False, cache=True, nogil=True)(
    _named_copy(_quality_body, "quality_kernel_serial")
)
