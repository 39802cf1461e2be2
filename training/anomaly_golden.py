"""The golden set of an anomaly bundle: good and defective images with their raw scores.

:func:`kanjian.training.package.write_bundle` calls :func:`write_anomaly_golden` for a
model of task ``anomaly``. Of the candidates (e.g. the calibration split, good and
defective parts), the lowest-scoring half and the highest-scoring half of ``count`` are
kept, preferring images whose score lies clear of the review and image thresholds, so
the set holds clear good parts and clear defects. Each records:

* ``score``: the raw image score the station's own runtime (CPU) gives, compared by
  ``kanjian model check`` and a station's upload within ``score_rtol`` (1e-2) of it plus
  ``score_atol`` (1e-3 of ``image_threshold - floor``, in raw units);
* ``regions``: the number of defect regions at the pixel threshold, only where that
  number stays the same with the threshold moved by twice the score tolerance either
  way (a map that grazes the threshold could split or lose a region on another
  execution provider; recorded there, the check would fail a good bundle).

Why 1e-2: fp32 on another provider (reordered sums, fused kernels) moves a
PatchCore-style score by about 1e-5 relative; TF32, which cuDNN convolutions and
TensorRT use by default on Ampere and newer GPUs (Jetson Orin too), rounds matmul inputs
to 10 mantissa bits, and on the nearest-neighbour distance in the form
``|f|^2 - 2 f.b + |b|^2`` (cancellation) it moved the score by 0.8e-3 to 5.7e-3 relative
(measured by emulation on the demo images). 1e-3 would refuse a good bundle on such a
station; other weights move the score by far more than 1e-2.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from kanjian.inference import bundle as b
from kanjian.inference.anomaly_map import map_to_source, regions, split_outputs
from kanjian.inference.calibration import AnomalyCalibration, normalise
from kanjian.inference.golden_set import GoldenImage, GoldenSet
from kanjian.training.checks import read_bgr

if TYPE_CHECKING:
    from kanjian.inference.model import OnnxModel

#: the absolute score floor, as a share of the calibration's ``image_threshold - floor``
SCORE_ATOL_SHARE = 1e-3

#: what an uncalibrated model's raw outputs mean (already normalised: review 0.25, fail
#: 0.5, pixel 0.5), as a calibration whose normalisation is the identity on ``[0, 1]``
_IDENTITY = AnomalyCalibration(
    floor=0.0, review_threshold=0.25, image_threshold=0.5, pixel_threshold=0.5, top=1.0
)


@dataclass(frozen=True)
class _Scored:
    """One candidate's answer: raw score, region count (None: unstable), clear of the
    review and image thresholds."""

    index: int
    path: Path
    entry: GoldenImage
    clear: bool


def golden_tolerance(
    calibration: AnomalyCalibration | None, thresholds: b.Thresholds | None = None
) -> GoldenSet:
    """An empty golden set with the score tolerances for a model of ``calibration``
    (``score_atol``: :data:`SCORE_ATOL_SHARE` of ``image_threshold - floor``) and the
    bundle's ``conf`` and ``iou`` (which anomaly models do not use)."""
    cal = calibration or _IDENTITY
    th = thresholds or b.Thresholds()
    atol = SCORE_ATOL_SHARE * (cal.image_threshold - cal.floor)
    return GoldenSet(conf=th.conf, iou=th.iou, score_atol=atol)


def _calibration(model: OnnxModel) -> AnomalyCalibration:
    """The bundle's calibration, or the identity one of an uncalibrated model."""
    return (model.manifest.calibration if model.manifest else None) or _IDENTITY


def _stable_regions(model: OnnxModel, image: NDArray[np.uint8], count: int, tol: GoldenSet) -> bool:
    """Whether ``count`` regions are found also with the pixel threshold moved down and up
    by twice the score tolerance (the map's values move no more than the score's)."""
    cal = _calibration(model)
    tensor, geom = model.head.preprocess(image, model.info.imgsz)
    assert geom is not None  # the anomaly head letterboxes
    raw_map = map_to_source(split_outputs(model.run(tensor)).amap, geom)
    norm_map = normalise(raw_map, cal)
    t = cal.pixel_threshold
    band = 2 * tol.score_tolerance(t)
    max_det = model.default_thresholds().max_det
    for moved in (t - band, t, t + band):
        shifted = cal.model_copy(update={"pixel_threshold": moved})
        if len(regions(raw_map, norm_map, geom, shifted, max_det)) != count:
            return False
    return True


