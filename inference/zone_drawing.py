"""The verdict rules' zones drawn on a picture for people: ROI outlines, hatched ignores.

ROI zones (and the older ``roi_xyxy`` rectangle) get a cyan outline; ignore zones a
magenta outline over a light magenta tint with diagonal hatching, so a defect inside
one still shows through and is plainly marked as not counted. No words: the zone
page lists the names.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.inference.verdict import VerdictRules
from kanjian.inference.zone_geometry import fill_centres

__all__ = ["IGNORE_BGR", "ROI_BGR", "draw_zones"]

#: BGR; apart from the verdict colours (green, red, amber, grey) around the picture
ROI_BGR = (255, 210, 0)
IGNORE_BGR = (200, 40, 220)
_TINT = 0.25  # share of the ignore colour blended over the picture


def draw_zones(img: NDArray[np.uint8], rules: VerdictRules | None, scale: float = 1.0) -> None:
    """Draw ``rules``' zones on ``img`` in place.

    Args:
        img: ``(h, w, 3)`` BGR uint8, the picture (possibly shrunk from the source frame).
        rules: the verdict rules whose zones to draw; ``None`` or no zones draws nothing.
        scale: picture pixels per source pixel (the zones are in source pixels).
    """
    if rules is None or (not rules.zones and rules.roi_xyxy is None):
        return
    h, w = img.shape[:2]
    thick = max(1, round(max(h, w) / 500))
    ignore = [z.array() * scale for z in rules.zones if z.kind == "ignore"]
    if ignore:
        inside = np.zeros((h, w), bool)
        for p in ignore:
            fill_centres(p, (h, w), inside)
        rows, cols = np.nonzero(inside)
        if len(rows):
            px = img[rows, cols].astype(np.float32)
            tinted = px * (1 - _TINT) + np.array(IGNORE_BGR, np.float32) * _TINT
            # hatching: diagonal lines `step` pixels apart, as thick as the outlines
            step = max(6, 4 * thick + 4)
            hatch = (rows + cols) % step < max(1, thick)
            tinted[hatch] = IGNORE_BGR
            img[rows, cols] = tinted.astype(np.uint8)
    outline = [(z.array() * scale, ROI_BGR if z.kind == "roi" else IGNORE_BGR) for z in rules.zones]
    if rules.roi_xyxy is not None:
        x1, y1, x2, y2 = (v * scale for v in rules.roi_xyxy)
        outline.append((np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), ROI_BGR))
    for pts, colour in outline:
        # 1/16 px vertices (shift 4); pixel j's centre is j + 0.5 in source coordinates
        ipts = np.round((pts - 0.5) * 16).astype(np.int32)
        cv2.polylines(img, [ipts], True, colour, thick + 1, cv2.LINE_AA, shift=4)
