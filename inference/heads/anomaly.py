"""The ``anomaly`` task: a map of how unusual each pixel is, learnt from good parts only.

Input as detect's (the letterbox kernel's output); outputs a raw image ``score`` and
``anomaly_map`` (:mod:`kanjian.inference.anomaly_map`). The bundle's calibration
(:mod:`kanjian.inference.calibration`) normalises both; the map above the pixel
threshold gives defect regions, kept as detections of the one class ``names[0]`` (a
mask and a box each), so zones, the detections table, sync, exports and the screen
treat them like any other defect. The image score judges the part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.anomaly_map import heat_overlay, map_to_source, regions, split_outputs
from kanjian.inference.calibration import normalise
from kanjian.inference.heads.base import Decoded, DecodeThresholds, Keep, register_head
from kanjian.inference.heads.detect import DetectHead, need_geometry
from kanjian.inference.heads.drawing import bgr_copy, detection_boxes, draw_boxes, fit
from kanjian.inference.types import Detections, Inspection
from kanjian.inference.verdict import VerdictResult, VerdictRules, judge_anomaly
from kanjian.kernels import Letterbox

if TYPE_CHECKING:
    from kanjian.inference.golden_set import GoldenImage, GoldenSet


class AnomalyHead(DetectHead):
    """Image score + map; regions as one-class detections; judged by the image score.

    ``thresholds.conf`` and ``iou`` do not apply (regions come from the calibration's
    pixel threshold); ``max_det`` caps the regions kept. Golden sets compare the raw image
    score and the region count (:meth:`golden_decoded`).
    """

    task = "anomaly"
    store_columns: ClassVar[Mapping[str, str]] = MappingProxyType({"score": "REAL"})

    def decode(
        self,
        outputs: Sequence[NDArray[np.float32]],
        geometry: Letterbox | None,
        thresholds: DecodeThresholds,
        num_classes: int,
        input_hw: tuple[int, int],
    ) -> Decoded:
        geom = need_geometry(geometry, self.task)
        cal = thresholds.calibration
        raw = split_outputs(outputs)
        raw_map = map_to_source(raw.amap, geom)
        norm_map = normalise(raw_map, cal)
        found = regions(raw_map, norm_map, geom, cal, thresholds.max_det)
        score = float(normalise(raw.score, cal))
        return Decoded(found, None, score, norm_map, raw.score)

    def judge(
        self,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        names: tuple[str, ...],
        rules: VerdictRules,
    ) -> VerdictResult:
        # without the image score (a caller that has only detections) the regions judge
        return judge_anomaly(None, detections, names, rules)

    def judge_decoded(
        self, decoded: Decoded, names: tuple[str, ...], rules: VerdictRules
    ) -> VerdictResult:
        return judge_anomaly(decoded.score, decoded.detections, names, rules)

    def golden_decoded(
        self, expected: GoldenImage, decoded: Decoded, tolerance: GoldenSet
    ) -> list[str]:
        """The raw image score within the set's tolerance, the region count exactly (where
        recorded); the regions' boxes as detect compares them only where the image lists
        some. A golden image with neither score nor region count (written before they
        existed) is compared as detect compares boxes."""
        if expected.score is None and expected.regions is None:
            return self.golden(expected, decoded.detections, decoded.probs, tolerance)
        problems: list[str] = []
        if expected.score is not None:
            got = decoded.raw_score
            tol = tolerance.score_tolerance(expected.score)
            if got is None or not abs(got - expected.score) <= tol:  # NaN fails too
                shown = "none" if got is None else f"{got:.6g}"
                problems.append(
                    f"{expected.file}: raw anomaly score expected {expected.score:.6g}, got "
                    f"{shown} (allowed difference {tol:.3g}): other weights, or a model that "
                    "runs differently here"
                )
        n = len(decoded.detections)
        if expected.regions is not None and n != expected.regions:
            problems.append(
                f"{expected.file}: defect regions at the pixel threshold expected "
                f"{expected.regions}, got {n}"
            )
        if expected.detections:
            problems += self.golden(expected, decoded.detections, decoded.probs, tolerance)
        return problems

    def store_fields(self, insp: Inspection) -> dict[str, Any]:
        return {"score": insp.score}

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
        img = bgr_copy(image)
        # the heat map is coloured where the drawn regions are (map >= pixel threshold),
        # at the frame's size before shrinking, so region edges stay exact
        if masks is not None and idx:
            where: NDArray[np.bool_] = np.any(masks[np.asarray(idx, np.intp)], axis=0)
            amap = insp.anomaly_map
            if amap is not None and amap.shape != where.shape:
                amap = None  # not this frame's map: tint without it
            img = heat_overlay(img, amap, where)
        img, scale = fit(img, max_side)
        draw_boxes(img, boxes, scale)
        return img


register_head(AnomalyHead())
