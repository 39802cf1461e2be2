"""Checks every reader shares: real image size, boxes inside the image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.training.records import Problem, ProblemKind

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: a box whose corners lie at most this many pixels outside is clipped without comment
#: (annotation tools often write ``xmax = width``, one past the last pixel)
_SLACK_PX = 1.0
#: boxes thinner than this (pixels) after clipping carry no object
_MIN_SIDE_PX = 1.0
#: EXIF tag holding the orientation (1 = upright, 5..8 = turned by 90 degrees)
_EXIF_ORIENTATION = 0x0112


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file in pixels, as it is displayed and trained on.

    Read from the header; when the EXIF orientation (tag 274) turns the picture
    by 90 degrees (values 5 to 8), width and height are swapped: OpenCV's
    ``imread``, which Ultralytics trains with, applies the orientation, and
    annotation tools that show the photo upright (browsers, CVAT) label it in
    that frame. Ultralytics' own ``exif_size`` swaps for 6 and 8; 5 and 7 are
    the mirrored variants of the same turns, which OpenCV transposes as well.

    Raises:
        OSError: when the file is missing or not a decodable image.
    """
    import struct

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            orientation = _orientation(im)
            im.verify()
            w, h = int(im.width), int(im.height)
    except UnidentifiedImageError as e:
        raise OSError(f"not an image: {e}") from e
    # PIL raises these on truncated or garbled headers and EXIF blocks
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        raise OSError(f"corrupt image: {e}") from e
    except Image.DecompressionBombError as e:
        raise OSError(f"refused: {e}") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _orientation(im: PILImage) -> int:
    """EXIF orientation of an open PIL image (1 when absent), without decoding pixels.

    ``Image.getexif()`` would decode a PNG whose EXIF is not in its header, and
    ``verify()`` must come before any decoding; so JPEG/PNG/WebP EXIF is parsed
    from the header bytes PIL keeps in ``info``, TIFF from its tags.
    """
    from PIL import Image

    raw = im.info.get("exif")
    if raw:
        exif = Image.Exif()
        exif.load(raw)
    elif im.format == "TIFF":
        exif = im.getexif()
    else:
        return 1
    value = exif.get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


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
