"""The ``classify`` task: centre-cropped input, class probabilities, the top class judged."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from kanjian.inference.classify_pre import classify_tensor
from kanjian.inference.heads.base import (
    Decoded,
    DecodeThresholds,
    Keep,
    TaskHead,
    register_head,
)
from kanjian.inference.heads.drawing import bgr_copy, fit
from kanjian.inference.types import Detections, Inspection
from kanjian.inference.verdict import VerdictResult, VerdictRules, judge_probs
from kanjian.kernels import Letterbox

if TYPE_CHECKING:
    from kanjian.inference.golden_set import GoldenImage, GoldenSet


def need_probs(probs: NDArray[np.float32] | None, task: str) -> NDArray[np.float32]:
    """The class probabilities a classify-like head's decoder gave."""
    if probs is None:
        raise ValueError(f"{task}: no class probabilities to judge")
    return probs


class ClassifyHead(TaskHead):
    """One ``(1, num_classes)`` probability output; no boxes."""

    task = "classify"
    store_columns: ClassVar[Mapping[str, str]] = MappingProxyType({"probs_json": "TEXT"})

    def preprocess(
        self,
        image: NDArray[np.uint8],
        imgsz: tuple[int, int],
        out: NDArray[np.float32] | None = None,
    ) -> tuple[NDArray[np.float32], Letterbox | None]:
        # Pillow's resize makes its own array: ``out`` would only add a copy
        return classify_tensor(image, imgsz), None

    def decode(
        self,
        outputs: Sequence[NDArray[np.float32]],
        geometry: Letterbox | None,
        thresholds: DecodeThresholds,
        num_classes: int,
        input_hw: tuple[int, int],
    ) -> Decoded:
        return Decoded(Detections.empty(), np.asarray(outputs[0][0], np.float32))

    def judge(
        self,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        names: tuple[str, ...],
        rules: VerdictRules,
    ) -> VerdictResult:
        return judge_probs(need_probs(probs, self.task), names, rules)

    def golden(
        self,
        expected: GoldenImage,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        tolerance: GoldenSet,
    ) -> list[str]:
        p = need_probs(probs, self.task)
        problems = []
        top = int(np.argmax(p))
        if expected.top_class is not None and top != expected.top_class:
            problems.append(f"{expected.file}: top class {top} != expected {expected.top_class}")
        if expected.probs is not None:
            diff = float(np.max(np.abs(p - np.asarray(expected.probs, np.float32))))
            if diff > tolerance.max_conf_diff:
                problems.append(f"{expected.file}: probabilities differ by {diff:.4g}")
        return problems

    def store_fields(self, insp: Inspection) -> dict[str, Any]:
        probs = insp.probs
        return {"probs_json": None if probs is None else json.dumps([float(p) for p in probs])}

    def draw(
        self,
        image: NDArray[np.uint8],
        insp: Inspection,
        keep: Keep | None = None,
        max_side: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> NDArray[np.uint8]:
        # nothing to mark: the class and its probability are in the screen's words
        return fit(bgr_copy(image), max_side)[0]


register_head(ClassifyHead())
