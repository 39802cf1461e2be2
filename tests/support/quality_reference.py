"""Slow, obviously-correct NumPy/OpenCV reference of the image-quality kernels (tests only).

Built from OpenCV's own operations where it has them (``cv2.cvtColor`` for the luma,
``cv2.Laplacian`` for the Laplacian) and whole-array NumPy for the rest; the sampled
rows are written out again here, not taken from the kernels. Definitions:
:mod:`kanjian.kernels.quality`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.kernels.quality import SEGMENT

__all__ = ["ReferenceQuality", "quality_reference_numbers", "reference_rows"]


@dataclass(frozen=True)
class ReferenceQuality:
    """The reference's numbers, and the exact integers behind them."""

    focus: float
    mean: float
    dark: float
    bright: float
    pixels: int
    focus_pixels: int
    luma_sum: int
    dark_count: int
    bright_count: int
    lap_sum: int
    lap_sq_sum: int
    segments: NDArray[np.int64]  # (R, W // SEGMENT) luma sums of the full segments

    def reference_diff(self, other: ReferenceQuality) -> float | None:
        """Mean over the segments of |this segment mean - ``other``'s|, or None."""
        if self.segments.shape != other.segments.shape or self.segments.size == 0:
            return None
        return float(np.mean(np.abs(self.segments / SEGMENT - other.segments / SEGMENT)))


def reference_rows(height: int, rows: int | None) -> list[int]:
    """The sampled rows, one at a time: the middle row of each of ``rows`` equal bands of
    the interior rows ``1 .. H-2`` (integer division), or every row."""
    if rows is None or height < 3:
        return list(range(height))
    out: list[int] = []
    for i in range(rows):
        y = 1 + ((2 * i + 1) * (height - 2)) // (2 * rows)
        if y not in out:
            out.append(y)
    return out


def quality_reference_numbers(
    image: NDArray[np.uint8], rows: int | None = None, low_clip: int = 2, high_clip: int = 253
) -> ReferenceQuality:
    """The quality numbers of ``image`` (BGR or grey uint8), computed the slow way."""
    luma = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = luma.shape
    ys = reference_rows(h, rows)
    sampled = luma[ys].astype(np.int64)
    lap = cv2.Laplacian(luma, cv2.CV_16S, ksize=1).astype(np.int64)  # borders unused
    inner = lap[[y for y in ys if 1 <= y <= h - 2], 1 : w - 1]
    gw = w // SEGMENT
    segments = sampled[:, : gw * SEGMENT].reshape(len(ys), gw, SEGMENT).sum(axis=2)
    return ReferenceQuality(
        focus=float(np.var(inner.astype(np.float64))) if inner.size else 0.0,
        mean=float(np.mean(sampled.astype(np.float64))) if sampled.size else 0.0,
        dark=float(np.mean(sampled <= low_clip)) if sampled.size else 0.0,
        bright=float(np.mean(sampled >= high_clip)) if sampled.size else 0.0,
        pixels=int(sampled.size),
        focus_pixels=int(inner.size),
        luma_sum=int(sampled.sum()),
        dark_count=int((sampled <= low_clip).sum()),
        bright_count=int((sampled >= high_clip).sum()),
        lap_sum=int(inner.sum()),
        lap_sq_sum=int((inner * inner).sum()),
        segments=segments.astype(np.int64),
    )
