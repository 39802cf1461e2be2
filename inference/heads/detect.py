"""The ``detect`` task: letterboxed input, boxes decoded as Ultralytics does, judged per box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.decode import decode_detect
from kanjian.inference.heads.base import (
    Decoded,
    DecodeThresholds,
    Keep,
    TaskHead,
    register_head,
)
from kanjian.inference.heads.drawing import bgr_copy, detection_boxes, draw_boxes, fit
from kanjian.inference.matching import match_detections
from kanjian.inference.preprocess import letterbox_tensor
from kanjian.inference.types import Detections, Inspection
from kanjian.inference.verdict import VerdictResult, VerdictRules, judge_detections
from kanjian.kernels import Letterbox

if TYPE_CHECKING:
    from kanjian.inference.golden_set import GoldenImage, GoldenSet


def need_geometry(geometry: Letterbox | None, task: str) -> Letterbox:
    """The letterbox geometry a box decoder needs (a head's preprocess always gives one)."""
    if geometry is None:
        raise ValueError(f"{task}: decoding boxes needs the letterbox geometry")
    return geometry


def expected_detections(img: GoldenImage) -> Detections:
    """A golden image's recorded detections as :class:`Detections` (source pixels)."""
    if not img.detections:
        return Detections.empty()
    return Detections(
        xyxy=np.array([d.xyxy for d in img.detections], np.float32),
        confidence=np.array([d.confidence for d in img.detections], np.float32),
        class_id=np.array([d.class_id for d in img.detections], np.int32),
    )


class DetectHead(TaskHead):
    """Boxes: ``(1, 4 + nc, anchors)`` head output, class-aware NMS, per-class rules."""

    task = "detect"
    letterbox_input = True

    def preprocess(
        self,
        image: NDArray[np.uint8],
        imgsz: tuple[int, int],
        out: NDArray[np.float32] | None = None,
    ) -> tuple[NDArray[np.float32], Letterbox | None]:
        tensor = np.empty((1, 3, *imgsz), np.float32) if out is None else out
        return tensor, letterbox_tensor(image, imgsz, out=tensor[0])

    def decode(
        self,
        outputs: Sequence[NDArray[np.float32]],
        geometry: Letterbox | None,
        thresholds: DecodeThresholds,
        num_classes: int,
        input_hw: tuple[int, int],
    ) -> Decoded:
        th, geom = thresholds, need_geometry(geometry, self.task)
        return Decoded(decode_detect(outputs[0][0], num_classes, geom, th.conf, th.iou, th.max_det))

    def judge(
        self,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        names: tuple[str, ...],
        rules: VerdictRules,
    ) -> VerdictResult:
        return judge_detections(detections, names, rules)

    def golden(
        self,
        expected: GoldenImage,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        tolerance: GoldenSet,
    ) -> list[str]:
        rep = match_detections(
            expected_detections(expected),
            detections,
            tolerance.min_box_iou,
            tolerance.max_conf_diff,
        )
        if rep.equal:
            return []
        return [
            f"{expected.file}: expected {rep.expected} detections, got {rep.actual}, "
            f"{rep.matched} matched (IoU >= {tolerance.min_box_iou}, "
            f"|dconf| <= {tolerance.max_conf_diff})"
        ]

    def draw(
        self,
        image: NDArray[np.uint8],
        insp: Inspection,
        keep: Keep | None = None,
        max_side: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> NDArray[np.uint8]:
        boxes, _ = detection_boxes(insp, keep, names)
        img, scale = fit(bgr_copy(image), max_side)
        draw_boxes(img, boxes, scale)
        return img


register_head(DetectHead())
