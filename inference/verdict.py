"""Verdict rules: from detections (or class probabilities) to PASS / FAIL / REVIEW."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kanjian.inference.types import Detections, Verdict


class ClassRule(BaseModel):
    """How detections of one class count.

    A detection at or above ``fail_confidence`` fails the part; one between
    ``review_confidence`` and ``fail_confidence`` sends it to a person.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_confidence: float = Field(0.5, ge=0, le=1, description="confidence that fails a part")
    review_confidence: float = Field(
        0.25, ge=0, le=1, description="confidence that asks for review (<= fail_confidence)"
    )
    min_area_px: float = Field(
        0.0, ge=0, description="boxes smaller than this (square source pixels) are ignored"
    )
    ignore: bool = Field(False, description="never let this class change the verdict")

    @model_validator(mode="after")
    def _order(self) -> ClassRule:
        if self.review_confidence > self.fail_confidence:
            raise ValueError("review_confidence must be <= fail_confidence")
        return self


class VerdictRules(BaseModel):
    """Rules that turn a model's output into a verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: ClassRule = Field(default_factory=ClassRule, description="rule for unlisted classes")
    classes: dict[str, ClassRule] = Field(
        default_factory=dict, description="per-class rules, by class name"
    )
    roi_xyxy: tuple[float, float, float, float] | None = Field(
        None, description="region of interest in source pixels; boxes centred outside are ignored"
    )
    pass_classes: list[str] = Field(
        default_factory=list,
        description="classify models: class names that mean a good part (e.g. 'ok')",
    )

    def rule_for(self, name: str) -> ClassRule:
        return self.classes.get(name, self.default)


@dataclass(frozen=True)
class VerdictResult:
    """A verdict and the reason a person can read."""

    verdict: Verdict
    reason: str


def _counted(dets: Detections, names: tuple[str, ...], rules: VerdictRules) -> NDArray[np.bool_]:
    """``(n,)`` bool: detections the rules let count (class not ignored, area, ROI)."""
    keep = np.ones(len(dets), bool)
    area = dets.area
    for i, cid in enumerate(dets.class_id):
        rule = rules.rule_for(names[cid] if 0 <= cid < len(names) else str(cid))
        keep[i] = not rule.ignore and area[i] >= rule.min_area_px
    if rules.roi_xyxy is not None and len(dets):
        x1, y1, x2, y2 = rules.roi_xyxy
        cx = (dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2
        cy = (dets.xyxy[:, 1] + dets.xyxy[:, 3]) / 2
        keep &= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    return keep


def judge_detections(
    dets: Detections, names: tuple[str, ...], rules: VerdictRules
) -> VerdictResult:
    """FAIL if a counted detection reaches its class's fail confidence, REVIEW if one
    reaches its review confidence, else PASS. The reason names the strongest one."""
    counted = _counted(dets, names, rules)
    worst: tuple[int, float, int] | None = None  # (level, confidence, index)
    for i in np.flatnonzero(counted):
        cid = int(dets.class_id[i])
        name = names[cid] if 0 <= cid < len(names) else str(cid)
        rule = rules.rule_for(name)
        c = float(dets.confidence[i])
        level = 2 if c >= rule.fail_confidence else 1 if c >= rule.review_confidence else 0
        if level and (worst is None or (level, c) > worst[:2]):
            worst = (level, c, int(i))
    if worst is None:
        return VerdictResult(Verdict.PASS, "no defect above threshold")
    level, c, best = worst
    cid = int(dets.class_id[best])
    name = names[cid] if 0 <= cid < len(names) else str(cid)
    x1, y1, x2, y2 = (int(v) for v in dets.xyxy[best])
    what = f"{name} {c:.2f} at [{x1},{y1},{x2},{y2}]"
    if level == 2:
        n_fail = int(counted.sum())
        return VerdictResult(Verdict.FAIL, what + (f" (+{n_fail - 1} more)" if n_fail > 1 else ""))
    return VerdictResult(Verdict.REVIEW, f"uncertain: {what}")


def judge_probs(
    probs: NDArray[np.float32], names: tuple[str, ...], rules: VerdictRules
) -> VerdictResult:
    """Classify models: the top class decides; a good class passes, a defect class
    fails at its fail confidence and goes to review between the two thresholds."""
    top: int = int(np.argmax(probs))
    name = names[top] if top < len(names) else str(top)
    p = float(probs[top])
    if name in rules.pass_classes:
        return VerdictResult(Verdict.PASS, f"{name} {p:.2f}")
    rule = rules.rule_for(name)
    if rule.ignore:
        return VerdictResult(Verdict.PASS, f"{name} {p:.2f} (ignored class)")
    if p >= rule.fail_confidence:
        return VerdictResult(Verdict.FAIL, f"{name} {p:.2f}")
    if p >= rule.review_confidence:
        return VerdictResult(Verdict.REVIEW, f"uncertain: {name} {p:.2f}")
    return VerdictResult(Verdict.REVIEW, f"no class is confident (top {name} {p:.2f})")
