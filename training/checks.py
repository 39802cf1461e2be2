"""Checks every reader shares: real image size, boxes inside the image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.training.records import Problem, ProblemKind

#: a box whose corners lie at most this many pixels outside is clipped without comment
#: (annotation tools often write ``xmax = width``, one past the last pixel)
_SLACK_PX = 1.0
#: boxes thinner than this (pixels) after clipping carry no object
_MIN_SIDE_PX = 1.0


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file in pixels, read from its header.

    Raises:
        OSError: when the file is missing or not a decodable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
            return int(im.width), int(im.height)
    except UnidentifiedImageError as e:
        raise OSError(f"not an image: {e}") from e
    except (ValueError, SyntaxError) as e:  # PIL raises these on truncated headers
        raise OSError(f"corrupt image: {e}") from e


def clip_box(
    xyxy: tuple[float, float, float, float],
    width: int,
    height: int,
    file: str,
    label: str,
) -> tuple[tuple[float, float, float, float] | None, Problem | None]:
    """Clip a box to the image; drop it when nothing usable is left.

    Args:
        xyxy: corners in real-image pixels.
        width, height: real image size in pixels.
        file: annotation file, for the problem report.
        label: what to call the box in messages (e.g. ``"object 2 (scratches)"``).

    Returns:
        the clipped box (or None when dropped) and a problem when it lay outside
        by more than one pixel or was degenerate.
    """
    x1, y1, x2, y2 = xyxy
    if not all(v == v and abs(v) != float("inf") for v in xyxy):
        return None, Problem(ProblemKind.BAD_BOX, file, f"{label}: non-finite corners {xyxy}")
    if x2 <= x1 or y2 <= y1:
        return None, Problem(
            ProblemKind.BAD_BOX, file, f"{label}: corners out of order or empty {xyxy}; dropped"
        )
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    outside = (
        x1 < -_SLACK_PX or y1 < -_SLACK_PX or x2 > width + _SLACK_PX or y2 > height + _SLACK_PX
    )
    if cx2 - cx1 < _MIN_SIDE_PX or cy2 - cy1 < _MIN_SIDE_PX:
        return None, Problem(
            ProblemKind.BOX_OUTSIDE,
            file,
            f"{label}: box {_fmt(xyxy)} lies outside the {width}x{height} image; dropped",
        )
    problem = None
    if outside:
        problem = Problem(
            ProblemKind.BOX_OUTSIDE,
            file,
            f"{label}: box {_fmt(xyxy)} reaches outside the {width}x{height} image; "
            f"clipped to {_fmt((cx1, cy1, cx2, cy2))}",
        )
    return (cx1, cy1, cx2, cy2), problem


def _fmt(xyxy: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in xyxy) + ")"


def read_bgr(path: Path) -> NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 BGR pixels of an image file.

    Raises:
        OSError: naming the file when it cannot be read or decoded.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot read image")
    return np.ascontiguousarray(image, dtype=np.uint8)
