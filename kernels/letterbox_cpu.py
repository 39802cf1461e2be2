"""Fused letterbox on the CPU: uint8 BGR/grey frame -> float32 RGB CHW model input.

The public entry point and its input checks; the Numba kernel itself is in
:mod:`kanjian.kernels.cpu_kernel`. The result equals Ultralytics'
preprocessing (``LetterBox`` + HWC->CHW + BGR->RGB + ``/255``) bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

from kanjian.kernels.cpu_kernel import letterbox_kernel, letterbox_kernel_serial
from kanjian.kernels.geometry import PAD_VALUE, Letterbox, letterbox_geometry
from kanjian.kernels.tables import resize_tables
from kanjian.kernels.threads import kernel_threads

#: held while a thread runs the parallel kernel
_POOL = threading.Lock()

__all__ = [
    "PAD_FLOAT",
    "check_frame",
    "check_out",
    "kernel_args",
    "letterbox_cpu",
    "letterbox_kernel",
    "letterbox_kernel_serial",
]

#: the border value in the output tensor: float32(114) / float32(255)
PAD_FLOAT = np.float32(PAD_VALUE) / np.float32(255.0)


def kernel_args(
    src: NDArray[np.uint8], geometry: Letterbox, out: NDArray[np.float32], chunks: int
) -> tuple[object, ...]:
    """The raw kernels' arguments for a C-contiguous frame and a ``(3, H, W)`` output."""
    t = resize_tables(geometry)
    channels = 1 if src.ndim == 2 else 3
    return (
        src.reshape(src.shape[0], src.shape[1] * channels),
        channels,
        out,
        t.px0,
        t.ax0,
        t.ax1,
        t.row0,
        t.row1,
        t.by0,
        t.by1,
        t.safe_cols_bgr if channels == 3 else t.safe_cols_grey,
        t.cols_exact,
        t.cols_identity,
        geometry.pad_top,
        geometry.pad_left,
        PAD_FLOAT,
        chunks,
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
    threads = kernel_threads()
    # Numba's workqueue pool aborts the whole process when two threads enter a
    # parallel kernel at once (an API thread warming a model while the loop
    # runs): a caller that finds the pool busy runs the serial kernel instead.
    if threads > 1 and _POOL.acquire(blocking=False):
        try:
            letterbox_kernel(*kernel_args(src, geometry, planes, threads))
        finally:
            _POOL.release()
    else:
        letterbox_kernel_serial(*kernel_args(src, geometry, planes, 1))
    return result