def _score(model: OnnxModel, index: int, path: Path, tol: GoldenSet) -> _Scored:
    """Raw score and (stable) region count of one candidate."""
    cal = _calibration(model)
    image = read_bgr(path)
    pred = model.predict(image)
    if pred.raw_score is None:
        raise ValueError(f"{model.path}: task {model.info.task!r} gives no anomaly score")
    raw = pred.raw_score
    n = len(pred.detections)
    clear = all(
        abs(raw - t) > 2 * tol.score_tolerance(t)
        for t in (cal.review_threshold, cal.image_threshold)
    )
    regions_ok = _stable_regions(model, image, n, tol)
    entry = GoldenImage(file=path.name, score=raw, regions=n if regions_ok else None)
    return _Scored(index, path, entry, clear)


def _pick(scored: list[_Scored], count: int) -> list[_Scored]:
    """The ``count // 2`` lowest and the rest highest by raw score, clear ones first,
    then those with a recorded region count."""

    def low(s: _Scored) -> tuple[bool, bool, float, int]:
        return (not s.clear, s.entry.regions is None, s.entry.score or 0.0, s.index)

    def high(s: _Scored) -> tuple[bool, bool, float, int]:
        return (not s.clear, s.entry.regions is None, -(s.entry.score or 0.0), s.index)

    lows = sorted(scored, key=low)[: count // 2]
    taken = {s.index for s in lows}
    rest = [s for s in scored if s.index not in taken]
    highs = sorted(rest, key=high)[: count - len(lows)]
    return sorted(lows + highs, key=lambda s: s.entry.score or 0.0)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """File names inside ``golden/``: the image's own name, or, where two chosen images
    share one (``good/000.png`` and ``defect/crack/000.png``), its folder's name before it
    (and a number, should that still clash)."""
    names = [p.name for p in paths]
    taken: set[str] = set()
    out = []
    for p, name in zip(paths, names, strict=True):
        if names.count(name) > 1:
            name = f"{p.parent.name}_{p.name}"
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{Path(base).stem}_{k}{Path(base).suffix}"
        taken.add(name)
        out.append(name)
    return out


def write_anomaly_golden(
    bundle_dir: Path, candidates: Sequence[Path], *, count: int = 4
) -> GoldenSet:
    """Pick ``count`` golden images from ``candidates``, copy them into ``golden/`` and
    write ``golden/expected.json`` with their raw scores and region counts.

    The bundle (``model.onnx`` and ``manifest.json``, with its ``calibration``) must be
    in place: the images are scored as a station scores them, on the CPU.

    Raises:
        ValueError: no candidates, or the model is not an anomaly model.
        OSError: a candidate cannot be read.
    """
    from kanjian.inference.model import load_model

    if not candidates:
        raise ValueError(f"{bundle_dir}: no candidate images for the golden set")
    model = load_model(bundle_dir, providers=("cpu",))
    tol = golden_tolerance(
        model.manifest.calibration if model.manifest else None, model.default_thresholds()
    )
    scored = [_score(model, i, p, tol) for i, p in enumerate(candidates)]
    chosen = _pick(scored, count)
    gdir = bundle_dir / b.GOLDEN_DIR
    if gdir.exists():
        shutil.rmtree(gdir)
    gdir.mkdir(parents=True)
    images = []
    for s, name in zip(chosen, _unique_names([s.path for s in chosen]), strict=True):
        shutil.copyfile(s.path, gdir / name)
        images.append(s.entry.model_copy(update={"file": name}))
    golden = tol.model_copy(update={"images": images})
    (gdir / b.GOLDEN_EXPECTED).write_text(golden.dump_json() + "\n", encoding="utf-8")
    return golden


def golden_line(golden: GoldenSet, calibration: AnomalyCalibration | None) -> str:
    """One line for the training log: how many golden images pass, go to review and fail
    by their raw scores, the scores' range, and how many region counts are checked."""
    cal = calibration or _IDENTITY
    scores = [g.score for g in golden.images if g.score is not None]
    fail = sum(s >= cal.image_threshold for s in scores)
    review = sum(cal.review_threshold <= s < cal.image_threshold for s in scores)
    counted = sum(g.regions is not None for g in golden.images)
    span = f"{min(scores):.4g} to {max(scores):.4g}" if scores else "none"
    return (
        f"golden set: {len(golden.images)} images, {len(scores) - fail - review} good, "
        f"{review} review, {fail} defective by raw score ({span}), "
        f"{counted} region counts checked"
    )
