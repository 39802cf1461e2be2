"""The annotated pictures people look at: masks, boxes and the verdict's border, from a real
segment model trained by our own code (the live view and the saved images' ?annotated=true)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from kanjian.appliance_api.http.annotate import VERDICT_BGR, annotate_inspection, class_colour
from kanjian.camera.frame import Frame
from kanjian.camera.source import utc_now
from kanjian.inference.model import load_model
from kanjian.inference.verdict import VerdictRules
from kanjian.station.inspector import Inspector
from tests.support import scores


def _away(d: Any, h: int, w: int) -> Any:
    """``(h, w)`` bool: away from box outlines, labels and the verdict's border."""
    away = np.ones((h, w), bool)
    for x1, y1, x2, y2 in d.xyxy.round().astype(int):
        for xa, ya, xb, yb in ((x1, y1, x2, y1), (x1, y2, x2, y2), (x1, y1, x1, y2),
                               (x2, y1, x2, y2)):  # fmt: skip
            r0, r1 = max(0, min(ya, yb) - 6), max(ya, yb) + 6
            away[r0:r1, max(0, min(xa, xb) - 6) : max(xa, xb) + 6] = False
        # its label: from the box's corner, or moved left so it stays whole in the picture
        away[max(0, y1 - 40) : y1 + 40, max(0, min(x1, w - 300) - 6) : x1 + 300] = False
    edge = max(3, round(max(h, w) / 120))
    away[: edge + 2], away[-edge - 2 :], away[:, : edge + 2], away[:, -edge - 2 :] = (
        False,
        False,
        False,
        False,
    )
    return away


def test_masks_are_tinted_in_their_class_colour_and_the_rest_is_untouched(
    segment_model: Any,
) -> None:
    model = load_model(segment_model.onnx, ("cpu",))
    images = tuple(segment_model.val_images)
    per = scores.detection_scores(segment_model.onnx, images)
    # images by the model's measured top score, each at a conf that keeps its top
    # detection: the first with mask pixels away from outlines and labels is looked at
    ranked = sorted((i for i in range(len(images)) if len(per[i])), key=lambda i: -per[i][0])
    for i in ranked:
        ins = Inspector(model, VerdictRules(), conf=scores.conf_with_detections([per[i]], 1))
        image = cv2.imread(str(images[i]), cv2.IMREAD_COLOR)
        insp = ins.inspect(Frame(image, i, "t", utc_now(), uri=str(images[i])))
        d = insp.detections
        assert d.masks is not None and len(d.masks)  # the conf keeps one; its mask is not empty
        h, w = image.shape[:2]
        away = _away(d, h, w)
        covered = d.masks.any(axis=0)
        only = away & covered & (d.masks.sum(axis=0) == 1)  # one mask: one colour
        if only.sum() > 50:
            break
    else:
        raise AssertionError("no val image has mask pixels away from outlines and labels")
    out = annotate_inspection(insp)
    assert out is not None and out.shape == image.shape
    k = int(np.argmax(d.masks[:, only].sum(axis=1)))  # the mask covering most of them
    sel = only & d.masks[k]
    want = 0.4 * np.array(class_colour(int(d.class_id[k])), float) + 0.6 * image[sel]
    assert np.abs(out[sel].astype(float) - want).max() <= 1.0
    clear = away & ~covered
    assert np.array_equal(out[clear], image[clear])
    # the verdict is the border's colour, drawn on every side
    colour = VERDICT_BGR[insp.verdict.value]
    for strip in (out[0], out[-1], out[:, 0], out[:, -1]):
        assert (strip == colour).all()
