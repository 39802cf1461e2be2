"""Where on the part a defect is, in words, and how big, in millimetres.

A line worker reads "scratches, top left, 12.3 x 4.5 mm", not ``[256,192,347,331]``.
The frame is cut into a 3x3 grid; a box is in the cell its centre falls in. The
verdict's reason (:mod:`kanjian.inference.verdict`) carries both as parameters
(``where``, ``size_mm``) and says them in its stored English sentence;
:func:`kanjian.inference.reason_where.place_reason` adds them to a detect verdict once
the frame size is known (the inspector calls it), and the size only when the camera's
scale is configured (``camera.mm_per_px``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

Where = Literal[
    "top_left",
    "top",
    "top_right",
    "left",
    "centre",
    "right",
    "bottom_left",
    "bottom",
    "bottom_right",
]
#: the cells row by row, top left first
WHERE: tuple[Where, ...] = get_args(Where)
#: the codes the reasons carry, and the words the English sentence uses for them
WHERE_WORDS: dict[str, str] = {w: w.replace("_", " ") for w in WHERE}


def where_on_frame(xyxy: Sequence[float], frame_wh: tuple[int, int]) -> Where:
    """The 3x3 cell of a ``(W, H)`` frame that the box's centre falls in.

    Args:
        xyxy: ``x1, y1, x2, y2`` in frame pixels.
        frame_wh: the frame's width and height, pixels (> 0).

    A centre on a third's line goes to the later cell; one outside the frame to the
    nearest edge cell.
    """
    w, h = frame_wh
    if w <= 0 or h <= 0:
        raise ValueError(f"frame size must be positive, got {frame_wh}")
    cx, cy = (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2
    col = min(2, max(0, math.floor(3 * cx / w)))
    row = min(2, max(0, math.floor(3 * cy / h)))
    return WHERE[3 * row + col]


def size_mm(xyxy: Sequence[float], mm_per_px: float) -> list[float]:
    """``[width, height]`` of a box in millimetres, one decimal."""
    return [
        round(abs(xyxy[2] - xyxy[0]) * mm_per_px, 1),
        round(abs(xyxy[3] - xyxy[1]) * mm_per_px, 1),
    ]
