"""Drawing boxes, masks, labels and the verdict on a frame, for people to look at.

No words go into the picture: OpenCV's fonts cannot draw Chinese, and the screen
already says the verdict and its reason in the operator's language. The verdict is
a coloured frame; a box's label is its class name and confidence, as the model has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.camera.frame import Frame
from kanjian.inference.types import Inspection, Verdict
from kanjian.inference.verdict import VerdictRules

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
VERDICT_BGR = {
    Verdict.PASS.value: (60, 160, 40),
    Verdict.FAIL.value: (40, 40, 210),
    Verdict.REVIEW.value: (0, 170, 240),
    Verdict.ERROR.value: (120, 120, 120),
    Verdict.MISSED.value: (120, 120, 120),
}


@dataclass(frozen=True)
class Box:
    """One box to draw, in source-frame pixels."""

    xyxy: tuple[float, float, float, float]
    class_id: int
    label: str


def class_colour(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


def draw(
    image: NDArray[np.uint8],
    boxes: Sequence[Box],
    verdict: str | None,
    masks: NDArray[np.bool_] | None = None,
    max_side: int | None = None,
) -> NDArray[np.uint8]:
    """A BGR copy of ``image`` with masks, boxes, labels and the verdict drawn on it.

    Args:
        image: ``(H, W, 3)`` BGR or ``(H, W)`` grey uint8 source frame.
        boxes: in source pixels.
        verdict: drawn as a frame around the picture in the verdict's colour
            (no text); ``None`` draws none.
        masks: optional ``(n, H, W)`` bool, one per box.
        max_side: shrink so the longest side is at most this many pixels.

    Returns:
        ``(h, w, 3)`` uint8 BGR, scaled by ``min(1, max_side / max(H, W))``.
    """
    img = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    if masks is not None and len(masks):
        overlay = img.copy()
        for box, m in zip(boxes, masks, strict=False):
            overlay[m] = class_colour(box.class_id)
        img = cv2.addWeighted(overlay, 0.4, img, 0.6, 0)
    scale = 1.0
    h, w = img.shape[:2]
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    # line and font size follow the picture so labels stay readable at any size
    thick = max(1, round(max(h, w) / 400))
    font = max(0.4, max(h, w) / 1000)
    for box in boxes:
        c = class_colour(box.class_id)
        x1, y1, x2, y2 = (round(v * scale) for v in box.xyxy)
        cv2.rectangle(img, (x1, y1), (x2, y2), c, thick + 1)
        (tw, th), base = cv2.getTextSize(box.label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + base + 4
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw + 4, ty + base // 2), c, -1)
        cv2.putText(
            img,
            box.label,
            (x1 + 2, ty - base // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
    if verdict is not None:
        # a frame, not a bar: it hides no defect near the top edge and needs no words
        edge = max(3, round(max(h, w) / 120))
        colour = VERDICT_BGR.get(verdict, (90, 90, 90))
        img[:edge], img[-edge:], img[:, :edge], img[:, -edge:] = colour, colour, colour, colour
    return img.astype(np.uint8, copy=False)


#: decides whether a detection is drawn: ``keep(class_name, confidence)``
Keep = Callable[[str, float], bool]


def rules_keep(rules: VerdictRules) -> Keep:
    """Draw what the verdict rules count: not ignored, at least ``review_confidence``.

    The model's weaker candidates stay in the API's data but would only clutter
    the operator's picture.
    """

    def keep(name: str, conf: float) -> bool:
        rule = rules.rule_for(name)
        return not rule.ignore and conf >= rule.review_confidence

    return keep


def inspection_boxes(
    insp: Inspection, keep: Keep | None = None
) -> tuple[list[Box], NDArray[np.bool_] | None]:
    """Boxes to draw and their masks (``(k, H, W)`` bool or ``None``)."""
    d = insp.detections
    names = insp.class_names
    out, idx = [], []
    for i, (xyxy, conf, cid) in enumerate(zip(d.xyxy, d.confidence, d.class_id, strict=False)):
        c = int(cid)
        name = names[c] if 0 <= c < len(names) else str(c)
        if keep is not None and not keep(name, float(conf)):
            continue
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        out.append(Box((x1, y1, x2, y2), c, f"{name} {float(conf):.2f}"))
        idx.append(i)
    masks = None if d.masks is None else d.masks[np.asarray(idx, np.intp)]
    return out, masks


def annotate_inspection(
    insp: Inspection, max_side: int | None = None, keep: Keep | None = None
) -> NDArray[np.uint8] | None:
    """The inspection's frame with its detections drawn; ``None`` for a failure (no image)."""
    if not isinstance(insp.frame, Frame):
        return None
    boxes, masks = inspection_boxes(insp, keep)
    return draw(insp.frame.image, boxes, insp.verdict.value, masks, max_side)


def encode_jpeg(image: NDArray[np.uint8], quality: int = 80) -> bytes:
    """JPEG bytes of a BGR or grey uint8 image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


def placeholder(text: str = "", size_wh: tuple[int, int] = (640, 400)) -> NDArray[np.uint8]:
    """A grey ``(h, w, 3)`` BGR picture (no frame yet), saying ``text`` if one is given.

    The screen passes none: it says "waiting" itself, in the operator's language.
    """
    w, h = size_wh
    img = np.full((h, w, 3), 48, np.uint8)
    if text:
        cv2.putText(
            img, text, (20, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (220, 220, 220), 2, cv2.LINE_AA
        )
    return img
