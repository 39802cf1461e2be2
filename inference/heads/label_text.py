"""Words on pictures: box labels drawn with Pillow's FreeType and the app's own CJK font.

OpenCV's Hershey fonts know ASCII only; a label in Chinese (``划痕 0.81``) needs a real
font. The app ships one for its screen (``appliance_api/http/static/fonts``, a WOFF2
subset of Noto Sans CJK SC); Pillow's FreeType reads that same WOFF2 file, so
pictures and screen use one font and nothing is converted or cached on disk. Should
the installed Pillow's FreeType lack WOFF2 support, labels fall back to OpenCV's font
(class names only render in ASCII) and the log says why, once.

Each label is rendered once into a small ``(h, w)`` coverage mask and cached (labels
repeat from frame to frame); drawing is blending that mask into the picture.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

#: the screen's bold face: labels are small, white on colour, and must read at a glance
FONT_FILE = (
    Path(__file__).resolve().parents[2]  # the kanjian package root (or the checkout)
    / "appliance_api"
    / "http"
    / "static"
    / "fonts"
    / "KanjianSans-Bold.woff2"
)


def label_px(h: int, w: int) -> int:
    """Label text size in pixels for an ``h`` x ``w`` picture: readable at any size."""
    return max(12, round(max(h, w) / 32))


def label_font(px: int, path: Path | None = None) -> object | None:
    """The label font (default :data:`FONT_FILE`) at ``px`` pixels (a Pillow
    ``FreeTypeFont``), or ``None`` when it cannot be read (logged once per size)."""
    return _font(px, path or FONT_FILE)


@functools.lru_cache(maxsize=16)
def _font(px: int, path: Path) -> object | None:
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(path), px)
    except (OSError, ValueError) as e:  # no file, or a FreeType without WOFF2 (brotli)
        log.warning(
            "cannot read the label font %s (%s): labels on pictures fall back to OpenCV's "
            "font, which draws no Chinese; reinstall kanjian or Pillow",
            path,
            e,
        )
        return None


def text_mask(text: str, px: int, path: Path | None = None) -> NDArray[np.uint8] | None:
    """``(h, w)`` uint8 coverage of ``text`` in the label font (default
    :data:`FONT_FILE`; 255 = ink), read-only; ``h`` is the font's ascent + descent so
    labels of one size line up. ``None`` when the font cannot be read."""
    return _mask(text, px, path or FONT_FILE)


@functools.lru_cache(maxsize=2048)
def _mask(text: str, px: int, path: Path) -> NDArray[np.uint8] | None:
    from PIL import Image, ImageDraw, ImageFont

    font = _font(px, path)
    if not isinstance(font, ImageFont.FreeTypeFont):
        return None
    ascent, descent = font.getmetrics()
    width = max(1, int(np.ceil(font.getlength(text))))
    im = Image.new("L", (width, ascent + descent), 0)
    ImageDraw.Draw(im).text((0, 0), text, fill=255, font=font)
    mask = np.asarray(im, np.uint8).copy()
    mask.setflags(write=False)
    return mask


def put_label(
    img: NDArray[np.uint8],
    text: str,
    xy: tuple[int, int],
    colour: tuple[int, int, int],
    px: int,
    path: Path | None = None,
) -> bool:
    """Draw ``text`` white on a ``colour`` plate whose bottom-left corner is at ``xy``,
    in place, clipped to the picture; moved below ``xy`` when there is no room above.

    Args:
        img: ``(H, W, 3)`` BGR uint8.
        xy: ``(x, y)``: the box's top-left corner, pixels.
        colour: BGR of the plate.
        px: text size, pixels.
        path: the font (default :data:`FONT_FILE`).

    Returns:
        ``False`` when the font cannot be read (nothing drawn: the caller falls back).
    """
    mask = text_mask(text, px, path)
    if mask is None:
        return False
    mh, mw = mask.shape
    pad = max(1, px // 8)
    ph, pw = mh + 2 * pad, mw + 2 * pad
    H, W = img.shape[:2]
    x, y = xy
    top = y - ph if y - ph >= 0 else y  # above the box, else just inside it
    left = min(max(x, 0), max(W - pw, 0))
    # the plate and the text, each cut to what lies inside the picture
    y0, y1, x0, x1 = max(top, 0), min(top + ph, H), max(left, 0), min(left + pw, W)
    if y0 >= y1 or x0 >= x1:
        return True
    img[y0:y1, x0:x1] = colour
    ty, tx = top + pad, left + pad
    sy0, sy1, sx0, sx1 = max(ty, 0), min(ty + mh, H), max(tx, 0), min(tx + mw, W)
    if sy0 >= sy1 or sx0 >= sx1:
        return True
    a = mask[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx, None].astype(np.uint16)
    region = img[sy0:sy1, sx0:sx1]
    # white over the plate, by coverage: (c * (255 - a) + 255 * a) / 255, in integers
    region[:] = ((region.astype(np.uint16) * (255 - a) + 255 * a + 127) // 255).astype(np.uint8)
    return True
