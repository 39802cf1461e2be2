"""The parity gate (``kanjian.training.gates.parity_gate``) against deliberately broken ONNX
files: it must fail on other weights and on wrong segment masks.

The gates run at a conf chosen from what kanjian measures on the val images
(:mod:`tests.support.scores`), so they compare real detections however weak the test
model is.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import scores
from tests.support.onnx_edit import negate_mask_prototypes, perturb_weights

pytestmark = pytest.mark.slow


def _gate_conf(model: Any) -> float:
    """A parity conf at which half of ``model``'s val images keep a detection (measured)."""
    per = scores.detection_scores(model.onnx, tuple(model.val_images))
    return scores.conf_with_detections(per, len(per) // 2)


def test_parity_gate_fails_on_a_different_model(detect_model: Any, tmp_path: Path) -> None:
    from kanjian.training.gates import parity_gate

    onnx = tmp_path / "other.onnx"
    shutil.copyfile(detect_model.onnx, onnx)
    perturb_weights(onnx)
    conf = _gate_conf(detect_model)
    same = parity_gate(
        detect_model.pt, detect_model.onnx, detect_model.val_images,
        imgsz=detect_model.imgsz, conf=conf,
    )  # fmt: skip
    other = parity_gate(
        detect_model.pt, onnx, detect_model.val_images, imgsz=detect_model.imgsz, conf=conf
    )
    assert same.reference > 0 and same.passed, same.line()
    assert not other.passed, other.line()
    assert other.mismatches


def test_parity_gate_compares_segment_masks(segment_model: Any, tmp_path: Path) -> None:
    """With every mask replaced by its complement in its box, no pair whose real masks
    agreed can match: what the gate reports follows from the break, not from how well
    the test model segments.

    If ONNX mask ``K`` agrees with reference mask ``A`` (IoU >= 0.9), then ``A`` and the
    complement ``B`` (disjoint from ``K``) have IoU <= |A - K| / |A| <= 0.1 / 0.9.
    """
    from kanjian.training.gates import parity_gate

    onnx = tmp_path / "masks-negated.onnx"
    shutil.copyfile(segment_model.onnx, onnx)
    negate_mask_prototypes(onnx)
    args = {"imgsz": segment_model.imgsz, "conf": _gate_conf(segment_model)}
    same = parity_gate(segment_model.pt, segment_model.onnx, segment_model.val_images, **args)
    broken = parity_gate(segment_model.pt, onnx, segment_model.val_images, **args)
    assert same.reference > 0 and same.passed, same.line()
    # pairs the real masks already failed (normally none): the only ones that may match now
    slack = max(same.reference, same.onnx) - same.matched
    assert broken.reference == same.reference and broken.onnx <= same.onnx, broken.line()
    assert broken.matched <= slack, (broken.line(), same.line())
    assert not broken.passed, broken.line()
    # boxes, classes and scores are unchanged, so a gate blind to masks would pair every
    # surviving detection that paired before: at least broken.onnx - slack > slack of them
    assert broken.onnx > 2 * slack, (broken.line(), same.line())
