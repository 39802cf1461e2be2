"""Slow, obviously-correct NumPy references for the preprocessing kernels (tests only).

Written for reading, not speed: one Python loop per output index for the
coefficients, whole-array integer NumPy for the sums, no shared code with the
kernels' tables except the letterbox geometry (which is itself tested against
Ultralytics). The arithmetic is OpenCV's uint8 ``INTER_LINEAR`` as documented
in :mod:`kanjian.kernels.tables`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from kanjian.kernels.geometry import PAD_VALUE, Letterbox, letterbox_geometry

__all__ = ["PAD_VALUE", "letterbox_reference", "resize_linear_reference"]


def _axis(src_len: int, dst_len: int, clamp_fraction: bool) -> list[tuple[int, int, int, int]]:
    """Per output index: (first source index, second source index, weight0, weight1)."""
    scale = 1.0 / (dst_len / src_len)
    taps = []
    for d in range(dst_len):
        f = np.float32((d + 0.5) * scale - 0.5)  # OpenCV: double math, stored as float
        s = math.floor(f)
        frac = np.float32(f - np.float32(s))
        if clamp_fraction and s < 0:
            s, frac = 0, np.float32(0.0)
        if clamp_fraction and s >= src_len - 1:
            s, frac = src_len - 1, np.float32(0.0)
        w0 = int(np.rint((np.float32(1.0) - frac) * np.float32(2048.0)))
        w1 = int(np.rint(frac * np.float32(2048.0)))
        i0 = min(max(s, 0), src_len - 1)
        i1 = min(max(s + 1, 0), src_len - 1)
        taps.append((i0, i1, w0, w1))
    return taps


def resize_linear_reference(image: NDArray[np.uint8], new_hw: tuple[int, int]) -> NDArray[np.uint8]:
    """``cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`` in NumPy.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` uint8.
        new_hw: output ``(height, width)``.

    Returns:
        uint8 array of shape ``(new_h, new_w, C)`` (or ``(new_h, new_w)``).
    """
    img = image if image.ndim == 3 else image[:, :, None]
    h, w = img.shape[:2]
    new_h, new_w = new_hw
    if (new_h, new_w) == (h, w):
        return image.copy()  # cv2.resize copies when the size does not change
    xs = _axis(w, new_w, clamp_fraction=True)
    ys = _axis(h, new_h, clamp_fraction=False)
    x0, x1, a0, a1 = (np.array(c, dtype=np.int64) for c in zip(*xs, strict=True))
    y0, y1, b0, b1 = (np.array(c, dtype=np.int64) for c in zip(*ys, strict=True))
    # Horizontal pass: exact integer sums at 11 fractional bits.
    left = img[:, x0, :].astype(np.int64)
    right = img[:, x1, :].astype(np.int64)
    hsum = left * a0[None, :, None] + right * a1[None, :, None]
    # Vertical pass with OpenCV's SIMD rounding: drop 4 bits, keep the high
    # 16 bits of each product, then round the last 2 bits.
    top = ((hsum[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((hsum[y1] >> 4) * b1[:, None, None]) >> 16
    out: NDArray[np.uint8] = np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[:, :, 0]


def letterbox_reference(
    image: NDArray[np.uint8], dst_hw: tuple[int, int]
) -> tuple[NDArray[np.float32], Letterbox]:
    """The model input for ``image``: letterboxed, RGB, CHW, float32 in ``[0, 1]``.

    Args:
        image: ``(H, W, 3)`` uint8 BGR or ``(H, W)`` uint8 grey.
        dst_hw: model input ``(height, width)``.

    Returns:
        ``(tensor, geometry)``: tensor ``(3, dst_h, dst_w)`` float32, and the
        letterbox used.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # grey -> BGR, like cv2.cvtColor
    g = letterbox_geometry(image.shape[:2], dst_hw)
    resized = resize_linear_reference(image, (g.new_h, g.new_w))
    canvas = np.full((g.dst_h, g.dst_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[g.pad_top : g.pad_top + g.new_h, g.pad_left : g.pad_left + g.new_w] = resized
    rgb_chw = canvas[:, :, ::-1].transpose(2, 0, 1)
    return rgb_chw.astype(np.float32) / np.float32(255.0), g
