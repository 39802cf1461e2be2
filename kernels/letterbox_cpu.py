"""Fused letterbox kernel on the CPU: uint8 BGR/grey frame -> float32 RGB CHW model input.

One pass over the output, in parallel over row bands: for each output row the
two source rows it blends are gathered (one unaligned 8-byte read per output
pixel and row, :mod:`kanjian.kernels._loads`), blended with OpenCV's
fixed-point bilinear arithmetic (:mod:`kanjian.kernels.tables`), swapped to
RGB, divided by 255 and written to the three planes; the border is filled with
114/255 in the same pass. The result equals Ultralytics' preprocessing
(``LetterBox`` + HWC->CHW + BGR->RGB + ``/255``) bit for bit.

Why two stages per row: the gather is irregular and stays scalar, but the
blend is a plain loop over contiguous buffers that LLVM vectorises (the
``np.int32(...)`` wrappers let it narrow Numba's int64 arithmetic to int32
lanes). Gathered rows are kept and reused when consecutive output rows share
a source row (upscaling).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from kanjian.kernels._loads import load_u16, load_u64
from kanjian.kernels.geometry import Letterbox, letterbox_geometry
from kanjian.kernels.reference import PAD_VALUE
from kanjian.kernels.tables import resize_tables
from kanjian.kernels.threads import kernel_threads

__all__ = [
    "PAD_FLOAT",
    "check_frame",
    "check_out",
    "letterbox_cpu",
    "letterbox_kernel",
    "letterbox_kernel_serial",
]

#: the border value in the output tensor: float32(114) / float32(255)
PAD_FLOAT = np.float32(PAD_VALUE) / np.float32(255.0)

_i32 = np.int32
_u64 = np.uint64
_B = np.uint64(255)


@njit(cache=True, nogil=True, inline="always")
def _pair_bgr(row: NDArray[np.uint8], p: int, last: int) -> np.uint64:
    """Bytes of pixels p, p+1 of a BGR row (B0 G0 R0 B1 G1 R1, low first), byte by byte."""
    p1 = 3 * min(p + 1, last)  # only a 1-pixel-wide frame clamps here
    p = 3 * p
    return (
        _u64(row[p])
        | (_u64(row[p + 1]) << _u64(8))
        | (_u64(row[p + 2]) << _u64(16))
        | (_u64(row[p1]) << _u64(24))
        | (_u64(row[p1 + 1]) << _u64(32))
        | (_u64(row[p1 + 2]) << _u64(40))
    )


@njit(cache=True, nogil=True, inline="always")
def _gather_bgr(
    row: NDArray[np.uint8], px0: NDArray[np.intp], safe: int, q: NDArray[np.uint64]
) -> None:
    """q[x] = pixels px0[x], px0[x]+1 of one BGR row (see :func:`_pair_bgr`)."""
    for x in range(safe):
        q[x] = load_u64(row, 3 * px0[x])
    last = row.shape[0] // 3 - 1
    for x in range(safe, q.shape[0]):
        q[x] = _pair_bgr(row, px0[x], last)


@njit(cache=True, nogil=True, inline="always")
def _gather2_bgr(
    row_a: NDArray[np.uint8],
    row_b: NDArray[np.uint8],
    px0: NDArray[np.intp],
    safe: int,
    qa: NDArray[np.uint64],
    qb: NDArray[np.uint64],
) -> None:
    """:func:`_gather_bgr` of two rows in one sweep (downscaling: no row is reused)."""
    for x in range(safe):
        o = 3 * px0[x]
        qa[x] = load_u64(row_a, o)
        qb[x] = load_u64(row_b, o)
    last = row_a.shape[0] // 3 - 1
    for x in range(safe, qa.shape[0]):
        qa[x] = _pair_bgr(row_a, px0[x], last)
        qb[x] = _pair_bgr(row_b, px0[x], last)


@njit(cache=True, nogil=True, inline="always")
def _gather_grey(
    row: NDArray[np.uint8], px0: NDArray[np.intp], safe: int, q: NDArray[np.uint64]
) -> None:
    """q[x] = pixel px0[x] | pixel px0[x]+1 << 8 of a grey row."""
    n = q.shape[0]
    for x in range(safe):
        q[x] = _u64(load_u16(row, px0[x]))
    last = row.shape[0] - 1
    for x in range(safe, n):
        p = px0[x]
        q[x] = _u64(row[p]) | (_u64(row[min(p + 1, last)]) << _u64(8))


@njit(cache=True, nogil=True, inline="always")
def _blend_one(
    q0: np.uint64, q1: np.uint64, shift: int, a0: np.int32, a1: np.int32, b0: np.int32, b1: np.int32
) -> np.float32:
    """One output value from the byte pairs at ``shift`` of two gathered rows."""
    s00 = _i32((q0 >> _u64(shift)) & _B)
    s01 = _i32((q0 >> _u64(shift + 24)) & _B)
    s10 = _i32((q1 >> _u64(shift)) & _B)
    s11 = _i32((q1 >> _u64(shift + 24)) & _B)
    h0 = _i32(_i32(_i32(s00 * a0) + _i32(s01 * a1)) >> 4)
    h1 = _i32(_i32(_i32(s10 * a0) + _i32(s11 * a1)) >> 4)
    v = _i32(_i32(_i32(_i32(h0 * b0) >> 16) + _i32(_i32(h1 * b1) >> 16) + 2) >> 2)
    return np.float32(v) / np.float32(255.0)


@njit(cache=True, nogil=True)
def _blend_bgr(
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
    for x in range(q0.shape[0]):
        a0 = ax0[x]
        a1 = ax1[x]
        blue[x] = _blend_one(q0[x], q1[x], 0, a0, a1, b0, b1)
        green[x] = _blend_one(q0[x], q1[x], 8, a0, a1, b0, b1)
        red[x] = _blend_one(q0[x], q1[x], 16, a0, a1, b0, b1)


@njit(cache=True, nogil=True)
def _blend_grey(
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
    for x in range(q0.shape[0]):
        # the pair sits at bits 0 and 8; _blend_one reads bits s and s+24
        a = q0[x]
        b = q1[x]
        v = _blend_one(
            (a & _B) | ((a >> _u64(8)) << _u64(24)),
            (b & _B) | ((b >> _u64(8)) << _u64(24)),
            0,
            ax0[x],
            ax1[x],
            b0,
            b1,
        )
        red[x] = v
        green[x] = v
        blue[x] = v


@njit(cache=True, nogil=True, inline="always")
def _gather(
    row: NDArray[np.uint8], channels: int, px0: NDArray[np.intp], safe: int, q: NDArray[np.uint64]
) -> None:
    if channels == 3:
        _gather_bgr(row, px0, safe, q)
    else:
        _gather_grey(row, px0, safe, q)


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
        px0 .. by1, safe_cols: :class:`~kanjian.kernels.tables.ResizeTables`
            fields (``safe_cols`` for the given ``channels``).
        pad_top, pad_left: placement of the resized image in ``out``.
        pad: border value (114/255).
        chunks: row bands (the thread count; more bands than threads only adds
            overhead on a small machine).
    """
    new_h = row0.shape[0]
    new_w = px0.shape[0]
    right = pad_left + new_w
    n_pad_rows = out.shape[1] - new_h
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
            r0 = row0[y]
            r1 = row1[y]
            have0 = ta == r0 or tb == r0
            have1 = ta == r1 or tb == r1
            if not have0 and not have1 and r0 != r1 and channels == 3:
                _gather2_bgr(src[r0], src[r1], px0, safe_cols, qa, qb)
                ta = r0
                tb = r1
            else:
                if not have0:
                    if ta == r1:
                        _gather(src[r0], channels, px0, safe_cols, qb)
                        tb = r0
                    else:
                        _gather(src[r0], channels, px0, safe_cols, qa)
                        ta = r0
                if ta != r1 and tb != r1:
                    if ta == r0:
                        _gather(src[r1], channels, px0, safe_cols, qb)
                        tb = r1
                    else:
                        _gather(src[r1], channels, px0, safe_cols, qa)
                        ta = r1
            q0 = qa if ta == r0 else qb
            q1 = qa if ta == r1 else qb
            oy = pad_top + y
            for p in range(3):
                out[p, oy, :pad_left] = pad
                out[p, oy, right:] = pad
            red = out[0, oy, pad_left:right]
            green = out[1, oy, pad_left:right]
            blue = out[2, oy, pad_left:right]
            b0 = _i32(by0[y])
            b1 = _i32(by1[y])
            if channels == 3:
                _blend_bgr(q0, q1, ax0, ax1, b0, b1, red, green, blue)
            else:
                _blend_grey(q0, q1, ax0, ax1, b0, b1, red, green, blue)


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


