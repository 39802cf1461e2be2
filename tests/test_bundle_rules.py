"""A bundle's default verdict rules: the manifest's, unless station.yaml or the API sets some.

Real bundle (the detect test model, written by our own packaging code), real frames.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import pytest

from kanjian.camera.frame import Frame
from kanjian.camera.source import utc_now
from kanjian.inference.bundle import MANIFEST_NAME, SCHEMA_VERSION, BundleError, read_manifest
from kanjian.inference.model import load_model
from kanjian.inference.types import Verdict
from kanjian.inference.verdict import ClassRule, VerdictRules
from kanjian.station.inspector import Inspector, RuleSet
from tests.support import scores


def _with_rules(src: Path, dst: Path, rules: dict[str, Any] | None) -> Path:
    """A copy of bundle ``src`` whose manifest carries ``rules`` (the ONNX file is untouched)."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / MANIFEST_NAME).read_text())
    raw["rules"] = rules
    (dst / MANIFEST_NAME).write_text(json.dumps(raw))
    return dst


def _frame_with_a_detection(model: Any) -> tuple[Frame, float]:
    """The val image the detect test model scores highest, and a conf (measured) at which
    it keeps a detection there."""
    images = tuple(model.val_images)
    per = scores.detection_scores(model.onnx, images)
    best = max(range(len(images)), key=lambda i: float(per[i][0]) if len(per[i]) else 0.0)
    path = images[best]
    frame = Frame(cv2.imread(str(path), cv2.IMREAD_COLOR), best, "t", utc_now(), uri=str(path))
    return frame, scores.conf_with_detections(per, 1)


def test_rules_come_from_the_bundle_until_set_and_follow_a_model_swap(
    detect_bundle: Path, detect_model: Any, tmp_path: Path
) -> None:
    # strict: any detection at all fails the part; lenient: nothing can fail or ask for review
    strict = _with_rules(
        detect_bundle,
        tmp_path / "strict",
        {"default": {"fail_confidence": 0.0, "review_confidence": 0.0}},
    )
    lenient = _with_rules(detect_bundle, tmp_path / "lenient", {"default": {"ignore": True}})
    a, b = load_model(strict, ("cpu",)), load_model(lenient, ("cpu",))
    assert a.default_rules().default.fail_confidence == 0.0 and b.default_rules().default.ignore
    frame, conf = _frame_with_a_detection(detect_model)
    ins = Inspector(a, conf=conf)  # no rules in station.yaml: the bundle's
    assert len(ins.inspect(frame).detections)
    assert ins.inspect(frame).verdict is Verdict.FAIL
    ins.swap_model(b)  # the new model brings its own defaults
    assert ins.rules_in_force() == b.default_rules()
    assert ins.inspect(frame).verdict is Verdict.PASS
    strict_rules = VerdictRules(default=ClassRule(fail_confidence=0.0, review_confidence=0.0))
    ins.set_ruleset(RuleSet(strict_rules))
    assert ins.inspect(frame).verdict is Verdict.FAIL  # set rules win over the bundle's
    ins.set_ruleset(RuleSet())
    assert ins.inspect(frame).verdict is Verdict.PASS


def test_a_bare_onnx_or_a_manifest_without_rules_gets_kanjians_defaults(
    detect_bundle: Path, detect_model: Any
) -> None:
    assert read_manifest(detect_bundle).rules is None
    assert load_model(detect_bundle, ("cpu",)).default_rules() == VerdictRules()
    assert load_model(detect_model.onnx, ("cpu",)).default_rules() == VerdictRules()


def test_manifest_rules_naming_a_class_the_model_lacks_are_refused(
    detect_bundle: Path, tmp_path: Path
) -> None:
    bad = _with_rules(detect_bundle, tmp_path / "bad", {"classes": {"scratchez": {}}})
    with pytest.raises(BundleError, match=r"scratchez.*its classes are: .*scratches"):
        read_manifest(bad)
    broken = _with_rules(
        detect_bundle, tmp_path / "broken", {"default": {"fail_confidence": 0.2,
                                                          "review_confidence": 0.5}}
    )  # fmt: skip
    with pytest.raises(BundleError, match="review_confidence"):
        load_model(broken, ("cpu",))


def test_a_manifest_with_rules_is_format_2_and_a_newer_format_is_refused_by_name(
    detect_bundle: Path, tmp_path: Path
) -> None:
    with_rules = _with_rules(detect_bundle, tmp_path / "r", {"default": {"ignore": True}})
    assert read_manifest(with_rules).schema_version == 2
    assert read_manifest(detect_bundle).schema_version == 1  # no rules: readable by format 1
    future = _with_rules(detect_bundle, tmp_path / "f", None)
    raw = json.loads((future / MANIFEST_NAME).read_text())
    newer = SCHEMA_VERSION + 1
    (future / MANIFEST_NAME).write_text(json.dumps({**raw, "schema_version": newer}))
    with pytest.raises(BundleError, match=f"manifest format {newer} is newer than this kanjian"):
        read_manifest(future)
