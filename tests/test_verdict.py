"""Verdict rules: thresholds per class, area, region of interest, classify."""

from __future__ import annotations

import numpy as np
import pytest

from kanjian.inference.types import Detections, Verdict
from kanjian.inference.verdict import ClassRule, VerdictRules, judge_detections, judge_probs

NAMES = ("crazing", "scratches", "ok")


def _dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4].copy(), a[:, 4].copy(), a[:, 5].astype(np.int32))


def test_pass_review_fail_by_confidence() -> None:
    rules = VerdictRules()
    assert judge_detections(Detections.empty(), NAMES, rules).verdict is Verdict.PASS
    assert judge_detections(_dets((0, 0, 10, 10, 0.1, 0)), NAMES, rules).verdict is Verdict.PASS
    r = judge_detections(_dets((0, 0, 10, 10, 0.3, 1)), NAMES, rules)
    assert r.verdict is Verdict.REVIEW and "scratches" in r.reason
    r = judge_detections(_dets((0, 0, 10, 10, 0.3, 1), (5, 5, 20, 30, 0.8, 0)), NAMES, rules)
    assert r.verdict is Verdict.FAIL and r.reason.startswith("crazing 0.80 at [5,5,20,30]")


def test_per_class_rule_area_ignore_and_roi() -> None:
    rules = VerdictRules(
        classes={
            "scratches": ClassRule(fail_confidence=0.9, review_confidence=0.6, min_area_px=50),
            "crazing": ClassRule(ignore=True),
        },
        roi_xyxy=(0, 0, 100, 100),
    )
    # ignored class, even when confident
    assert judge_detections(_dets((0, 0, 10, 10, 0.99, 0)), NAMES, rules).verdict is Verdict.PASS
    # too small (area 25 < 50)
    assert judge_detections(_dets((0, 0, 5, 5, 0.95, 1)), NAMES, rules).verdict is Verdict.PASS
    # outside the region of interest
    assert (
        judge_detections(_dets((150, 150, 190, 190, 0.95, 1)), NAMES, rules).verdict is Verdict.PASS
    )
    assert judge_detections(_dets((0, 0, 10, 10, 0.7, 1)), NAMES, rules).verdict is Verdict.REVIEW
    assert judge_detections(_dets((0, 0, 10, 10, 0.95, 1)), NAMES, rules).verdict is Verdict.FAIL


def test_rule_order_is_validated() -> None:
    with pytest.raises(ValueError, match="review_confidence"):
        ClassRule(fail_confidence=0.3, review_confidence=0.5)


def test_classify_verdicts() -> None:
    rules = VerdictRules(pass_classes=["ok"])
    assert judge_probs(np.array([0.1, 0.1, 0.8], np.float32), NAMES, rules).verdict is Verdict.PASS
    assert judge_probs(np.array([0.7, 0.2, 0.1], np.float32), NAMES, rules).verdict is Verdict.FAIL
    assert (
        judge_probs(np.array([0.4, 0.3, 0.3], np.float32), NAMES, rules).verdict is Verdict.REVIEW
    )
