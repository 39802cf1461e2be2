"""Verdict rules made from what the test model really scores on the test images.

The test models are trained briefly from scratch, so their confidences are low and
move with every Ultralytics release: fixed thresholds (``fail 0.1``) gave a station
with no FAIL at all once. Instead, the top score of every NEU-DET image is measured
once per model with kanjian's own :class:`~kanjian.inference.model.OnnxModel` (the
station's path: the folder camera's decoder, the Numba letterbox, ORT on the CPU,
one thread), cached beside the bundles, and :func:`rules_for` puts the review and
fail thresholds between measured scores so a third of the images pass, a third go
to review and a third fail, whatever the model learnt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: scores are measured at this decoding threshold: anything a station decodes is seen
MEASURE_CONF = 0.001
#: a threshold is never put closer than this to a measured score (ORT's float noise
#: between runs is ~1e-6)
MIN_GAP = 1e-3


def measure(onnx: Path, images: Iterable[Path], out: Path) -> None:
    """Write ``{file name: top detection confidence (0.0 if none)}`` to ``out`` (JSON).

    Runs the model in this process: call it in a subprocess of the tests (it starts
    Numba's thread pool).
    """
    from kanjian.camera.imagefile import decode_image_file
    from kanjian.inference.model import OnnxModel

    model = OnnxModel(onnx, ("cpu",), intra_op_threads=1)
    scores: dict[str, float] = {}
    for path in images:
        dets = model.predict(decode_image_file(path), conf=MEASURE_CONF).detections
        scores[path.name] = float(dets.confidence.max()) if len(dets) else 0.0
    out.write_text(json.dumps(scores, indent=0, sort_keys=True), encoding="utf-8")


def load(path: Path) -> dict[str, float]:
    """The scores :func:`measure` wrote."""
    raw: dict[str, float] = json.loads(path.read_text(encoding="utf-8"))
    return raw


def effective(score: float, decode_conf: float) -> float:
    """What the verdict sees: a top score under the decoding threshold is no detection."""
    return score if score >= decode_conf else 0.0


def _split(values: list[float], target: int, lo: int, hi: int) -> int:
    """The index ``k`` in ``[lo, hi]`` nearest ``target`` with the widest gap below it.

    ``values`` is sorted; the threshold goes between ``values[k - 1]`` and ``values[k]``.
    """
    best = max(range(lo, hi + 1), key=lambda k: (values[k] - values[k - 1], -abs(k - target)))
    if values[best] - values[best - 1] < MIN_GAP:
        raise ValueError(f"no gap of {MIN_GAP} between scores near index {target}: {values}")
    return best


def rules_for(scores: dict[str, float], names: Iterable[str], decode_conf: float) -> dict[str, Any]:
    """Station ``rules`` under which about a third of ``names`` pass, review and fail.

    Args:
        scores: from :func:`measure`, by original NEU-DET file name.
        names: the images the station will judge (original file names).
        decode_conf: the station's ``model.conf``.

    Returns:
        ``{"default": {"fail_confidence": f, "review_confidence": r}}`` with each
        threshold halfway between two measured scores.

    Raises:
        ValueError: fewer than 3 images, or their scores too close to split three ways.
    """
    values = sorted(effective(scores[n], decode_conf) for n in names)
    n = len(values)
    if n < 3:
        raise ValueError(f"need at least 3 images to split three ways, got {n}")
    # each band keeps at least one image; look for a gap within a sixth of the ideal cut
    w = max(1, n // 6)
    k1 = _split(values, n // 3, max(1, n // 3 - w), min(n - 2, n // 3 + w))
    k2 = _split(values, 2 * n // 3, max(k1 + 1, 2 * n // 3 - w), min(n - 1, 2 * n // 3 + w))
    review = (values[k1 - 1] + values[k1]) / 2
    fail = (values[k2 - 1] + values[k2]) / 2
    return {"default": {"fail_confidence": round(fail, 6), "review_confidence": round(review, 6)}}


def expected_verdicts(
    scores: dict[str, float], names: Iterable[str], rules: dict[str, Any], decode_conf: float
) -> dict[str, str]:
    """``{name: PASS | REVIEW | FAIL}`` that ``rules`` (as :func:`rules_for` makes) give."""
    fail = rules["default"]["fail_confidence"]
    review = rules["default"]["review_confidence"]
    out = {}
    for name in names:
        s = effective(scores[name], decode_conf)
        out[name] = "FAIL" if s >= fail else "REVIEW" if s > 0 and s >= review else "PASS"
    return out


def original_name(copied: Path) -> str:
    """The NEU-DET name of an image :func:`tests.support.api.copy_images` copied."""
    return copied.name.split("_", 1)[1]
