"""The weak-model gate of ``kanjian train``: a model that learnt nothing writes no bundle.

A 1-epoch model can score ``mAP50 0.0000``, pass a parity gate that compared
``0/0`` detections and get a golden set with no detection, which then "verifies"
anything. Each of these is a reason to refuse the bundle (exit 1) unless the
engineer says ``--allow-weak`` (a smoke run, a pipeline test); then each is a
warning line instead.

The default ``--min-map50`` is 0.05: an untrained or 1-epoch YOLO scores below
0.01 on NEU-DET, the bundled model 0.6+, and any model worth putting on a
line is far above 0.05, so the default stops only models that learnt
(next to) nothing, never a merely mediocre one an engineer may want to try. For
classify the same number gates top-1 accuracy, where chance is 1/classes:
set ``--min-map50`` above that to make it a real gate.
"""

from __future__ import annotations

from kanjian.inference.golden_set import GoldenSet
from kanjian.training.gates import ParityReport

#: default of ``kanjian train --min-map50`` (see the module docstring for why)
DEFAULT_MIN_MAP50 = 0.05


def metric_key(task: str) -> str:
    """The accuracy metric the gate reads: top-1 for classify, box mAP50 otherwise."""
    return "top1" if task == "classify" else "mAP50"


def weak_before_bundle(
    task: str, metrics: dict[str, float], min_map50: float, parity: ParityReport
) -> list[str]:
    """Why the model is too weak to bundle, judged before the bundle is written.

    Args:
        task: detect, segment or classify.
        metrics: the ONNX model's accuracy on the val split (``accuracy_gate``).
        min_map50: the gate on :func:`metric_key`'s metric.
        parity: the parity gate's report; ``0/0`` compared nothing.
    """
    reasons = []
    key = metric_key(task)
    if metrics.get(key, 0.0) < min_map50:
        reasons.append(
            f"accuracy FAIL: {key} {metrics.get(key, 0.0):.4f} < --min-map50 {min_map50}"
        )
    if task != "classify" and parity.reference == 0 and parity.onnx == 0:
        reasons.append(
            f"parity compared nothing: neither model detected anything on {parity.images} "
            f"val images at conf {parity.conf} (lower --parity-conf, or train longer)"
        )
    return reasons


def weak_golden(task: str, golden: GoldenSet) -> str | None:
    """Why a golden set checks nothing (detect/segment with no detection, anomaly with
    an image without its raw score), or None."""
    if task == "classify":
        return None  # every classify image has its probabilities: never empty
    if task == "anomaly":
        bare = [g.file for g in golden.images if g.score is None]
        if bare or not golden.images:
            return (
                f"golden set FAIL: {len(bare)} of its {len(golden.images)} images have no "
                "raw anomaly score: it would accept other weights (write it with "
                "kanjian.training.package.write_bundle)"
            )
        return None
    if sum(len(g.detections) for g in golden.images) == 0:
        return (
            f"golden set FAIL: no detection on its {len(golden.images)} images at conf "
            f"{golden.conf}: it would accept any model (lower --golden-conf, or train longer)"
        )
    return None
