"""The CPU letterbox kernel: all Numba code of :func:`~kanjian.kernels.letterbox_cpu.letterbox_cpu`.

Numba's on-disk cache is invalidated only when the file of the cached
function changes, so the row primitives in :mod:`.cpu_rows` and the loads in
``_loads.py`` could run stale after an edit: ``_DEPENDS_SHA256`` below holds
their hashes, and ``tests/test_kernel_cache_guard.py`` fails until it is
updated, which edits this file and so rebuilds the cached kernel.

One pass over the output, in parallel over row bands. For each output row:

A *gather* reads, for every output column ``x``, the source pixels
``px0[x]`` and ``px0[x] + 1`` of one source row into one uint64 ``q[x]``:
bytes 0-2 hold B, G, R of the left pixel, bytes 3-5 those of the right one
(grey rows: byte 0 and byte 3). It is irregular and stays scalar, but costs
one unaligned 8-byte load per column. Gathered rows are kept and reused when
the next output row blends the same source row (upscaling). While gathering,
the rows the next output row needs are prefetched at the same offsets: the
gathers were bound by memory latency (short row streams that the hardware
prefetcher picks up late), and this made 5 MP and 1080p frames 20-27% faster.

The *blends* then run over contiguous buffers, which LLVM vectorises. Numba
types integer arithmetic as int64; wrapping every step in ``np.int32(...)``
lets LLVM narrow it back to int32 lanes. The arithmetic is OpenCV's, see
:mod:`kanjian.kernels.tables`:

- ``h = (p0 * a0 + p1 * a1) >> 4`` per source row,
- ``v = (((h0 * b0) >> 16) + ((h1 * b1) >> 16) + 2) >> 2``,
- output ``float32(v) / 255`` (a true division: it is what torch's ``div_(255)``
  gives, and ``v * (1/255)`` differs for 126 of the 256 values),

written as RGB planes; the border is filled with 114/255 in the same pass.

Special rows skip work without changing a bit: a row whose second weight is 0
needs one source row (``blend1``); if every column weight is also exact the
value is the source byte itself (``pick``), and if the width is unchanged the
row is only converted (``convert``). 1920x1080 -> 640x360 (exactly 3x) and
640x480 -> 640x480 are such cases.

Only the small arithmetic helpers are inlined at Numba's IR level
(``inline="always"``); inlining the gathers too tripled the cold compile time
for no speed.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from kanjian.kernels.cpu_rows import (
    _i32,
    blend1_bgr,
    blend1_grey,
    blend2_bgr,
    blend2_grey,
    convert_bgr,
    convert_grey,
    gather,
    gather2_bgr,
    pick_bgr,
    pick_grey,
)

#: sha256 of the files whose Numba functions this kernel calls; update after editing
#: them (the guard test prints the new values) so this file changes too
_DEPENDS_SHA256 = {
    "cpu_rows.py": "fb9644d1bcfe78c50a31d579733bc2c1049721c089799fce457f98270484439e",
    "_loads.py": "f61cdacb9762bfa43afad66c9811a9cff6d4d88580de1ae865aaf529f43ce27f",
}

_ONE = np.int32(2048)  # fixed-point 1.0 of the weights
#: frames smaller than this stay in L2/L3 between rows: prefetching them only costs
_PREFETCH_MIN_BYTES = 2 * 1024 * 1024


@njit(cache=True, nogil=True)
def _fetch(
    src: NDArray[np.uint8],
    channels: int,
    px0: NDArray[np.intp],
    safe: int,
    r: int,
    keep: int,
    ahead: int,
    qa: NDArray[np.uint64],
    qb: NDArray[np.uint64],
    ta: int,
    tb: int,
) -> tuple[int, int]:
    """Make source row ``r`` gathered in ``qa`` or ``qb`` without evicting row ``keep``.

    ``ta``/``tb`` are the rows the buffers hold; returns them updated. Row
    ``ahead`` is prefetched while gathering.
    """
    if ta == r or tb == r:
        return ta, tb
    # Rows already gathered (upscaling reuses them) need no prefetch.
    use_ahead = ahead != r and ahead != keep and src.size > _PREFETCH_MIN_BYTES
    if ta == keep:
        gather(src[r], channels, px0, safe, qb, src[ahead], use_ahead)
        return ta, r
    gather(src[r], channels, px0, safe, qa, src[ahead], use_ahead)
    return r, tb


def _letterbox_body(
    src: NDArray[np.uint8],
    channels: int,
    out: NDArray[np.float32],
    px0: NDArray[np.intp],
    ax0: NDArray[np.int32],
    ax1: NDArray[np.int32],
    row0: NDArray[np.intp],
    row1: NDArray[np.intp],
    by0: NDArray[np.int32],
    by1: NDArray[np.int32],
    safe_cols: int,
    cols_exact: bool,
    cols_identity: bool,
    pad_top: int,
    pad_left: int,
    pad: np.float32,
    chunks: int,
) -> None:
    """Write the letterboxed tensor of ``src`` into ``out``; the raw kernel.

    Compiled twice: :func:`letterbox_kernel` (``parallel=True``, row bands on
    Numba's threads) and :func:`letterbox_kernel_serial` (one thread, no
    thread-pool wake-up, which costs 60-120 us per call on a busy 2-core box).

    Args:
        src: ``(H, W * channels)`` uint8, C-contiguous rows of the frame.
        channels: 3 (BGR) or 1 (grey).
        out: ``(3, dst_h, dst_w)`` float32 C-contiguous, fully overwritten.
        px0 .. by1, safe_cols, cols_exact, cols_identity:
            :class:`~kanjian.kernels.tables.ResizeTables` fields (``safe_cols``
            for the given ``channels``).
        pad_top, pad_left: placement of the resized image in ``out``.
        pad: border value (114/255).
        chunks: row bands (the thread count; more bands than threads only adds
            overhead on a small machine).
    """
    new_h = row0.shape[0]
    new_w = px0.shape[0]
    right = pad_left + new_w
    n_pad_rows = out.shape[1] - new_h
    prefetching = src.size > _PREFETCH_MIN_BYTES
    for k in prange(chunks):
        # Border rows above and below the image, split evenly over the bands.
        for i in range(k * n_pad_rows // chunks, (k + 1) * n_pad_rows // chunks):
            r = i if i < pad_top else i + new_h
            for p in range(3):
                out[p, r, :] = pad
        # Two gathered source rows, tagged with their row index, reused by the
        # next output row when it blends the same rows (upscaling).
        qa = np.empty(new_w, np.uint64)
        qb = np.empty(new_w, np.uint64)
        ta = -1
        tb = -1
        for y in range(k * new_h // chunks, (k + 1) * new_h // chunks):
            oy = pad_top + y
            for p in range(3):
                out[p, oy, :pad_left] = pad
                out[p, oy, right:] = pad
            red = out[0, oy, pad_left:right]
            green = out[1, oy, pad_left:right]
            blue = out[2, oy, pad_left:right]
            r0 = row0[y]
            r1 = row1[y]
            # The next output row's source rows: prefetched while this row gathers,
            # which took the gathers from memory-latency-bound to cache hits (~30%
            # faster at 5 MP).
            yn = y + 1 if y + 1 < new_h else y
            n0 = row0[yn]
            n1 = row1[yn]
            b0 = _i32(by0[y])
            b1 = _i32(by1[y])
            if b1 == 0:  # the second source row has no weight
                if cols_identity and b0 == _ONE:
                    if channels == 3:
                        convert_bgr(src[r0], red, green, blue)
                    else:
                        convert_grey(src[r0], red, green, blue)
                    continue
                ta, tb = _fetch(src, channels, px0, safe_cols, r0, -2, n0, qa, qb, ta, tb)
                q0 = qa if ta == r0 else qb
                if cols_exact and b0 == _ONE:
                    if channels == 3:
                        pick_bgr(q0, red, green, blue)
                    else:
                        pick_grey(q0, red, green, blue)
                elif channels == 3:
                    blend1_bgr(q0, ax0, ax1, b0, red, green, blue)
                else:
                    blend1_grey(q0, ax0, ax1, b0, red, green, blue)
                continue
            if channels == 3 and r0 != r1 and ta != r0 and tb != r0 and ta != r1 and tb != r1:
                gather2_bgr(src[r0], src[r1], px0, safe_cols, qa, qb, src[n0], src[n1], prefetching)
                ta = r0
                tb = r1
            else:
                ta, tb = _fetch(src, channels, px0, safe_cols, r0, r1, n0, qa, qb, ta, tb)
                ta, tb = _fetch(src, channels, px0, safe_cols, r1, r0, n1, qa, qb, ta, tb)
            q0 = qa if ta == r0 else qb
            q1 = qa if ta == r1 else qb
            if channels == 3:
                blend2_bgr(q0, q1, ax0, ax1, b0, b1, red, green, blue)
            else:
                blend2_grey(q0, q1, ax0, ax1, b0, b1, red, green, blue)


def _named_copy(fn: Callable[..., None], name: str) -> Callable[..., None]:
    """``fn`` under another name.

    Numba names its on-disk cache after the function's qualified name, and
    does not key it on ``parallel``: two compilations of one function would
    share one cache entry and the parallel kernel could load the serial code.
    """
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = fn.__doc__
    copy.__module__ = fn.__module__
    return copy


#: the kernel, parallel over row bands (``chunks`` = Numba's thread count)
letterbox_kernel = njit(parallel=True, cache=True, nogil=True)(
    _named_copy(_letterbox_body, "letterbox_kernel")
)
#: the same kernel on the calling thread only (``chunks`` should be 1)
letterbox_kernel_serial = njit(parallel=False, cache=True, nogil=True)(
    _named_copy(_letterbox_body, "letterbox_kernel_serial")
)
