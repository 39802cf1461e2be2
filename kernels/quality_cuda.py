"""Image quality on an NVIDIA GPU: the ``numba.cuda`` twin of :mod:`.quality`.

Same inputs, same integer sums, same numbers as
:func:`~kanjian.kernels.quality.frame_quality` (definitions there). One CUDA thread per
sampled pixel, blocks of 32 x 8 threads: a block's row is one :data:`SEGMENT` of one
sampled row, so its segment sum is reduced in shared memory and written without
atomics; the seven frame sums are reduced per block and added to the result with one
64-bit atomic each.

Import this module only where CUDA (or the simulator, ``NUMBA_ENABLE_CUDASIM=1``, set
before Numba is first imported) is wanted: importing it imports ``numba.cuda``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import int64
from numpy.typing import NDArray

from kanjian.kernels.letterbox_cuda import _device_source, cuda
from kanjian.kernels.quality import (
    FrameQuality,
    QualityReference,
    _check_clips,
    finish_quality,
    sample_rows,
)
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
)

__all__ = ["frame_quality_cuda", "quality_cuda_kernel"]

#: threads per block: one segment wide (coalesced byte loads along a row), 8 rows
_ROWS = 8
BLOCK = (SEGMENT, _ROWS)
_THREADS = BLOCK[0] * BLOCK[1]


@cuda.jit(device=True)
def _luma(src, channels, y, x):  # type: ignore[no-untyped-def]
    """Luma of pixel ``(y, x)`` of ``src`` ``(H, W * channels)``: the CPU kernel's formula."""
    if channels == 1:
        return np.int32(src[y, x])
    b = np.int32(src[y, 3 * x])
    g = np.int32(src[y, 3 * x + 1])
    r = np.int32(src[y, 3 * x + 2])
    return (b * np.int32(3735) + g * np.int32(19235) + r * np.int32(9798) + np.int32(16384)) >> 15


@cuda.jit
def quality_cuda_kernel(src, channels, ys, low, high, sums, segments, chunks):  # type: ignore[no-untyped-def]
    """One sampled pixel per thread; the same arguments as the CPU kernel.

    See :func:`kanjian.kernels.quality_kernel._quality_body`. ``sums`` must be
    ``(1, N_SUMS)`` int64 zeros on the device (the blocks add to it); ``chunks`` only
    steers the CPU kernel and is ignored. Launch over a grid of ``(ceil(W / 32),
    ceil(R / 8))`` blocks of :data:`BLOCK` threads.
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    t = ty * SEGMENT + tx
    x = cuda.blockIdx.x * SEGMENT + tx
    i = cuda.blockIdx.y * _ROWS + ty
    h = src.shape[0]
    w = src.shape[1] // channels
    part = cuda.shared.array((N_SUMS, _THREADS), int64)
    seg = cuda.shared.array(_THREADS, int64)
    for q in range(N_SUMS):
        part[q, t] = 0
    seg[t] = 0
    if x < w and i < ys.shape[0]:
        y = ys[i]
        v = _luma(src, channels, y, x)
        part[N, t] = 1
        part[SUM_Y, t] = v
        if v <= low:
            part[DARK, t] = 1
        if v >= high:
            part[BRIGHT, t] = 1
        seg[t] = v
        if y >= 1 and y <= h - 2 and x >= 1 and x <= w - 2:
            lap = (
                _luma(src, channels, y - 1, x)
                + _luma(src, channels, y + 1, x)
                + _luma(src, channels, y, x - 1)
                + _luma(src, channels, y, x + 1)
                - 4 * v
            )
            part[N_LAP, t] = 1
            part[SUM_LAP, t] = lap
            part[SUM_LAP2, t] = lap * lap
    cuda.syncthreads()
    stride = _THREADS // 2
    while stride > 0:  # the block's seven sums; within each block row, its segment's
        if t < stride:
            for q in range(N_SUMS):
                part[q, t] += part[q, t + stride]
        if stride < SEGMENT and tx < stride:
            seg[t] += seg[t + stride]
        cuda.syncthreads()
        stride //= 2
    if tx == 0 and i < ys.shape[0] and cuda.blockIdx.x < segments.shape[1]:
        segments[i, cuda.blockIdx.x] = seg[t]  # full segments only
    if t == 0:
        for q in range(N_SUMS):
            cuda.atomic.add(sums, (0, q), part[q, 0])


def frame_quality_cuda(
    image: NDArray[np.uint8] | Any,
    rows: int | None = None,
    low_clip: int = 2,
    high_clip: int = 253,
    reference: QualityReference | None = None,
    stream: Any = 0,
) -> FrameQuality:
    """:func:`~kanjian.kernels.quality.frame_quality` on the GPU: the same numbers.

    Args:
        image: ``(H, W, 3)`` uint8 BGR or ``(H, W)`` uint8 grey, a NumPy array (copied
            to the device) or a C-contiguous CUDA device array (a frame already there).
        rows, low_clip, high_clip, reference: as for ``frame_quality``.
        stream: CUDA stream for the copies and the kernel (0: default); waited for,
            since the numbers are needed on the host.

    Raises:
        TypeError, ValueError: a bad image or argument (the message says which).
    """
    lo, hi = _check_clips(low_clip, high_clip)
    d_src, shape = _device_source(image, stream)
    h, w = shape[0], shape[1]
    channels = 1 if len(shape) == 2 else 3
    ys = sample_rows(h, rows)
    d_ys = cuda.to_device(np.ascontiguousarray(ys), stream=stream)
    d_sums = cuda.to_device(np.zeros((1, N_SUMS), np.int64), stream=stream)
    d_segments = cuda.device_array((len(ys), w // SEGMENT), np.int64, stream=stream)
    grid = ((w + BLOCK[0] - 1) // BLOCK[0], (len(ys) + BLOCK[1] - 1) // BLOCK[1])
    if len(ys) and w:
        quality_cuda_kernel[grid, BLOCK, stream](
            d_src.reshape(h, w * channels), channels, d_ys, lo, hi, d_sums, d_segments, 1
        )
    sums = d_sums.copy_to_host(stream=stream)
    segments = d_segments.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    return finish_quality(sums[0], segments, (h, w), rows, reference)
