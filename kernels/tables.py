"""Per-column and per-row resize coefficients, as OpenCV's uint8 INTER_LINEAR uses them.

The kernels reproduce ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` on
uint8 images bit for bit. That resize (``resizeGeneric_`` with
``HResizeLinear`` / ``VResizeLinear`` in OpenCV's ``imgproc/src/resize.cpp``)
works in fixed point:

- the source coordinate of output column ``dx`` is
  ``fx = float32((dx + 0.5) * scale_x - 0.5)`` with ``scale_x = 1 / (new_w / src_w)``
  computed in double; ``sx = floor(fx)``, ``fx -= sx`` in float32;
- along x only, a coordinate left of pixel 0 or right of the last pixel is
  clamped with ``fx = 0`` (along y the fraction is kept and the row index is
  clamped instead, which matters for the rounding below);
- the two weights are ``round((1 - fx) * 2048)`` and ``round(fx * 2048)``
  (11 fractional bits, round half to even);
- a horizontal pass keeps exact int32 sums ``h = p0 * a0 + p1 * a1``;
- the vertical pass rounds like OpenCV's SIMD path does (the path its x86-64
  builds take): ``(((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2) >> 2``.

A 2x downscale goes through OpenCV's INTER_AREA fast path instead; it gives the
same numbers, checked by the tests against cv2 itself.

The kernels read pixel pairs ``(px0, min(px0 + 1, w - 1))``; only the
leading ``safe_cols`` columns use wide loads, so no read leaves the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from kanjian.kernels.geometry import Letterbox

__all__ = ["COEF_ONE", "ResizeTables", "linear_coefficients", "resize_tables"]

#: fixed-point one of OpenCV's resize coefficients (INTER_RESIZE_COEF_SCALE)
COEF_ONE = 2048


def linear_coefficients(
    src_len: int, dst_len: int, clamp_fraction: bool
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int32]]:
    """OpenCV's bilinear source index and fixed-point weights along one axis.

    Args:
        src_len: source pixels along the axis (>= 1).
        dst_len: output pixels along the axis (>= 1).
        clamp_fraction: True for x (OpenCV sets the fraction to 0 outside the
            image), False for y (OpenCV keeps it and clamps the row index).

    Returns:
        ``(index, w0, w1)``, each ``(dst_len,)``: ``index`` is the unclamped
        ``floor`` source index (may be -1 or ``src_len - 1``), ``w0``/``w1``
        int32 weights of pixels ``index`` and ``index + 1``, summing to 2048.
    """
    scale = 1.0 / (dst_len / src_len)
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(f).astype(np.int64)
    frac = (f - index.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        low = index < 0
        frac[low] = 0
        index[low] = 0
        high = index >= src_len - 1
        frac[high] = 0
        index[high] = src_len - 1
    w0 = np.rint((np.float32(1) - frac) * np.float32(COEF_ONE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(COEF_ONE)).astype(np.int32)
    return index, w0, w1


@dataclass(frozen=True)
class ResizeTables:
    """Precomputed gather indices and weights for one (source size, new size).

    Arrays are read-only and shared between calls with the same geometry.

    Attributes:
        px0: ``(new_w,)`` intp, left source pixel of each output column; its
            right neighbour ``min(px0 + 1, src_w - 1)`` is read too.
        ax0, ax1: ``(new_w,)`` int32 weights of the two pixels.
        row0, row1: ``(new_h,)`` intp source rows of each output row (clamped).
        by0, by1: ``(new_h,)`` int32 weights of ``row0`` and ``row1``.
        safe_cols_bgr: leading columns whose 8-byte read at ``3 * px0`` stays
            inside a BGR row; the rest are read byte by byte.
        safe_cols_grey: the same for a 2-byte read at ``px0`` in a grey row.
        cols_exact: every ``ax1`` is 0 (``ax0`` 2048): columns only pick pixels.
        cols_identity: the width is unchanged (``px0[x] == x``, exact).
    """

    px0: NDArray[np.intp]
    ax0: NDArray[np.int32]
    ax1: NDArray[np.int32]
    row0: NDArray[np.intp]
    row1: NDArray[np.intp]
    by0: NDArray[np.int32]
    by1: NDArray[np.int32]
    safe_cols_bgr: int
    safe_cols_grey: int
    cols_exact: bool
    cols_identity: bool


@lru_cache(maxsize=64)
def _tables(src_h: int, src_w: int, new_h: int, new_w: int) -> ResizeTables:
    px0, ax0, ax1 = linear_coefficients(src_w, new_w, clamp_fraction=True)
    sy, by0, by1 = linear_coefficients(src_h, new_h, clamp_fraction=False)
    row0 = np.clip(sy, 0, src_h - 1)
    row1 = np.clip(sy + 1, 0, src_h - 1)
    # px0 is non-decreasing, so the columns that may over-read form a suffix.
    safe_bgr = int(np.count_nonzero(3 * px0 + 8 <= 3 * src_w))
    safe_grey = int(np.count_nonzero(px0 + 2 <= src_w))
    exact = bool(np.all(ax1 == 0) and np.all(ax0 == COEF_ONE))
    tables = ResizeTables(
        px0=px0.astype(np.intp),
        ax0=ax0,
        ax1=ax1,
        row0=row0.astype(np.intp),
        row1=row1.astype(np.intp),
        by0=by0,
        by1=by1,
        safe_cols_bgr=safe_bgr,
        safe_cols_grey=safe_grey,
        cols_exact=exact,
        cols_identity=exact and new_w == src_w and bool(np.all(px0 == np.arange(new_w))),
    )
    # Shared between calls through the cache: nobody may write them.
    for a in (tables.px0, tables.ax0, tables.ax1, tables.row0, tables.row1, tables.by0, tables.by1):
        a.flags.writeable = False
    return tables


def resize_tables(geometry: Letterbox) -> ResizeTables:
    """The (cached) resize tables for ``geometry``'s source and new size."""
    return _tables(geometry.src_h, geometry.src_w, geometry.new_h, geometry.new_w)
