"""One frame with two models' boxes: the active model's and the shadow's, for the report.

The active model's boxes are solid blue with their label above (``A <class> <conf>``);
the shadow's are magenta with corner marks and their label at the bottom edge
(``S <class> <conf>``), so boxes both models drew in the same place stay readable.
Colours are fixed per model, not per class: the question the picture answers is
"which model saw what".
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.appliance_api.http.annotate import encode_jpeg
from kanjian.inference.heads.drawing import bgr_copy, fit
from kanjian.inference.heads.label_text import label_px, put_label
from kanjian.station.records import StoredInspection
from kanjian.station.shadow.pictures import shadow_image
from kanjian.station.shadow.report import shadow_boxes

__all__ = ["ACTIVE_BGR", "SHADOW_BGR", "draw_pair", "shadow_image"]

ACTIVE_BGR = (200, 110, 20)  # blue
SHADOW_BGR = (190, 40, 200)  # magenta
#: small frames (NEU-DET's are 200 px) are drawn at least this large, so labels fit
MIN_SIDE = 480

Box = tuple[str, float, tuple[float, float, float, float]]


def _corners(img: NDArray[np.uint8], xyxy: tuple[int, int, int, int], c: tuple[int, int, int],
             t: int) -> None:  # fmt: skip
    x1, y1, x2, y2 = xyxy
    arm = max(4, min(x2 - x1, y2 - y1) // 4)
    for x, y, dx, dy in ((x1, y1, 1, 1), (x2, y1, -1, 1), (x1, y2, 1, -1), (x2, y2, -1, -1)):
        cv2.line(img, (x, y), (x + dx * arm, y), c, t + 2)
        cv2.line(img, (x, y), (x, y + dy * arm), c, t + 2)


def _label(img: NDArray[np.uint8], text: str, xy: tuple[int, int], c: tuple[int, int, int],
           px: int) -> None:  # fmt: skip
    if not put_label(img, text, xy, c, px):  # no font: OpenCV's, ASCII only
        cv2.putText(img, text, xy, cv2.FONT_HERSHEY_SIMPLEX, px / 30, c, 1, cv2.LINE_AA)


def draw_pair(
    image: NDArray[np.uint8],
    rec: StoredInspection,
    shadow_json: str,
    max_side: int | None,
    keep: Callable[[str, float], bool] | None = None,
) -> bytes:
    """JPEG of ``image`` (``(H, W, 3)`` BGR uint8, the frame) with ``rec``'s detections and
    the shadow's (``shadow_results.detections_json``) drawn; at most ``max_side`` px on
    its longest side, at least :data:`MIN_SIDE` (small frames are enlarged). ``keep(class,
    confidence)``: the boxes drawn (the screen's rule: what the verdict rules count; the
    weaker candidates stay in the report's numbers but would bury the picture)."""
    active: list[Box] = [(d.class_name, d.confidence, d.xyxy) for d in rec.detections]
    shadow: list[Box] = [(b.class_name, b.confidence, b.xyxy) for b in shadow_boxes(shadow_json)]
    if keep is not None:
        active = [b for b in active if keep(b[0], b[1])]
        shadow = [b for b in shadow if keep(b[0], b[1])]
    h, w = image.shape[:2]
    if max(h, w) < MIN_SIDE and (max_side is None or max_side > max(h, w)):
        up = min(MIN_SIDE, max_side or MIN_SIDE) / max(h, w)
        img = cv2.resize(bgr_copy(image), (round(w * up), round(h * up)),
                         interpolation=cv2.INTER_CUBIC).astype(np.uint8)  # fmt: skip
        scale = up
    else:
        img, scale = fit(bgr_copy(image), max_side)
    t = max(1, round(max(img.shape[:2]) / 400))
    px = label_px(*img.shape[:2])
    for name, conf, xyxy in reversed(active):
        x1, y1, x2, y2 = (round(v * scale) for v in xyxy)
        cv2.rectangle(img, (x1, y1), (x2, y2), ACTIVE_BGR, t + 1)
        _label(img, f"A {name} {conf:.2f}", (x1, y1), ACTIVE_BGR, px)
    for name, conf, xyxy in reversed(shadow):
        x1, y1, x2, y2 = (round(v * scale) for v in xyxy)
        cv2.rectangle(img, (x1, y1), (x2, y2), SHADOW_BGR, t)
        _corners(img, (x1, y1, x2, y2), SHADOW_BGR, t)
        _label(img, f"S {name} {conf:.2f}", (x1, y2), SHADOW_BGR, px)
    return encode_jpeg(img)
