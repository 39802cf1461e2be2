"""Fused letterbox kernel on an NVIDIA GPU: the ``numba.cuda`` twin of :mod:`.letterbox_cpu`.

Same inputs, same tables, same integer arithmetic, same output values; one
CUDA thread per output pixel. The output is a device array the caller may
hand to ONNX Runtime's CUDA I/O binding without a copy back to the host.

Import this module only where CUDA (or the simulator, ``NUMBA_ENABLE_CUDASIM=1``,
which must be set before Numba is first imported) is wanted: importing it
imports ``numba.cuda``.
"""

from __future__ import annotations

import threading
from typing import Any

import numba.cuda
import numpy as np
from numpy.typing import NDArray

from kanjian.kernels.geometry import Letterbox, letterbox_geometry
from kanjian.kernels.letterbox_cpu import PAD_FLOAT, check_frame, check_out
from kanjian.kernels.tables import ResizeTables, resize_tables

__all__ = ["cuda_available", "letterbox_cuda", "letterbox_cuda_kernel"]

#: numba.cuda, untyped (it ships no type hints); the simulator when NUMBA_ENABLE_CUDASIM=1
cuda: Any = numba.cuda

#: threads per block: 32 wide for coalesced float32 stores along a row
BLOCK = (32, 8)


@cuda.jit
def letterbox_cuda_kernel(  # type: ignore[no-untyped-def]
    src,
    channels,
    out,
    px0,
    ax0,
    ax1,
    row0,
    row1,
    by0,
    by1,
    safe_cols,
    cols_exact,
    cols_identity,
    pad_top,
    pad_left,
    pad,
    chunks,
):
    """One output pixel per thread; the same arguments as the CPU kernel.

    See :func:`kanjian.kernels.cpu_kernel.letterbox_kernel` (and
    :func:`kanjian.kernels.letterbox_cpu.kernel_args`); ``src`` is ``(H, W *
    channels)`` uint8 and ``out`` ``(3, dst_h, dst_w)`` float32, both on the
    device, as are the tables. ``safe_cols``, ``cols_exact``,
    ``cols_identity`` and ``chunks`` only steer the CPU kernel and are
    ignored: a GPU thread reads single bytes and needs no special rows.
    Launch over a 2-D grid covering ``(dst_w, dst_h)``.
    """
    x, y = cuda.grid(2)
    if x >= out.shape[2] or y >= out.shape[1]:
        return
    iy = y - pad_top
    ix = x - pad_left
    if iy < 0 or iy >= row0.shape[0] or ix < 0 or ix >= px0.shape[0]:
        out[0, y, x] = pad
        out[1, y, x] = pad
        out[2, y, x] = pad
        return
    r0 = row0[iy]
    r1 = row1[iy]
    b0 = by0[iy]
    b1 = by1[iy]
    a0 = ax0[ix]
    a1 = ax1[ix]
    last = src.shape[1] // channels - 1
    c0 = px0[ix] * channels
    c1 = min(px0[ix] + 1, last) * channels
    for c in range(3):  # c indexes B, G, R in the source
        k = c if channels == 3 else 0
        h0 = np.int32(src[r0, c0 + k]) * a0 + np.int32(src[r0, c1 + k]) * a1
        h1 = np.int32(src[r1, c0 + k]) * a0 + np.int32(src[r1, c1 + k]) * a1
        v = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2
        out[2 - c, y, x] = np.float32(v) / np.float32(255.0)


_tables_lock = threading.Lock()
_device_tables: dict[tuple[int, int, int, int], tuple[Any, ...]] = {}


def _tables_on_device(geometry: Letterbox, tables: ResizeTables) -> tuple[Any, ...]:
    """Device copies of the resize tables, uploaded once per geometry."""
    key = (geometry.src_h, geometry.src_w, geometry.new_h, geometry.new_w)
    with _tables_lock:
        found = _device_tables.get(key)
        if found is None:
            if len(_device_tables) >= 64:  # a bound, not an LRU: sizes rarely change
                _device_tables.clear()
            host = (
                tables.px0,
                tables.ax0,
                tables.ax1,
                tables.row0,
                tables.row1,
                tables.by0,
                tables.by1,
            )
            found = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in host)
            _device_tables[key] = found
        return found


