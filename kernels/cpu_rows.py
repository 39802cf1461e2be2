"""Row primitives of the CPU letterbox kernel: gather, blend, pick, convert (Numba).

Split out of :mod:`kanjian.kernels.cpu_kernel`, which explains the algorithm
and the arithmetic. Numba's on-disk cache of the kernel is keyed on the
kernel's own file only: ``cpu_kernel._DEPENDS_SHA256`` records this file's
hash, and a test fails until it is updated after an edit here, so that the
edit also changes ``cpu_kernel.py`` and its cached machine code is rebuilt.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from kanjian.kernels._loads import load_u16, load_u64, prefetch

_i32 = np.int32
_u32 = np.uint32
_u64 = np.uint64
_B = np.uint64(255)
_F255 = np.float32(255.0)


@njit(cache=True, nogil=True)
def _pair_bgr(row: NDArray[np.uint8], p: int, last: int) -> np.uint64:
    """Pixels p and min(p+1, last) of a BGR row, byte by byte (the row's last columns)."""
    p1 = 3 * min(p + 1, last)
    p = 3 * p
    return (
        _u64(row[p])
        | (_u64(row[p + 1]) << _u64(8))
        | (_u64(row[p + 2]) << _u64(16))
        | (_u64(row[p1]) << _u64(24))
        | (_u64(row[p1 + 1]) << _u64(32))
        | (_u64(row[p1 + 2]) << _u64(40))
    )


@njit(cache=True, nogil=True)
def gather(
    row: NDArray[np.uint8],
    channels: int,
    px0: NDArray[np.intp],
    safe: int,
    q: NDArray[np.uint64],
    ahead: NDArray[np.uint8],
    use_ahead: bool,
) -> None:
    """Fill ``q`` from one source row; ``safe`` leading columns may read 8 (BGR) / 2 (grey) bytes.

    ``ahead`` is the source row the next gather will read: if ``use_ahead``,
    its lines are prefetched at the same offsets, so that gather finds them
    in cache.
    """
    # The branch sits outside the loops: a loop-invariant test inside them made
    # upscaling (which never prefetches) 8% slower.
    if channels == 3:
        if use_ahead:
            for x in range(safe):
                o = 3 * px0[x]
                prefetch(ahead, o)
                q[x] = load_u64(row, o)
        else:
            for x in range(safe):
                q[x] = load_u64(row, 3 * px0[x])
        last = row.shape[0] // 3 - 1
        for x in range(safe, q.shape[0]):
            q[x] = _pair_bgr(row, px0[x], last)
    else:
        if use_ahead:
            for x in range(safe):
                prefetch(ahead, px0[x])
                w = _u64(load_u16(row, px0[x]))
                q[x] = (w & _B) | ((w >> _u64(8)) << _u64(24))
        else:
            for x in range(safe):
                w = _u64(load_u16(row, px0[x]))
                q[x] = (w & _B) | ((w >> _u64(8)) << _u64(24))
        last = row.shape[0] - 1
        for x in range(safe, q.shape[0]):
            p = px0[x]
            q[x] = _u64(row[p]) | (_u64(row[min(p + 1, last)]) << _u64(24))


@njit(cache=True, nogil=True)
def gather2_bgr(
    row_a: NDArray[np.uint8],
    row_b: NDArray[np.uint8],
    px0: NDArray[np.intp],
    safe: int,
    qa: NDArray[np.uint64],
    qb: NDArray[np.uint64],
    ahead_a: NDArray[np.uint8],
    ahead_b: NDArray[np.uint8],
    use_ahead: bool,
) -> None:
    """:func:`gather` of two BGR rows in one sweep (sharing the index loads)."""
    if use_ahead:
        for x in range(safe):
            o = 3 * px0[x]
            prefetch(ahead_a, o)
            prefetch(ahead_b, o)
            qa[x] = load_u64(row_a, o)
            qb[x] = load_u64(row_b, o)
    else:
        for x in range(safe):
            o = 3 * px0[x]
            qa[x] = load_u64(row_a, o)
            qb[x] = load_u64(row_b, o)
    last = row_a.shape[0] // 3 - 1
    for x in range(safe, qa.shape[0]):
        qa[x] = _pair_bgr(row_a, px0[x], last)
        qb[x] = _pair_bgr(row_b, px0[x], last)


@njit(cache=True, nogil=True, inline="always")
def _byte(word: np.uint32, shift: int) -> np.int32:
    return _i32((word >> _u32(shift)) & _u32(255))


@njit(cache=True, nogil=True, inline="always")
def _h(s0: np.int32, s1: np.int32, a0: np.int32, a1: np.int32) -> np.int32:
    """Horizontal blend of one source row, already ``>> 4``."""
    return _i32(_i32(_i32(s0 * a0) + _i32(s1 * a1)) >> 4)


@njit(cache=True, nogil=True, inline="always")
def _v2(h0: np.int32, h1: np.int32, b0: np.int32, b1: np.int32) -> np.float32:
    """Vertical blend of two rows, rounded like OpenCV, as float32 / 255."""
    v = _i32(_i32(_i32(_i32(h0 * b0) >> 16) + _i32(_i32(h1 * b1) >> 16) + 2) >> 2)
    return np.float32(v) / _F255


@njit(cache=True, nogil=True, inline="always")
def _v1(h0: np.int32, b0: np.int32) -> np.float32:
    """:func:`_v2` when the second row's weight is 0."""
    v = _i32(_i32(_i32(_i32(h0 * b0) >> 16) + 2) >> 2)
    return np.float32(v) / _F255


# The blends read each gathered uint64 as two uint32 words, lo = bytes 0-3
# (B0 G0 R0 B1) and hi = bytes 4-7 (G1 R1 . .), on little-endian machines
# (x86-64, aarch64): byte extraction then stays in 32-bit lanes, which ran the
# blend 1.5x faster than shifting 64-bit lanes.


@njit(cache=True, nogil=True)
def blend2_bgr(
    q0: NDArray[np.uint64],
    q1: NDArray[np.uint64],
    ax0: NDArray[np.int32],
    ax1: NDArray[np.int32],
    b0: np.int32,
    b1: np.int32,
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row from two gathered BGR rows."""
    w0 = q0.view(np.uint32)
    w1 = q1.view(np.uint32)
    for x in range(q0.shape[0]):
        a0 = ax0[x]
        a1 = ax1[x]
        lo0 = w0[2 * x]
        hi0 = w0[2 * x + 1]
        lo1 = w1[2 * x]
        hi1 = w1[2 * x + 1]
        blue[x] = _v2(
            _h(_byte(lo0, 0), _byte(lo0, 24), a0, a1),
            _h(_byte(lo1, 0), _byte(lo1, 24), a0, a1),
            b0,
            b1,
        )
        green[x] = _v2(
            _h(_byte(lo0, 8), _byte(hi0, 0), a0, a1),
            _h(_byte(lo1, 8), _byte(hi1, 0), a0, a1),
            b0,
            b1,
        )
        red[x] = _v2(
            _h(_byte(lo0, 16), _byte(hi0, 8), a0, a1),
            _h(_byte(lo1, 16), _byte(hi1, 8), a0, a1),
            b0,
            b1,
        )


@njit(cache=True, nogil=True)
def blend2_grey(
    q0: NDArray[np.uint64],
    q1: NDArray[np.uint64],
    ax0: NDArray[np.int32],
    ax1: NDArray[np.int32],
    b0: np.int32,
    b1: np.int32,
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row from two gathered grey rows (the value goes to all three planes)."""
    w0 = q0.view(np.uint32)
    w1 = q1.view(np.uint32)
    for x in range(q0.shape[0]):
        a0 = ax0[x]
        a1 = ax1[x]
        lo0 = w0[2 * x]
        lo1 = w1[2 * x]
        v = _v2(
            _h(_byte(lo0, 0), _byte(lo0, 24), a0, a1),
            _h(_byte(lo1, 0), _byte(lo1, 24), a0, a1),
            b0,
            b1,
        )
        red[x] = v
        green[x] = v
        blue[x] = v


@njit(cache=True, nogil=True)
def blend1_bgr(
    q0: NDArray[np.uint64],
    ax0: NDArray[np.int32],
    ax1: NDArray[np.int32],
    b0: np.int32,
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row from one gathered BGR row (second row weight 0)."""
    w0 = q0.view(np.uint32)
    for x in range(q0.shape[0]):
        a0 = ax0[x]
        a1 = ax1[x]
        lo = w0[2 * x]
        hi = w0[2 * x + 1]
        blue[x] = _v1(_h(_byte(lo, 0), _byte(lo, 24), a0, a1), b0)
        green[x] = _v1(_h(_byte(lo, 8), _byte(hi, 0), a0, a1), b0)
        red[x] = _v1(_h(_byte(lo, 16), _byte(hi, 8), a0, a1), b0)


@njit(cache=True, nogil=True)
def blend1_grey(
    q0: NDArray[np.uint64],
    ax0: NDArray[np.int32],
    ax1: NDArray[np.int32],
    b0: np.int32,
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row from one gathered grey row (second row weight 0)."""
    w0 = q0.view(np.uint32)
    for x in range(q0.shape[0]):
        lo = w0[2 * x]
        v = _v1(_h(_byte(lo, 0), _byte(lo, 24), ax0[x], ax1[x]), b0)
        red[x] = v
        green[x] = v
        blue[x] = v


@njit(cache=True, nogil=True)
def pick_bgr(
    q0: NDArray[np.uint64],
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row when every weight is exact: the left pixel's bytes, /255."""
    w0 = q0.view(np.uint32)
    for x in range(q0.shape[0]):
        lo = w0[2 * x]
        blue[x] = np.float32(_byte(lo, 0)) / _F255
        green[x] = np.float32(_byte(lo, 8)) / _F255
        red[x] = np.float32(_byte(lo, 16)) / _F255


@njit(cache=True, nogil=True)
def pick_grey(
    q0: NDArray[np.uint64],
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """:func:`pick_bgr` for grey rows."""
    w0 = q0.view(np.uint32)
    for x in range(q0.shape[0]):
        v = np.float32(_byte(w0[2 * x], 0)) / _F255
        red[x] = v
        green[x] = v
        blue[x] = v


@njit(cache=True, nogil=True)
def convert_bgr(
    row: NDArray[np.uint8],
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row straight from an unresized BGR source row."""
    for x in range(red.shape[0]):
        blue[x] = np.float32(row[3 * x]) / _F255
        green[x] = np.float32(row[3 * x + 1]) / _F255
        red[x] = np.float32(row[3 * x + 2]) / _F255


@njit(cache=True, nogil=True)
def convert_grey(
    row: NDArray[np.uint8],
    red: NDArray[np.float32],
    green: NDArray[np.float32],
    blue: NDArray[np.float32],
) -> None:
    """One output row straight from an unresized grey source row."""
    for x in range(red.shape[0]):
        v = np.float32(row[x]) / _F255
        red[x] = v
        green[x] = v
        blue[x] = v
