"""Drawing an inspection's result and its verdict on a frame, for people to look at.

What a result looks like is its task head's business (:mod:`kanjian.inference.heads`:
boxes for detect, tinted masks for segment, nothing for classify); this module adds
the verdict as a coloured frame around the picture. The only words in the picture
are the box labels: display name in the station's language (``api.language``) and
confidence, drawn with the app's own CJK font; the screen says the verdict and its
reason itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from kanjian.camera.frame import Frame
from kanjian.inference.heads import Keep, find_head
from kanjian.inference.heads.drawing import (
    Box,
    bgr_copy,
    box_label,
    class_colour,
    draw_boxes,
    fit,
    tint_masks,
)
from kanjian.inference.types import Inspection, Verdict
from kanjian.inference.verdict import VerdictRules
from kanjian.inference.zone_drawing import draw_zones

__all__ = [
    "VERDICT_BGR",
    "Box",
    "Keep",
    "RulesKeep",
    "annotate_inspection",
    "box_label",
    "class_colour",
    "draw",
    "encode_jpeg",
    "placeholder",
    "rules_keep",
]

VERDICT_BGR = {
    Verdict.PASS.value: (60, 160, 40),
    Verdict.FAIL.value: (40, 40, 210),
    Verdict.REVIEW.value: (0, 170, 240),
    Verdict.ERROR.value: (120, 120, 120),
    Verdict.MISSED.value: (120, 120, 120),
}


def _verdict_frame(img: NDArray[np.uint8], verdict: str) -> None:
    """Paint the verdict's colour around ``img``'s edge, in place."""
    # a frame, not a bar: it hides no defect near the top edge and needs no words
    h, w = img.shape[:2]
    edge = max(3, round(max(h, w) / 120))
    colour = VERDICT_BGR.get(verdict, (90, 90, 90))
    img[:edge], img[-edge:], img[:, :edge], img[:, -edge:] = colour, colour, colour, colour


def draw(
    image: NDArray[np.uint8],
    boxes: Sequence[Box],
    verdict: str | None,
    masks: NDArray[np.bool_] | None = None,
    max_side: int | None = None,
    zones: VerdictRules | None = None,
) -> NDArray[np.uint8]:
    """A BGR copy of ``image`` with masks, boxes, labels and the verdict drawn on it
    (for results read back from the store, where no inspection object is left).

    Args:
        image: ``(H, W, 3)`` BGR or ``(H, W)`` grey uint8 source frame.
        boxes: in source pixels.
        verdict: drawn as a frame around the picture in the verdict's colour
            (no text); ``None`` draws none.
        masks: optional ``(n, H, W)`` bool, one per box.
        max_side: shrink so the longest side is at most this many pixels.
        zones: verdict rules whose zones (ROI outlines, hatched ignores) to draw.

    Returns:
        ``(h, w, 3)`` uint8 BGR, scaled by ``min(1, max_side / max(H, W))``.
    """
    img, scale = fit(tint_masks(bgr_copy(image), boxes, masks), max_side)
    draw_zones(img, zones, scale)  # under the boxes: their labels stay readable
    draw_boxes(img, boxes, scale)
    if verdict is not None:
        _verdict_frame(img, verdict)
    return img


@dataclass(frozen=True)
class RulesKeep:
    """A :data:`Keep` made from verdict rules, which carries them (and so their zones,
    drawn by :func:`annotate_inspection`)."""

    rules: VerdictRules

    def __call__(self, name: str, conf: float) -> bool:
        rule = self.rules.rule_for(name)
        return not rule.ignore and conf >= rule.review_confidence


def rules_keep(rules: VerdictRules) -> RulesKeep:
    """Draw what the verdict rules count: not ignored, at least ``review_confidence``.

    The model's weaker candidates stay in the API's data but would only clutter
    the operator's picture.
    """
    return RulesKeep(rules)


def annotate_inspection(
    insp: Inspection,
    max_side: int | None = None,
    keep: Keep | None = None,
    names: Mapping[str, str] | None = None,
) -> NDArray[np.uint8] | None:
    """The inspection's frame with its result and verdict drawn; ``None`` for a failure
    (no image). An inspection no model's output came with shows the verdict alone.
    A ``keep`` made by :func:`rules_keep` also draws its rules' zones. ``names``: display
    names by class name for the labels (else class names)."""
    if not isinstance(insp.frame, Frame):
        return None
    image = insp.frame.image
    if isinstance(keep, RulesKeep) and (keep.rules.zones or keep.rules.roi_xyxy is not None):
        image = bgr_copy(image)
        draw_zones(image, keep.rules)  # under what the head draws: labels stay readable
    head = find_head(insp.task)
    if head is None:
        img = fit(bgr_copy(image), max_side)[0]
    else:
        img = head.draw(image, insp, keep, max_side, names)
    _verdict_frame(img, insp.verdict.value)
    return img


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