def check_frame(image: object) -> NDArray[np.uint8]:
    """Validate a frame for the kernels; return it C-contiguous.

    Raises:
        TypeError: not a uint8 numpy array.
        ValueError: not ``(H, W)`` or ``(H, W, 3)``, or empty.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) grey or (H, W, 3) BGR, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    # The kernels read whole rows; a strided view (a crop, a channel flip) is copied once.
    return np.ascontiguousarray(image)


def check_out(out: object, geometry: Letterbox) -> None:
    """Validate a caller-given output array for ``geometry``.

    Accepts ``(3, dst_h, dst_w)`` or ``(1, 3, dst_h, dst_w)`` float32, C-contiguous.

    Raises:
        TypeError: not a float32 array.
        ValueError: wrong shape, or not C-contiguous.
    """
    shape = (3, geometry.dst_h, geometry.dst_w)
    dtype = getattr(out, "dtype", None)
    if dtype != np.float32:
        raise TypeError(f"out must be a float32 array, got dtype {dtype}")
    got = tuple(getattr(out, "shape", ()))
    if got not in (shape, (1, *shape)):
        raise ValueError(f"out must have shape {shape} or {(1, *shape)}, got {got}")
    if not _is_c_contiguous(out):
        raise ValueError("out must be C-contiguous")


def _is_c_contiguous(a: object) -> bool:
    flags = getattr(a, "flags", None)
    if flags is not None and hasattr(flags, "c_contiguous"):
        return bool(flags.c_contiguous)
    return bool(getattr(a, "is_c_contiguous", lambda: False)())


def letterbox_cpu(
    image: NDArray[np.uint8],
    dst_hw: tuple[int, int],
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Letterbox a frame into the model's input tensor, on the CPU.

    Equal, value for value, to Ultralytics' ``LetterBox(dst_hw, auto=False)``
    followed by HWC->CHW, BGR->RGB and ``/255`` in float32.

    Args:
        image: ``(H, W, 3)`` uint8 BGR or ``(H, W)`` uint8 grey (grey is
            replicated to the three channels). A non-contiguous view is copied.
        dst_hw: model input ``(height, width)`` in pixels.
        out: optional preallocated ``(3, dst_h, dst_w)`` or ``(1, 3, dst_h, dst_w)``
            float32 C-contiguous array, fully overwritten; saves an allocation
            per frame.

    Returns:
        ``out`` if given, else a new ``(3, dst_h, dst_w)`` float32 array:
        RGB planes in ``[0, 1]``, border ``114/255``.

    Raises:
        TypeError, ValueError: bad image, size or ``out`` (the message says which).
    """
    src = check_frame(image)
    geometry = letterbox_geometry(src.shape[:2], dst_hw)
    if out is None:
        result = np.empty((3, geometry.dst_h, geometry.dst_w), dtype=np.float32)
    else:
        check_out(out, geometry)
        result = out
    planes = result.reshape(3, geometry.dst_h, geometry.dst_w)
    t = resize_tables(geometry)
    channels = 1 if src.ndim == 2 else 3
    threads = kernel_threads()
    kernel = letterbox_kernel if threads > 1 else letterbox_kernel_serial
    kernel(
        src.reshape(src.shape[0], src.shape[1] * channels),
        channels,
        planes,
        t.px0,
        t.ax0,
        t.ax1,
        t.row0,
        t.row1,
        t.by0,
        t.by1,
        t.safe_cols_bgr if channels == 3 else t.safe_cols_grey,
        geometry.pad_top,
        geometry.pad_left,
        PAD_FLOAT,
        threads,
    )
    return result
