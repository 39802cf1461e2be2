"""Drawing the task heads share: class colours, mask tints, boxes and labels.

No words but labels go into the picture (the screen says the verdict and its reason
in the operator's language): a label is the class's display name in the station's
language and the confidence, drawn with Pillow's FreeType and the app's CJK font
(:mod:`kanjian.inference.heads.label_text`; OpenCV's fonts cannot draw Chinese).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.inference.heads.base import Keep
from kanjian.inference.heads.label_text import label_px, put_label
from kanjian.inference.types import Inspection

# BGR, distinct on a grey steel surface; class id picks one (mod len)
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (211, 188, 0),
    (209, 85, 0),
    (255, 194, 0),
    (147, 69, 52),
)


@dataclass(frozen=True)
class Box:
    """One box to draw, in source-frame pixels."""

    xyxy: tuple[float, float, float, float]
    class_id: int
    label: str


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class id."""
    return _PALETTE[class_id % len(_PALETTE)]


def bgr_copy(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A ``(H, W, 3)`` BGR uint8 copy of a BGR or grey ``image``."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR).astype(np.uint8, copy=False)
    return image.copy()


def tint_masks(
    img: NDArray[np.uint8], boxes: Sequence[Box], masks: NDArray[np.bool_] | None
) -> NDArray[np.uint8]:
    """``img`` with each ``(H, W)`` bool mask blended 40 % in its box's class colour.

    Args:
        img: ``(H, W, 3)`` BGR uint8 at the masks' size.
        masks: ``(n, H, W)`` bool, one per box, or ``None``.
    """
    if masks is None or not len(masks):
        return img
    overlay = img.copy()
    for box, m in zip(boxes, masks, strict=False):
        overlay[m] = class_colour(box.class_id)
    return cv2.addWeighted(overlay, 0.4, img, 0.6, 0).astype(np.uint8, copy=False)


def fit(img: NDArray[np.uint8], max_side: int | None) -> tuple[NDArray[np.uint8], float]:
    """``img`` shrunk so its longest side is at most ``max_side`` px, and the scale used."""
    h, w = img.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return img, 1.0
    scale = max_side / max(h, w)
    out = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return out.astype(np.uint8, copy=False), scale


def draw_boxes(img: NDArray[np.uint8], boxes: Sequence[Box], scale: float = 1.0) -> None:
    """Draw outlines and filled labels in place; box coordinates times ``scale``."""
    h, w = img.shape[:2]
    # line and font size follow the picture so labels stay readable at any size
    thick = max(1, round(max(h, w) / 400))
    px = label_px(h, w)
    # last drawn is on top: detections come strongest first, and where labels overlap
    # the strongest one (the reason's) must stay readable
    for box in reversed(boxes):
        c = class_colour(box.class_id)
        x1, y1, x2, y2 = (round(v * scale) for v in box.xyxy)
        cv2.rectangle(img, (x1, y1), (x2, y2), c, thick + 1)
        if not put_label(img, box.label, (x1, y1), c, px):  # no font: OpenCV's, ASCII only
            _cv2_label(img, box.label, (x1, y1), c, thick)


def _cv2_label(
    img: NDArray[np.uint8], label: str, xy: tuple[int, int], c: tuple[int, int, int], thick: int
) -> None:
    """The label in OpenCV's Hershey font (when the app's font cannot be read)."""
    h, w = img.shape[:2]
    font = max(0.4, max(h, w) / 1000)
    x1, y1 = xy
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
    ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + base + 4
    cv2.rectangle(img, (x1, ty - th - base), (x1 + tw + 4, ty + base // 2), c, -1)
    cv2.putText(
        img,
        label,
        (x1 + 2, ty - base // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        font,
        (255, 255, 255),
        thick,
        cv2.LINE_AA,
    )


def box_label(class_name: str, confidence: float, names: Mapping[str, str] | None) -> str:
    """``"<display name> <conf>"``: the class's display name when ``names`` has one."""
    shown = names.get(class_name, class_name) if names else class_name
    return f"{shown} {confidence:.2f}"


def detection_boxes(
    insp: Inspection, keep: Keep | None = None, names: Mapping[str, str] | None = None
) -> tuple[list[Box], list[int]]:
    """Boxes to draw for ``insp``'s detections (label ``"<name> <conf>"``, the display
    name from ``names`` by class name, else the class name), and the indices of the
    detections they come from."""
    d = insp.detections
    classes = insp.class_names
    out, idx = [], []
    for i, (xyxy, conf, cid) in enumerate(zip(d.xyxy, d.confidence, d.class_id, strict=False)):
        c = int(cid)
        name = classes[c] if 0 <= c < len(classes) else str(c)
        if keep is not None and not keep(name, float(conf)):
            continue
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        out.append(Box((x1, y1, x2, y2), c, box_label(name, float(conf), names)))
        idx.append(i)
    return out, idx
