"""The ``segment`` task: detect's boxes plus instance masks, tinted under the boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.decode import decode_segment
from kanjian.inference.heads.base import Decoded, DecodeThresholds, Keep, register_head
from kanjian.inference.heads.detect import DetectHead, need_geometry
from kanjian.inference.heads.drawing import (
    bgr_copy,
    detection_boxes,
    draw_boxes,
    fit,
    tint_masks,
)
from kanjian.inference.types import Inspection
from kanjian.kernels import Letterbox


class SegmentHead(DetectHead):
    """Boxes and ``(n, H, W)`` masks; judged, golden-checked and stored as detect's
    (a detection's ``mask_area`` is in the store's detections table already)."""

    task = "segment"

    def decode(
        self,
        outputs: Sequence[NDArray[np.float32]],
        geometry: Letterbox | None,
        thresholds: DecodeThresholds,
        num_classes: int,
        input_hw: tuple[int, int],
    ) -> Decoded:
        th, geom = thresholds, need_geometry(geometry, self.task)
        dets = decode_segment(
            outputs[0][0], outputs[1][0], num_classes, geom, input_hw, th.conf, th.iou, th.max_det
        )
        return Decoded(dets)

    def draw(
        self,
        image: NDArray[np.uint8],
        insp: Inspection,
        keep: Keep | None = None,
        max_side: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> NDArray[np.uint8]:
        boxes, idx = detection_boxes(insp, keep, names)
        masks = insp.detections.masks
        # masks are tinted at the frame's size, before shrinking, so their edges stay exact
        img = bgr_copy(image)
        if masks is not None:
            img = tint_masks(img, boxes, masks[np.asarray(idx, np.intp)])
        img, scale = fit(img, max_side)
        draw_boxes(img, boxes, scale)
        return img


register_head(SegmentHead())
