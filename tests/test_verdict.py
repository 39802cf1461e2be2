"""Verdict rules: thresholds per class, area, region of interest, classify."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kanjian.inference.quality_gate import QualityLimits, judge_quality
from kanjian.inference.types import Detections, Verdict
from kanjian.inference.verdict import (
    REASON_CODES,
    ClassRule,
    VerdictResult,
    VerdictRules,
    explain_reason,
    judge_anomaly,
    judge_detections,
    judge_probs,
    reason_text,
)
from kanjian.kernels.quality import FrameQuality

NAMES = ("crazing", "scratches", "ok")
I18N_JS = Path(__file__).resolve().parents[1] / "appliance_api" / "http" / "static" / "i18n.js"
#: reasons the inspector and the camera make (ERROR / MISSED), not the verdict rules
FAILURE_CODES = {"model_error", "frame_error", "frame_missed"}


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


def _every_rule_reason() -> list[VerdictResult]:
    """One result of the verdict rules per reason they can give."""
    rules = VerdictRules(pass_classes=["ok"], classes={"scratches": ClassRule(ignore=True)})
    plain = VerdictRules()

    def probs(*p: float) -> np.ndarray:
        return np.array(p, np.float32)

    return [
        judge_detections(Detections.empty(), NAMES, plain),
        judge_detections(_dets((1, 2, 30, 40, 0.9, 0), (0, 0, 9, 9, 0.6, 1)), NAMES, plain),
        judge_detections(_dets((1, 2, 30, 40, 0.9, 0)), NAMES, plain),
        judge_detections(_dets((1, 2, 30, 40, 0.3, 0)), NAMES, plain),
        judge_probs(probs(0.1, 0.1, 0.8), NAMES, rules),  # pass class
        judge_probs(probs(0.1, 0.8, 0.1), NAMES, rules),  # ignored class
        judge_probs(probs(0.8, 0.1, 0.1), NAMES, rules),
        judge_probs(probs(0.4, 0.3, 0.3), NAMES, rules),
        judge_probs(probs(0.2, 0.2, 0.2), NAMES, rules),  # nothing confident
        # anomaly models: the image score judges, the strongest region is named
        judge_anomaly(0.1, Detections.empty(), ("anomaly",), plain),
        judge_anomaly(0.3, _dets((1, 2, 30, 40, 0.4, 0)), ("anomaly",), plain),
        judge_anomaly(0.3, Detections.empty(), ("anomaly",), plain),  # no region above pixel
        judge_anomaly(0.8, _dets((1, 2, 30, 40, 0.9, 0)), ("anomaly",), plain),
        # the image quality gate (ERROR): dark, bright, clipped, reference, blurred
        *(_gate(**case) for case in _GATE_CASES),
    ]


_GATE_CASES: list[dict[str, float]] = [
    {"mean": 12.34, "min_mean": 30},
    {"mean": 240.46, "max_mean": 225},
    {"dark": 0.1, "bright": 0.025, "max_clipped": 0.05},
    {"diff": 41.25, "max_reference_diff": 25.5},
    {"focus": 12.04, "min_focus": 40},
]


def _gate(
    mean: float = 100.0, dark: float = 0.0, bright: float = 0.0, diff: float = 0.0,
    focus: float = 500.0, **limits: float,
) -> VerdictResult:  # fmt: skip
    q = FrameQuality(focus, mean, dark, bright, diff, 100, 90, 8)
    failed = judge_quality(q, QualityLimits.model_validate(limits))
    assert failed is not None, limits
    code, params = failed
    return VerdictResult(Verdict.ERROR, reason_text(code, {**params}), code, {**params})


def test_every_reason_has_a_code_and_reads_back_from_its_sentence() -> None:
    results = _every_rule_reason()
    # a new code in ReasonCode needs a case here (and translations, below)
    assert {r.code for r in results} | FAILURE_CODES == set(REASON_CODES)
    for r in results:
        assert r.reason == reason_text(r.code, r.params)
        assert explain_reason(r.verdict, r.reason) == (r.code, r.params), r.reason
    fail = results[1]
    assert fail.reason == "crazing 0.90 at [1,2,30,40] (+1 more)"  # the stored text, unchanged
    assert fail.params == {"class": "crazing", "confidence": 0.9, "box": [1, 2, 30, 40], "more": 1}
    assert results[2].reason == "crazing 0.90 at [1,2,30,40]"
    assert results[3].reason == "uncertain: crazing 0.30 at [1,2,30,40]"
    assert [r.reason for r in results[4:]] == [
        "ok 0.80",
        "scratches 0.80 (ignored class)",
        "crazing 0.80",
        "uncertain: crazing 0.40",
        "no class is confident (top crazing 0.20)",
        "anomaly score 0.10",
        "uncertain: anomaly score 0.30 at [1,2,30,40]",
        "uncertain: anomaly score 0.30",
        "anomaly score 0.80 at [1,2,30,40]",
        "too dark: mean 12.3 < 30",
        "too bright: mean 240.5 > 225",
        "clipped: 12.5% > 5%",
        "unlike the reference: difference 41.2 > 25.5",  # 41.25 rounds to even
        "blurred: focus 12 < 40",
    ]
    # a class name with spaces, brackets and digits still reads back
    odd = judge_detections(_dets((0, 0, 5, 5, 0.7, 0)), ("a 0.10 at [1,2,3,4]",), VerdictRules())
    assert explain_reason(odd.verdict, odd.reason) == (odd.code, odd.params)


def test_failure_reasons_and_unknown_sentences() -> None:
    assert explain_reason(Verdict.ERROR, "model error: RuntimeError: boom") == (
        "model_error",
        {"detail": "RuntimeError: boom"},
    )
    assert explain_reason("ERROR", "cam0: cannot read file a.jpg") == (
        "frame_error",
        {"detail": "cam0: cannot read file a.jpg"},
    )
    assert explain_reason("MISSED", "T-1: no fresh frame within 1 s") == (
        "frame_missed",
        {"detail": "T-1: no fresh frame within 1 s"},
    )
    for code in FAILURE_CODES:
        detail = "x: y"
        v = Verdict.MISSED if code == "frame_missed" else Verdict.ERROR
        assert explain_reason(v, reason_text(code, {"detail": detail})) == (
            code,
            {"detail": detail},
        )
    # sentences the rules do not make: no code, the screen shows them as they are
    assert explain_reason(Verdict.FAIL, "bench") == (None, {})
    assert explain_reason(Verdict.REVIEW, "crazing 0.40") == (None, {})
    with pytest.raises(ValueError, match="NOPE"):
        explain_reason("NOPE", "no defect above threshold")


def _reason_keys(lang: str) -> set[str]:
    """Keys of ``KANJIAN_I18N.<lang>.reasons`` in i18n.js, read as text."""
    text = I18N_JS.read_text(encoding="utf-8")
    block = re.search(rf"\n  {lang}: \{{\n(.*?)\n  \}},", text, re.S)
    assert block, f"no '{lang}:' block in {I18N_JS}"
    reasons = re.search(r"\n    reasons: \{\n(.*?)\n    \},", block[1], re.S)
    assert reasons, f"no 'reasons:' table in the {lang} block of {I18N_JS}"
    return set(re.findall(r"^      (\w+):", reasons[1], re.M))


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_reason_code_is_translated(lang: str) -> None:
    keys = _reason_keys(lang)
    assert len(keys) >= 3, keys  # the parser found the table
    missing = set(REASON_CODES) - keys
    assert not missing, f"i18n.js {lang}.reasons lacks {sorted(missing)}"
    assert not keys - set(REASON_CODES), f"i18n.js {lang}.reasons has unknown codes"
