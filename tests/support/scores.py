"""Verdict rules made from what the test model really scores on the test images.

The test models are trained briefly from scratch, so their confidences are low and
move with every Ultralytics release: fixed thresholds (``fail 0.1``) gave a station
with no FAIL at all once. Instead, the top score of every NEU-DET image is measured
once per model with kanjian's own :class:`~kanjian.inference.model.OnnxModel` (the
station's path: the folder camera's decoder, the Numba letterbox, ORT on the CPU,
one thread), cached beside the bundles, and :func:`rules_for` puts the review and
fail thresholds between measured scores so a third of the images pass, a third go
to review and a third fail, whatever the model learnt.

Parity and other tests that need detections to compare take their decoding conf the
same way: :func:`detection_scores` measures every kept score per image and
:func:`conf_with_detections` picks a conf, clear of all of them, at which enough
images keep a detection.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: scores are measured at this decoding threshold: anything a station decodes is seen
MEASURE_CONF = 0.001
#: what the cached scores depend on besides the model: change it when :func:`measure` changes
MEASURED_WITH = f"OnnxModel cpu 1 thread, decode_image_file, conf {MEASURE_CONF}"
#: thresholds sit at least half this from any measured score. The station computes the
#: same scores (same ONNX, same kernels, one ORT thread on the CPU); the margin only
#: absorbs float noise, and the weak model's scores crowd into a few hundredths.
MIN_GAP = 1e-5
#: Ultralytics' and kanjian's default ``max_det``: a list this long may be cut
_MAX_DET = 300


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
    """Where to cut sorted ``values``: the index ``k`` in ``[lo, hi]`` nearest ``target``
    whose gap ``values[k] - values[k - 1]`` reaches :data:`MIN_GAP` (the wider on a tie);
    the threshold goes halfway across that gap."""
    ok = [k for k in range(lo, hi + 1) if values[k] - values[k - 1] >= MIN_GAP]
    if not ok:
        raise ValueError(f"no gap of {MIN_GAP} between scores {lo - 1}..{hi}: {values}")
    return min(ok, key=lambda k: (abs(k - target), values[k - 1] - values[k]))


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
    # each band keeps at least one image
    k1 = _split(values, round(n / 3), 1, n - 2)
    k2 = _split(values, max(k1 + 1, round(2 * n / 3)), k1 + 1, n - 1)
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


#: a conf chosen from measured scores sits at least this far from every one of them: the
#: other side of a parity test (PyTorch, or Ultralytics' own letterbox) differs by ~1e-5
CONF_MARGIN = 2e-5


@functools.cache
def detection_scores(onnx: Path, images: tuple[Path, ...]) -> tuple[NDArray[np.float32], ...]:
    """Per image, the confidences (descending) of every detection kanjian keeps at
    :data:`MEASURE_CONF` (the station's path: file decoder, Numba letterbox, ORT CPU).

    Runs in this process (it starts Numba's thread pool); cached per session. An image
    may hit the model's ``max_det``: its list then lacks the lowest scores.
    """
    from kanjian.camera.imagefile import decode_image_file
    from kanjian.inference.model import OnnxModel

    model = OnnxModel(onnx, ("cpu",), intra_op_threads=1)
    out = []
    for path in images:
        conf = model.predict(decode_image_file(path), conf=MEASURE_CONF).detections.confidence
        out.append(np.sort(conf)[::-1].astype(np.float32))
    return tuple(out)


def conf_with_detections(
    per_image: Sequence[NDArray[np.float32]], min_images: int, margin: float = CONF_MARGIN
) -> float:
    """A decoding conf at which at least ``min_images`` images keep a detection.

    The highest conf at or below the ``min_images``-th best top score that lies in a
    gap of at least ``2 * margin`` between measured scores (so a score that differs by
    up to ``margin`` on the other side of a parity test is on the same side of it),
    and above the lowest kept score of any image whose list ``max_det`` cut
    (so what a side keeps at it does not depend on how it breaks ties at the cut).

    Raises:
        ValueError: fewer than ``min_images`` images have a detection, or no such gap.
    """
    tops = sorted((float(s[0]) for s in per_image if len(s)), reverse=True)
    if len(tops) < min_images or min_images < 1:
        raise ValueError(f"only {len(tops)} images have a detection, need {min_images}")
    ceiling = tops[min_images - 1]
    floor = max((float(s[-1]) for s in per_image if len(s) >= _MAX_DET), default=0.0)
    values = np.unique(np.concatenate([*per_image, np.float32([0.0])]).astype(np.float64))
    below = values[values <= ceiling][::-1]  # descending, starts with the ceiling itself
    for hi, lo in itertools.pairwise(below):
        if hi - lo >= 2 * margin and (hi + lo) / 2 > floor:
            return round(float(hi + lo) / 2, 6)
    raise ValueError(f"no gap of {2 * margin} between scores in ({floor}, {ceiling}]")