def _device_view(obj: Any) -> Any | None:
    """``obj`` as a Numba device array, or None for a host (NumPy) array."""
    if isinstance(obj, np.ndarray):
        return None
    is_cuda_array = getattr(cuda, "is_cuda_array", None)  # absent in the simulator
    if is_cuda_array is not None and is_cuda_array(obj):
        return cuda.as_cuda_array(obj)
    if hasattr(obj, "copy_to_host"):  # a Numba device array, real or simulated
        return obj
    return None


def _device_source(image: Any, stream: Any) -> tuple[Any, tuple[int, ...]]:
    """The frame as a validated device array (copied there if on the host), and its shape."""
    src = _device_view(image)
    if src is None:
        host = check_frame(image)
        return cuda.to_device(host, stream=stream), tuple(host.shape)
    if src.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {src.dtype}")
    shape = tuple(int(s) for s in src.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)):
        raise ValueError(f"image must be (H, W) grey or (H, W, 3) BGR, got shape {shape}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image is empty: shape {shape}")
    if not src.is_c_contiguous():
        raise ValueError("a device image must be C-contiguous")
    return src, shape


def cuda_available() -> bool:
    """True when a usable CUDA device (or the simulator) is present."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install must not crash the station
        return False


def letterbox_cuda(
    image: NDArray[np.uint8] | Any,
    dst_hw: tuple[int, int],
    out: Any | None = None,
    stream: Any = 0,
) -> Any:
    """Letterbox a frame into the model's input tensor, on the GPU.

    Same values as :func:`~kanjian.kernels.letterbox_cpu.letterbox_cpu`.

    Args:
        image: ``(H, W, 3)`` uint8 BGR or ``(H, W)`` uint8 grey, a NumPy array
            (copied to the device) or a C-contiguous CUDA device array.
        dst_hw: model input ``(height, width)`` in pixels.
        out: optional device array, ``(3, dst_h, dst_w)`` or ``(1, 3, dst_h,
            dst_w)`` float32 C-contiguous, fully overwritten.
        stream: CUDA stream to enqueue the copy and the kernel on (0: default).

    Returns:
        ``out`` if given, else a new ``(3, dst_h, dst_w)`` float32 device
        array. The work is enqueued, not waited for: synchronise ``stream``
        before reading it from another stream or the host.

    Raises:
        TypeError, ValueError: bad image, size or ``out`` (the message says which).
    """
    d_src, shape = _device_source(image, stream)
    geometry = letterbox_geometry((shape[0], shape[1]), dst_hw)
    channels = 1 if len(shape) == 2 else 3
    d_src = d_src.reshape(shape[0], shape[1] * channels)
    if out is None:
        result = cuda.device_array(
            (3, geometry.dst_h, geometry.dst_w), dtype=np.float32, stream=stream
        )
        planes = result
    else:
        device_out = _device_view(out)
        if device_out is None:
            raise TypeError("out must be a CUDA device array (use letterbox_cpu for host arrays)")
        check_out(device_out, geometry)
        result = out
        planes = device_out.reshape(3, geometry.dst_h, geometry.dst_w)
    t = _tables_on_device(geometry, resize_tables(geometry))
    grid = (
        (geometry.dst_w + BLOCK[0] - 1) // BLOCK[0],
        (geometry.dst_h + BLOCK[1] - 1) // BLOCK[1],
    )
    letterbox_cuda_kernel[grid, BLOCK, stream](
        d_src,
        channels,
        planes,
        *t,
        0,  # safe_cols, cols_exact, cols_identity, chunks: CPU-only
        False,
        False,
        geometry.pad_top,
        geometry.pad_left,
        PAD_FLOAT,
        1,
    )
    return result
